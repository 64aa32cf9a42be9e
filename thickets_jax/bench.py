"""Measuring tools the benchmarks share: the machine's peak rates, model rooflines, random
weights of a registered shape, and peak memory of a workload in a fresh process.

Every figure a benchmark prints is a ratio measured in one run (docs/benchmarks.md): ours
against a peer, or against the peak this module measures in the same process.
"""

import dataclasses
import multiprocessing
import os
import resource
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import population
from thickets_jax.llm import model as llm_model
from thickets_jax.tree import path_name


def median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def peak_matmul_flops(repeats: int, n: int = 2048, dtype=jnp.float32) -> float:
  """Measured FLOP/s of n×n @ n×n matmuls of random `dtype` data (median of `repeats`).

  With several host devices the higher of one matmul on one device and one matmul per device
  at once, so the peak is never understated by how the host is split.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  single = 2 * n**3 / median_seconds(jax.jit(jnp.matmul), a, a, repeats=repeats)
  devices = jax.devices()
  if len(devices) == 1:
    return single
  mesh = population.population_mesh(devices)
  stacked = jax.device_put(jnp.broadcast_to(a, (len(devices), n, n)),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
                               population.POPULATION_AXIS)))
  parallel = len(devices) * 2 * n**3 / median_seconds(jax.jit(jnp.matmul), stacked, stacked,
                                                       repeats=repeats)
  return max(single, parallel)


def peak_copy_bandwidth(repeats: int, gib: float = 4.0) -> float:
  """Measured device-memory bytes/s (read + written) of `x + 1` over `gib` GiB of bf16."""
  x = jax.random.normal(jax.random.key(0), (int(gib * 2**30) // 2,), jnp.bfloat16)
  return 2 * x.nbytes / median_seconds(jax.jit(lambda a: a + 1), x, repeats=repeats)


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
      prefill_flops=config.flops_per_token * float(mask.sum()),
      prefill_bytes=weights + rows * bucket * kv_per_token,
      decode_flops=np.full(len(steps), config.flops_per_token * rows, np.float64),
      decode_bytes=weights + rows * kv_per_token * (bucket + steps).astype(np.float64))


def _report_peak_rss(fn: Callable, args: tuple, xla_flags: str, queue) -> None:
  os.environ["XLA_FLAGS"] = xla_flags  # read when the child's backend starts, after this
  fn(*args)
  queue.put(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def peak_rss_in_fresh_process(fn: Callable, *args, xla_flags: str = "") -> int:
  """Peak resident bytes of a new process that runs `fn(*args)` (a module-level function)."""
  context = multiprocessing.get_context("spawn")
  queue = context.Queue()
  child = context.Process(target=_report_peak_rss, args=(fn, args, xla_flags, queue))
  child.start()
  peak = queue.get()
  child.join()
  if child.exitcode:
    raise RuntimeError(f"the measured process exited with status {child.exitcode}")
  return peak
