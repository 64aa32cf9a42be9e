"""Measuring tools the benchmarks share: the machine's peak rates and the peak memory of a
workload in a fresh process (language-model rooflines and random weights: `llm.roofline`).

Every figure a benchmark prints is a ratio measured in one run (docs/benchmarks.md): ours
against a peer, or against the peak this module measures in the same process.
"""

import multiprocessing
import os
import resource
import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import population


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
