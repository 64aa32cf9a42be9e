r"""Benchmarks of BENCHMARKS.md, each printing `<id>: <figure> (<comparison>)` last.

  python -m experiments.benchmark --bench B1   # 1D RandOpt post-training vs measured peak
  python -m experiments.benchmark --bench B2   # 1D approximation experiment end to end

Figures are ratios measured in one process (B1: against the machine's fp32 matmul peak,
measured before and after the workload) or against a recorded peer time (B2).
"""

import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from experiments import common
from thickets_jax import cli, population
from thickets_jax.errors import InputError
from thickets_jax.signals import families, model as signal_model

BENCHES = ("B1", "B2")
flags.DEFINE_string("bench", "B1", f"One of {', '.join(BENCHES)}.")
flags.DEFINE_integer("N", 1000, "B1: population size.")
flags.DEFINE_integer("chunk_size", 4, "B1: members per vmapped call.")
flags.DEFINE_integer("repeats", 5, "B1: repeats of the peak matmul measurement (median).")
FLAGS = flags.FLAGS

# BENCHMARKS.md: the paper's PyTorch 1D approximation script, end to end, on this machine kind.
REFERENCE_B2_SECONDS = 269.0


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def peak_matmul_flops(repeats: int, n: int = 2048) -> float:
  """Measured fp32 FLOP/s of n×n @ n×n matmuls (median of `repeats`).

  With several host devices the higher of one matmul on one device and one matmul per device
  at once, so the peak is never understated by how the host is split.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  single = 2 * n**3 / _median_seconds(jax.jit(jnp.matmul), a, a, repeats=repeats)
  devices = jax.devices()
  if len(devices) == 1:
    return single
  mesh = population.population_mesh(devices)
  stacked = jax.device_put(jnp.broadcast_to(a, (len(devices), n, n)),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
                               population.POPULATION_AXIS)))
  parallel = len(devices) * 2 * n**3 / _median_seconds(jax.jit(jnp.matmul), stacked, stacked,
                                                       repeats=repeats)
  return max(single, parallel)


def bench_b1() -> str:
  ctx, fut, samples = 10, 60, 1024
  model = signal_model.SignalMLP(128, 5)
  params = signal_model.init_params(model, jax.random.key(0), ctx)
  context, future = families.sample("mixed", jax.random.key(1), samples, ctx, fut)
  context, future, weights = signal_model.unique_samples(np.asarray(context), np.asarray(future))
  assert len(weights) == samples, "B1 measures 1024 distinct samples"

  def score(p):
    return signal_model.weighted_mse(signal_model.rollout(model, p, context, fut), future, weights)

  fn = population.population_fn(score)
  seeds, sigmas = population.draw_candidates(0, FLAGS.N, [1e-3])
  mesh, chunk_size = common.population_mesh(FLAGS.chunk_size)
  peak_before = peak_matmul_flops(FLAGS.repeats)
  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:chunk_size], sigmas[:chunk_size],
                                  chunk_size=chunk_size, mesh=mesh))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  scores = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=chunk_size,
                                          mesh=mesh)
  seconds = time.perf_counter() - start
  peak = float(np.median([peak_before, peak_matmul_flops(FLAGS.repeats)]))
  assert np.all(np.isfinite(scores))
  flops = 2 * signal_model.count_params(params) * samples * fut * FLAGS.N
  rate = flops / seconds
  logging.info("B1: %d members x %d samples x %d steps, %.2f TFLOP, compile %.1f s, "
               "%d device(s), chunk %d", FLAGS.N, samples, fut, flops / 1e12, compile_s,
               jax.device_count(), chunk_size)
  return (f"B1: {seconds:.1f} s, {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


def bench_b2() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.signals1d", "--regime", "approximation",
                    "--workdir", tmp], cwd=root, check=True, capture_output=True)
    seconds = time.perf_counter() - start
  return (f"B2: {seconds:.1f} s end to end, 3 regimes incl. pretraining and plots "
          f"(target <= 60 s; reference PyTorch {REFERENCE_B2_SECONDS:.0f} s "
          f"= {REFERENCE_B2_SECONDS / seconds:.1f}x)")


def main(argv):
  del argv
  common.setup_devices()
  benches = {"B1": bench_b1, "B2": bench_b2}
  if FLAGS.bench not in benches:
    raise InputError(f"unknown --bench {FLAGS.bench!r}; known: {', '.join(benches)}.")
  print(benches[FLAGS.bench](), flush=True)


if __name__ == "__main__":
  cli.run(main)
