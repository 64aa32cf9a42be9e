"""One decoder-only transformer for Qwen2/Qwen2.5 and Llama (SmolLM2) in Flax linen.

GQA attention with RoPE (rotate-half convention, as Hugging Face), RMSNorm, SwiGLU MLP,
optional q/k/v biases, tied or untied embeddings. The layers are one `nn.scan`, so their
parameters are stacked `[layers, ...]` under `layers/` and compile time does not grow with depth.

The KV cache is passed in and returned (no mutable collections): `(k, v)`, each
`[layers, batch, kv_heads, slots, head_dim]` (heads-major, so attention is plain batched
matmuls over `batch × kv_heads`). Inside the layer scan the cache is read-only: a call's `T`
new tokens attend to the valid cached slots (`cache_mask`) and causally to each other, the scan
returns only their keys/values, and one update writes them at slot `write_index` afterwards.
(Carrying or re-emitting the whole cache through the scan makes XLA rewrite all of it for
every layer of every decode step.)
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from thickets_jax.llm.config import ModelConfig

KVCache = tuple[jax.Array, jax.Array]
_MASKED = -1e30


class RMSNorm(nn.Module):
  eps: float
  dtype: jnp.dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:  # [..., d]
    scale = self.param("scale", nn.initializers.ones, (x.shape[-1],), self.dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return scale * normed.astype(self.dtype)


def rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary embedding, rotate-half convention. x [b, t, heads, hd], positions [b, t]."""
  half = x.shape[-1] // 2
  inv_freq = 1.0 / theta ** (jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half))
  freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, hd/2]
  angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [b, t, 1, hd]
  cos, sin = jnp.cos(angles).astype(x.dtype), jnp.sin(angles).astype(x.dtype)
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin


