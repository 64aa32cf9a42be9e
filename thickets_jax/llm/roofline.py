"""A language model's roofline (the fewest FLOPs and device-memory bytes of one member's
scoring, by phase) and random weights of a registered shape, for the benchmarks."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import flops
from thickets_jax.llm import model as llm_model
from thickets_jax.tree import path_name


def random_params(config, key: jax.Array):
  """Random weights of `config`'s shapes and dtype (std 0.02; norm scales 1), made on device."""
  abstract = llm_model.abstract_params(config)
  paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)

  def make(key):
    leaves = [jnp.ones(leaf.shape, leaf.dtype) if path_name(path).endswith("scale") else
              0.02 * jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
              for i, (path, leaf) in enumerate(paths)]
    return jax.tree_util.tree_unflatten(treedef, leaves)

  return jax.jit(make)(key)


@dataclasses.dataclass(frozen=True)
class Roofline:
  """Model FLOPs and the fewest device-memory bytes of one member's scoring, by phase."""
  perturb_bytes: float  # read θ, write θ + σε
  prefill_flops: float
  prefill_bytes: float  # weights once, keys/values written
  decode_flops: np.ndarray  # [steps]
  decode_bytes: np.ndarray  # [steps]: weights (the embedding is only gathered) + valid cache

  def seconds(self, flops_rate: float, bandwidth: float) -> dict[str, float]:
    """The floor of each phase: the larger of its FLOP time and its byte time."""
    return {"perturb": self.perturb_bytes / bandwidth,
            "prefill": max(self.prefill_flops / flops_rate, self.prefill_bytes / bandwidth),
            "decode": float(np.sum(np.maximum(self.decode_flops / flops_rate,
                                              self.decode_bytes / bandwidth)))}

  @property
  def flops(self) -> float:
    return self.prefill_flops + float(self.decode_flops.sum())

  @property
  def bytes(self) -> float:
    return self.perturb_bytes + self.prefill_bytes + float(self.decode_bytes.sum())


def roofline(config, params, mask: np.ndarray, new_tokens: int) -> Roofline:
  """Counts for one member generating `new_tokens` after prompts `mask` [rows, bucket]."""
  rows, bucket = mask.shape
  itemsize = jnp.dtype(config.dtype).itemsize
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  embed = config.vocab_size * config.hidden_size * itemsize
  weights = total if config.tie_embeddings else total - embed
  kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
  steps = np.arange(1, new_tokens)  # the first new token comes out of prefill
  return Roofline(
      perturb_bytes=2 * total,
      prefill_flops=flops.token_flops(config.num_params) * float(mask.sum()),
      prefill_bytes=weights + rows * bucket * kv_per_token,
      decode_flops=np.full(len(steps), flops.token_flops(config.num_params) * rows, np.float64),
      decode_bytes=weights + rows * kv_per_token * (bucket + steps).astype(np.float64))
