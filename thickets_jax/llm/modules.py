"""The Flax building blocks of `llm.model`: a dense layer, the embedding (with the tied head) and
RMSNorm, each adding its row's member term under a `members` collection of factored low-rank
members (`llm.factored`), and the dtype rules they share.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from thickets_jax.llm.config import ModelConfig
from thickets_jax.llm.factored import MEMBERS, low_rank_term, rows_of, with_member_vector


def matmul_precision(config: ModelConfig) -> Optional[jax.lax.Precision]:
  """float32 models multiply in full float32 on every backend (GPUs default to TF32 and TPUs
  to bfloat16 passes, which breaks parity with the reference); others use the backend's
  native precision."""
  return jax.lax.Precision.HIGHEST if config.dtype == jnp.float32 else None


def param_dtype(shape: tuple[int, ...], stacked: bool, dtype) -> jnp.dtype:
  """The stored dtype of a parameter leaf: float32 for vectors (norm scales, biases; one value
  per feature, per layer when `stacked`), else the model's `dtype`."""
  return jnp.dtype(jnp.float32) if len(shape) - stacked == 1 else jnp.dtype(dtype)


def _promote_keeping_bias(inputs, kernel, bias, *, dtype):
  """`nn.Dense`'s `promote_dtype`: inputs and kernel in the compute dtype, the bias in float32,
  so its noise survives a bfloat16 model (the output is rounded once, after the bias)."""
  return (jnp.asarray(inputs, dtype), jnp.asarray(kernel, dtype),
          None if bias is None else jnp.asarray(bias, jnp.float32))


def norm(config: ModelConfig, name: str) -> "RMSNorm":
  """The model's RMSNorm named `name` (its eps, dtype and Gemma offset)."""
  return RMSNorm(config.rms_norm_eps, config.dtype, config.norm_offset, name=name)


class Dense(nn.Dense):
  """`nn.Dense` with a float32 bias (`_promote_keeping_bias`), plus each row's member term under
  the `members` collection; the output is in `dtype`."""
  promote_dtype: Any = _promote_keeping_bias

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = super().__call__(x)  # float32 when a bias was added, else `dtype`
    if self.has_variable(MEMBERS, "kernel"):
      term = low_rank_term(x, self.get_variable(MEMBERS, "kernel"), rows_of(self))
      y = y.astype(jnp.float32) + term
    if self.has_variable(MEMBERS, "bias"):
      y = with_member_vector(y, self.get_variable(MEMBERS, "bias").astype(y.dtype),
                             rows_of(self))
    return y.astype(self.dtype)


class Embed(nn.Embed):
  """`nn.Embed` (lookup, and the tied head through `logits`), plus each row's member term."""

  def __call__(self, tokens: jax.Array) -> jax.Array:  # [M * b, t] -> [M * b, t, d]
    x = super().__call__(tokens)
    if not self.has_variable(MEMBERS, "embedding"):
      return x
    factors = self.get_variable(MEMBERS, "embedding")  # a [M, vocab, r], b [M, d, r]
    members, highest = rows_of(self), jax.lax.Precision.HIGHEST
    if members is None:
      rows = jax.vmap(lambda a, t: a[t])(factors["a"], tokens.reshape(factors["a"].shape[0], -1))
      term = jnp.einsum("gtr,gdr->gtd", rows, factors["b"], precision=highest)
    else:  # each row's own member: [b, t, r] and [b, d, r] gathered (d·r per row)
      term = jnp.einsum("btr,bdr->btd", factors["a"][members[:, None], tokens],
                        factors["b"][members], precision=highest)
    return (x.astype(jnp.float32) + term.reshape(x.shape)).astype(x.dtype)

  def logits(self, x: jax.Array, precision) -> jax.Array:
    """Tied head: x [M * b, t, d] -> [M * b, t, vocab] (`nn.Embed.attend` takes no precision)."""
    out = jnp.dot(x, self.embedding.T.astype(x.dtype), precision=precision)
    if not self.has_variable(MEMBERS, "embedding"):
      return out
    factors = self.get_variable(MEMBERS, "embedding")
    swapped = {"a": factors["b"], "b": factors["a"]}  # (E + a bᵀ)ᵀ = Eᵀ + b aᵀ
    term = low_rank_term(x, swapped, rows_of(self))
    return (out.astype(jnp.float32) + term).astype(out.dtype)


class RMSNorm(nn.Module):
  """RMSNorm over the last axis, times (offset + scale): Gemma stores w for x·(1 + w)."""
  eps: float
  dtype: jnp.dtype
  offset: float = 0.0

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [..., d]
    """The norm in float32 times the float32 scale (the member's, under `members`), rounded to
    `dtype` once, at the end."""
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    scale = self.param("scale", init, (x.shape[-1],), jnp.float32)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    scale = jnp.asarray(scale, jnp.float32)
    if self.offset:
      scale = scale + self.offset
    if not self.has_variable(MEMBERS, "scale"):
      return (scale * normed).astype(self.dtype)
    delta = self.get_variable(MEMBERS, "scale")  # [M, d]
    return with_member_vector(normed, scale + delta.astype(jnp.float32), rows_of(self),
                              jnp.multiply).astype(self.dtype)
