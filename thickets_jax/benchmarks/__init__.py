r"""The benchmarks of docs/benchmarks.md, one small module per kind, each a config and a run
function registered under its id; `python -m experiments.benchmark --bench <id>` is a thin loop
over this registry.

  from thickets_jax import benchmarks
  print(benchmarks.run("B1", N=64))          # a benchmark from Python, its settings as keywords
  sorted(benchmarks.BENCHMARKS)              # B1 … B11, ES, P1
"""

# Importing the modules registers their benchmarks.
from thickets_jax.benchmarks import (accelerator, decoding, ensembles, generation, memory, plans,
                                     scales, selection, signals1d)
from thickets_jax.benchmarks.base import BENCHMARKS, Benchmark, run

__all__ = ["BENCHMARKS", "Benchmark", "run", "accelerator", "decoding", "ensembles", "generation",
           "memory", "plans", "scales", "selection", "signals1d"]
