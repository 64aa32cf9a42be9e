"""B1 (1D RandOpt post-training against the machine's measured matmul peak) and B2 (the 1D
approximation experiment end to end against the paper's PyTorch script's recorded time)."""

import dataclasses
import os
import subprocess
import sys
import tempfile
import time

import jax
import numpy as np
from absl import logging

from thickets_jax import bench, configs, population
from thickets_jax.benchmarks.base import Repeats, check_positive, register
from thickets_jax.signals import families, model as signal_model

# The paper's PyTorch 1D approximation script, end to end, measured on this machine kind
# (docs/benchmarks.md).
REFERENCE_B2_SECONDS = 269.0


@dataclasses.dataclass(frozen=True)
class B1Config(Repeats):
  N: int = configs.setting(1000, "B1: population size.")
  chunk_size: int = configs.setting(4, "B1: members per vmapped call.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "N", "chunk_size")


@register("B1", B1Config, "1D RandOpt post-training vs measured peak")
def b1(config: B1Config) -> str:
  ctx, fut, samples = 10, 60, 1024
  model = signal_model.SignalMLP(128, 5)
  params = signal_model.init_params(model, jax.random.key(0), ctx)
  context, future = families.sample("mixed", jax.random.key(1), samples, ctx, fut)
  context, future, weights = signal_model.unique_samples(np.asarray(context), np.asarray(future))
  assert len(weights) == samples, "B1 measures 1024 distinct samples"

  def score(p):
    return signal_model.weighted_mse(signal_model.rollout(model, p, context, fut), future, weights)

  fn = population.population_fn(score)
  seeds, sigmas = population.draw_candidates(0, config.N, [1e-3])
  mesh, chunk_size = population.chunk_mesh(config.chunk_size)
  peak_before = bench.peak_matmul_flops(config.repeats)
  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:chunk_size], sigmas[:chunk_size],
                                  chunk_size=chunk_size, mesh=mesh))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  scores = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=chunk_size,
                                          mesh=mesh)
  seconds = time.perf_counter() - start
  peak = float(np.median([peak_before, bench.peak_matmul_flops(config.repeats)]))
  assert np.all(np.isfinite(scores))
  flops = 2 * signal_model.count_params(params) * samples * fut * config.N
  rate = flops / seconds
  logging.info("B1: %d members x %d samples x %d steps, %.2f TFLOP, compile %.1f s, "
               "%d device(s), chunk %d", config.N, samples, fut, flops / 1e12, compile_s,
               jax.device_count(), chunk_size)
  return (f"B1: {seconds:.1f} s, {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


@dataclasses.dataclass(frozen=True)
class B2Config(configs.Config):
  """B2 has no settings: it is the README's approximation command, timed."""


@register("B2", B2Config, "1D approximation experiment end to end")
def b2(config: B2Config) -> str:
  """`python -m experiments.signals1d --regime approximation --seeds 0` in a child process (run
  from the repository root), timed from its start to its exit."""
  del config
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.signals1d", "--regime", "approximation",
                    "--seeds", "0", "--workdir", tmp], cwd=root, check=True, capture_output=True)
    seconds = time.perf_counter() - start
  return (f"B2: {seconds:.1f} s end to end, 3 regimes incl. pretraining and plots "
          f"(target <= 60 s; reference PyTorch {REFERENCE_B2_SECONDS:.0f} s "
          f"= {REFERENCE_B2_SECONDS / seconds:.1f}x)")
