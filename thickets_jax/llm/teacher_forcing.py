"""Teacher-forced passes over (prompt, completion) rows, shared by the methods that train
weights (GRPO, the distillation's SFT): per-token log-probabilities of a completion, and
gradients summed over micro-batches."""

from typing import Any, Callable

import jax
import jax.numpy as jnp

from thickets_jax.llm import model as llm_model
from thickets_jax.llm.config import ModelConfig

PyTree = Any


def token_logprobs(config: ModelConfig, params: PyTree, tokens: jax.Array, mask: jax.Array,
                   prompt_len: int) -> jax.Array:
  """log π(token) of each completion position from one teacher-forced forward.

  tokens, mask: [n, p + T] (left-padded prompt of width `prompt_len` = p, then the completion);
  returns [n, T] float32 (garbage where the completion is masked).
  """
  logits = llm_model.forward(config, params, tokens, mask)[:, prompt_len - 1:-1]  # [n, T, V]
  targets = tokens[:, prompt_len:]
  logp = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]



def summed_gradients(micro_loss: Callable, params: PyTree, batch: dict,
                     stats: dict) -> tuple[PyTree, jax.Array, dict]:
  """Σ over the micro-batches of `batch` ([micro_batches, ...] arrays) of
  `micro_loss(params, micro) -> (loss, stats)` and of its gradient, in one `lax.scan`
  (float32 sums; gradients returned in the params' dtypes). `stats` gives the zeros of the
  summed stats. -> (grads, loss, stats)"""
  def accumulate(carry, micro):
    grads, loss, totals = carry
    (value, part), g = jax.value_and_grad(micro_loss, has_aux=True)(params, micro)
    return (jax.tree.map(jnp.add, grads, g), loss + value,
            jax.tree.map(jnp.add, totals, part)), None

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
  (grads, loss, stats), _ = jax.lax.scan(accumulate, (zeros, jnp.float32(0), stats), batch)
  return jax.tree.map(lambda g, p: g.astype(p.dtype), grads, params), loss, stats
