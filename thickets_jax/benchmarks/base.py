"""The benchmark registry and the settings several benchmarks share (declared once, here).

A benchmark is a config (its settings; the flags of `experiments.benchmark`) and a run function
`config -> str` whose last line is `<id>: <figure> (<comparison>)`. Settings two benchmarks
share live in a mixin below, so each is declared once and has one flag; a benchmark's config
inherits the mixins it uses and nothing else, so a flag it does not read is refused. Every
`validate` calls `super().validate()`, so a config checks all its mixins' settings.
"""

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from thickets_jax import cli, configs, population
from thickets_jax.errors import InputError
from thickets_jax.llm import generate
from thickets_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Benchmark:
  """`name` (`--bench`), its `config` class, its `run(config) -> str` and a one-line summary."""
  name: str
  config: type
  run: Callable[[Any], str]
  summary: str


BENCHMARKS: Registry[Benchmark] = Registry("--bench")


def register(name: str, config: type, summary: str) -> Callable:
  """Registers the decorated `run(config) -> str` as benchmark `name`."""
  def add(run: Callable[[Any], str]) -> Callable[[Any], str]:
    BENCHMARKS.register(name)(Benchmark(name, config, run, summary))
    return run
  return add


def run(name: str, **settings) -> str:
  """Benchmark `name` with its default settings but `settings`: its figure line(s)."""
  benchmark = BENCHMARKS.get(name)
  return benchmark.run(benchmark.config(**settings))


def identical_rows(a, b) -> int:
  """How many rows of two token-id arrays [..., n] (broadcast) are equal token for token."""
  return int(np.sum(np.all(np.asarray(a) == np.asarray(b), axis=-1)))


def seeds(text: str, flag: str) -> tuple[int, ...]:
  """The seeds a benchmark reports over (`cli.int_ranges`): at least two, since its figures
  are means ± SE over seeds."""
  values = cli.int_ranges(text, flag)
  if len(values) < 2:
    raise InputError(f"--{flag} needs at least two seeds (figures are means ± SE over seeds), "
                     f"got {text!r}.")
  return values


def check_positive(config: configs.Config, *fields: str) -> None:
  """One sentence for the first of `fields` (ints or tuples of ints) that is not positive."""
  for field in fields:
    value = getattr(config, field)
    for v in value if isinstance(value, tuple) else (value,):
      if v <= 0:
        raise InputError(f"{configs.flag_name(config, field)} must be positive, got {v}.")


@dataclasses.dataclass(frozen=True)
class Repeats(configs.Config):
  repeats: int = configs.setting(
      5, "B1, B3, B5, B8: repeats of each peak or timing measurement (median).")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "repeats")


@dataclasses.dataclass(frozen=True)
class Prompts(configs.Config):
  prompts: int = configs.setting(16, "B3, B6, B8: distinct prompts (one batch).")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "prompts")


@dataclasses.dataclass(frozen=True)
class NewTokens(configs.Config):
  new_tokens: int = configs.setting(64, "B3, B6: exactly this many new tokens per prompt.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "new_tokens")


@dataclasses.dataclass(frozen=True)
class MemberBatching(configs.Config):
  members_per_batch: int = configs.setting(2, "B3, B4, B6: members per compiled call.")
  member_axis: str = configs.setting("map", "B3, B4, B6: how members share a call.",
                                     choices=population.MEMBER_AXES)

  def validate(self) -> None:
    super().validate()
    check_positive(self, "members_per_batch")


@dataclasses.dataclass(frozen=True)
class LayerLoop(configs.Config):
  layer_loop: Optional[str] = configs.setting(
      None, "B3, B5, B6, B8: how the layers run (default: unrolled on GPUs, else scan).",
      choices=generate.LAYER_LOOPS)


@dataclasses.dataclass(frozen=True)
class KVCache(configs.Config):
  kv_cache_dtype: Optional[str] = configs.setting(
      None, "B3, B6, B9: the KV cache's dtype (default: the model's).",
      choices=tuple(generate.CACHE_DTYPES))


@dataclasses.dataclass(frozen=True)
class Sizes(configs.Config):
  b4_sizes: tuple[int, ...] = configs.setting(
      (4, 32), "B4, ES: population sizes N, one child process each.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "b4_sizes")


@dataclasses.dataclass(frozen=True)
class Figure(configs.Config):
  figure: Optional[str] = configs.setting(
      None, "B10, B11: write the benchmark's figure here (PNG).")
