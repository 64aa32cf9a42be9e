"""Peak memory against the population size, one fresh child process per N: B4 (SmolLM2
population scoring) and ES (one ES update of SmolLM2's shapes)."""

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from thickets_jax import bench, population
from thickets_jax.baselines import es
from thickets_jax.benchmarks.base import MemberBatching, Sizes, register
from thickets_jax.benchmarks.generation import SMOLLM2
from thickets_jax.llm import generate, model as llm_model, registry, roofline
from thickets_jax.llm.generator import Generator
from thickets_jax.perturb import PerturbSpec
from thickets_jax.tasks import countdown


def b4_workload(n: int, members_per_batch: int, member_axis: str) -> None:
  """Scores N members on Countdown (4 prompts, 32 tokens): what B4 measures the memory of."""
  loaded = registry.load(SMOLLM2)
  problems = countdown.generate(1, 4)
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
                  generate.Sampling(max_new_tokens=32), batch_size=4, chat=True,
                  member_axis=member_axis)
  seeds, sigmas = population.draw_candidates(0, n, [1e-3])
  scores = []
  for _, texts in gen.generate_population(seeds, sigmas, [countdown.prompt(p) for p in problems],
                                          members_per_batch=members_per_batch):
    scores += [np.mean([countdown.reward(t, p) for t, p in zip(member, problems)])
               for member in texts]
  assert len(scores) == n


@dataclasses.dataclass(frozen=True)
class B4Config(Sizes, MemberBatching):
  pass


@register("B4", B4Config, "peak RSS of SmolLM2 population scoring at two N")
def b4(config: B4Config) -> str:
  peaks = {n: bench.peak_rss_in_fresh_process(b4_workload, n, config.members_per_batch,
                                              config.member_axis)
           for n in config.b4_sizes}
  figures = ", ".join(f"{peaks[n] / 2**30:.2f} GiB at N={n}" for n in peaks)
  return f"B4: peak RSS {figures} (SmolLM2 fp32 weights 0.50 GiB; target <= 3 GB whatever N)"


def es_workload(n: int) -> None:
  """One ES update of SmolLM2-135M's shapes (fp32, random weights) from N members' scores."""
  config = registry.MODELS.get(SMOLLM2).config
  params = roofline.random_params(config, jax.random.key(0))
  es_config = es.ESConfig(population=n)
  step = es.make_step(es_config, PerturbSpec(stacked=llm_model.STACKED_LEAVES))
  seeds, sigmas = es.iteration_members(0, 0, es_config)
  args = (jnp.asarray(seeds, jnp.int32), jnp.asarray(sigmas, jnp.float32),
          jnp.asarray(np.random.default_rng(0).random(n), jnp.float32))
  jax.block_until_ready(step(params, es.init(params, es_config), *args))  # compiled
  start = time.perf_counter()
  jax.block_until_ready(step(params, es.init(params, es_config), *args))
  logging.info("ES update with N=%d: %.2f s (%.3f s per member)", n,
               time.perf_counter() - start, (time.perf_counter() - start) / n)


@dataclasses.dataclass(frozen=True)
class ESBenchConfig(Sizes):
  pass


@register("ES", ESBenchConfig, "peak RSS and time of one SmolLM2 ES update at two N")
def es_update(config: ESBenchConfig) -> str:
  peaks = {n: bench.peak_rss_in_fresh_process(es_workload, n) for n in config.b4_sizes}
  figures = ", ".join(f"{peaks[n] / 2**30:.2f} GiB at N={n}" for n in peaks)
  return (f"ES: peak RSS of one update {figures} (SmolLM2 fp32 weights 0.50 GiB; the update "
          f"holds the base, one member's noise and a float32 accumulator whatever N)")