class Attention(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x, positions, layer_k, layer_v, cache_mask, token_mask):
    """Self-attention over cached slots and the new tokens.

    Args:
      x: [b, t, d] new tokens. positions: [b, t].
      layer_k, layer_v: [b, kv, s, hd] this layer's cache (read only).
      cache_mask: [b, s] valid cached slots. token_mask: [b, t] real new tokens.

    Returns:
      out [b, t, d], and the new keys and values, each [b, kv, t, hd].
    """
    c = self.config
    b, t, _ = x.shape
    group = c.num_heads // c.num_kv_heads
    dense = lambda n, bias, name: nn.Dense(n, use_bias=bias, dtype=c.dtype, param_dtype=c.dtype,
                                           name=name)
    heads_major = lambda a: a.transpose(0, 2, 1, 3)  # [b, t, h, hd] -> [b, h, t, hd]
    q = dense(c.num_heads * c.head_dim, c.qkv_bias, "q")(x).reshape(b, t, c.num_heads, c.head_dim)
    k = dense(c.num_kv_heads * c.head_dim, c.qkv_bias, "k")(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    v = dense(c.num_kv_heads * c.head_dim, c.qkv_bias, "v")(x).reshape(b, t, c.num_kv_heads, c.head_dim)
    q, k = rope(q, positions, c.rope_theta), heads_major(rope(k, positions, c.rope_theta))
    v = heads_major(v)
    # Query heads of one kv group side by side: [b, kv, group * t, hd].
    q = q.reshape(b, t, c.num_kv_heads, group, c.head_dim).transpose(0, 2, 3, 1, 4)
    q = q.reshape(b, c.num_kv_heads, group * t, c.head_dim) / jnp.sqrt(c.head_dim).astype(c.dtype)
    keys = jnp.concatenate([layer_k.astype(c.dtype), k], axis=2)  # [b, kv, s + t, hd]
    values = jnp.concatenate([layer_v.astype(c.dtype), v], axis=2)
    causal = jnp.tril(jnp.ones((t, t), bool))[None] & token_mask[:, None, :]  # [b, t, t]
    mask = jnp.concatenate([jnp.broadcast_to(cache_mask[:, None, :], (b, t, cache_mask.shape[1])),
                            causal], axis=2)  # [b, t, s + t]
    mask = jnp.tile(mask, (1, group, 1))[:, None]  # [b, 1, group * t, s + t]
    scores = jnp.einsum("bkqd,bksd->bkqs", q, keys, preferred_element_type=jnp.float32)
    probs = jax.nn.softmax(jnp.where(mask, scores, _MASKED), axis=-1).astype(c.dtype)
    out = jnp.einsum("bkqs,bksd->bkqd", probs, values)  # [b, kv, group * t, hd]
    out = out.reshape(b, c.num_kv_heads, group, t, c.head_dim).transpose(0, 3, 1, 2, 4)
    out = dense(c.hidden_size, False, "o")(out.reshape(b, t, c.num_heads * c.head_dim))
    return out, k, v


class MLP(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, x):  # [b, t, d] -> [b, t, d]
    c = self.config
    dense = lambda n, name: nn.Dense(n, use_bias=False, dtype=c.dtype, param_dtype=c.dtype, name=name)
    hidden = nn.silu(dense(c.intermediate_size, "gate")(x)) * dense(c.intermediate_size, "up")(x)
    return dense(c.hidden_size, "down")(hidden)


class Block(nn.Module):
  """Pre-norm residual block; the scan body: (x, this layer's cache) -> (x, new keys/values)."""
  config: ModelConfig

  @nn.compact
  def __call__(self, x, layer_cache, positions, cache_mask, token_mask):
    c = self.config
    h, k, v = Attention(c, name="attn")(
        RMSNorm(c.rms_norm_eps, c.dtype, name="attn_norm")(x), positions, *layer_cache,
        cache_mask, token_mask)
    x = x + h
    x = x + MLP(c, name="mlp")(RMSNorm(c.rms_norm_eps, c.dtype, name="mlp_norm")(x))
    return x, (k, v)


class Transformer(nn.Module):
  config: ModelConfig

  @nn.compact
  def __call__(self, tokens: jax.Array, positions: jax.Array, cache: KVCache,
               write_index: jax.Array, cache_mask: jax.Array, token_mask: jax.Array,
               last_only: bool = False) -> tuple[jax.Array, KVCache]:
    """Logits for `tokens` and the cache with their keys/values written at `write_index`.

    Args:
      tokens, positions: [b, t] int32 (RoPE positions, padding excluded from the count).
      cache: (k, v), each [layers, b, kv, s, hd].
      write_index: slot of this call's first token.
      cache_mask: [b, s] cached slots the new tokens may attend to (all earlier than them).
      token_mask: [b, t] real tokens among the new ones (left padding is False).
      last_only: project only the last position to the vocabulary (prefill).

    Returns:
      logits [b, t or 1, vocab] float32, the new cache.
    """
    c = self.config
    embed = nn.Embed(c.vocab_size, c.hidden_size, dtype=c.dtype, param_dtype=c.dtype, name="embed")
    x = embed(tokens)  # [b, t, d]
    layers = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True},
                     in_axes=(0, nn.broadcast, nn.broadcast, nn.broadcast), length=c.num_layers)
    x, (new_k, new_v) = layers(c, name="layers")(x, cache, positions, cache_mask, token_mask)
    write = lambda full, new: jax.lax.dynamic_update_slice_in_dim(full, new.astype(full.dtype),
                                                                  write_index, 3)
    cache = (write(cache[0], new_k), write(cache[1], new_v))
    x = RMSNorm(c.rms_norm_eps, c.dtype, name="final_norm")(x)
    if last_only:
      x = x[:, -1:]
    if c.tie_embeddings:
      logits = embed.attend(x)
    else:
      logits = nn.Dense(c.vocab_size, use_bias=False, dtype=c.dtype, param_dtype=c.dtype,
                        name="lm_head")(x)
    return logits.astype(jnp.float32), cache


def init_cache(config: ModelConfig, batch: int, slots: int) -> KVCache:
  shape = (config.num_layers, batch, config.num_kv_heads, slots, config.head_dim)
  return jnp.zeros(shape, config.dtype), jnp.zeros(shape, config.dtype)


def abstract_params(config: ModelConfig):
  """The parameter tree as `jax.ShapeDtypeStruct`s, without allocating it."""
  model = Transformer(config)
  tokens = jnp.zeros((1, 1), jnp.int32)
  cache = jax.eval_shape(lambda: init_cache(config, 1, 1))
  return jax.eval_shape(lambda: model.init(jax.random.key(0), tokens, tokens, cache, 0,
                                           jnp.zeros((1, 1), bool), jnp.ones((1, 1), bool))["params"])


def forward(config: ModelConfig, params, tokens: jax.Array, mask: Optional[jax.Array] = None) -> jax.Array:
  """Full-sequence logits without a persistent cache (tests, scoring). tokens [b, t] -> [b, t, vocab].

  `mask` [b, t] marks real tokens (left padding allowed); RoPE positions count real tokens only.
  """
  b, t = tokens.shape
  mask = jnp.ones((b, t), bool) if mask is None else mask
  positions = jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
  logits, _ = Transformer(config).apply({"params": params}, tokens, positions,
                                        init_cache(config, b, t), 0, jnp.zeros((b, t), bool), mask)
  return logits
