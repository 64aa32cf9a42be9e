"""The KV cache of `llm.model`: `(k, v)`, each `[layers, batch, kv_heads, slots, head_dim]`
(heads-major, so attention is plain batched matmuls over `batch × kv_heads`), or per layer
`[batch, kv_heads, slots, head_dim]` for the unrolled layer loop.
"""

import jax
import jax.numpy as jnp

from thickets_jax.llm.config import ModelConfig

KVCache = tuple[jax.Array, jax.Array]


def init_cache(config: ModelConfig, batch: int, slots: int, dtype=None) -> KVCache:
  """An empty cache, (k, v) each [layers, batch, kv, slots, hd], in `dtype` (default: the
  model's)."""
  shape = (config.num_layers, batch, config.num_kv_heads, slots, config.head_dim)
  dtype = config.dtype if dtype is None else dtype
  return jnp.zeros(shape, dtype), jnp.zeros(shape, dtype)


def write_slots(cache: jax.Array, new: jax.Array, index) -> jax.Array:
  """Writes new keys/values [..., t, hd] into `cache` [..., s, hd] from slot `index` (the slot
  axis is the second to last of stacked and per-layer caches alike)."""
  return jax.lax.dynamic_update_slice_in_dim(cache, new.astype(cache.dtype), index,
                                             cache.ndim - 2)


def cache_list(cache: KVCache) -> list[KVCache]:
  """A stacked cache as per-layer (k, v), each [b, kv, s, hd]."""
  return [(cache[0][l], cache[1][l]) for l in range(cache[0].shape[0])]
