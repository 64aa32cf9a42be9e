"""Population generation on SmolLM2-135M: B3 (against transformers `generate` on the same members
and prompts, and the machine's matmul peak), B6 (low-rank members factored against full-rank
members materialised) and B8 (the shared prompt prefix prefilled once against in every prompt)."""

import dataclasses
import os
import time
from typing import Iterable

import numpy as np
from absl import logging

from thickets_jax import bench, configs, flops, population
from thickets_jax.benchmarks.base import (KVCache, LayerLoop, MemberBatching, NewTokens, Prompts,
                                          Repeats, check_positive, identical_rows,
                                          register)
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, model as llm_model, registry
from thickets_jax.llm.generator import Generator
from thickets_jax.perturb import PerturbSpec, rebuild_member
from thickets_jax.tasks import countdown

SMOLLM2 = "smollm2-135m-instruct"


def _countdown_prompts(n: int) -> list[str]:
  return [countdown.prompt(p) for p in countdown.generate(0, n)]


@dataclasses.dataclass(frozen=True)
class B3Config(Repeats, Prompts, NewTokens, MemberBatching, LayerLoop, KVCache):
  members: int = configs.setting(16, "B3: perturbed members.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "members")


@register("B3", B3Config, "SmolLM2 population generation vs HF generate")
def b3(config: B3Config) -> str:
  import torch  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import torch_twin  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  loaded = registry.load(SMOLLM2)
  texts = _countdown_prompts(config.prompts)
  sampling = generate.Sampling(max_new_tokens=config.new_tokens, ignore_eos=True,
                               cache_dtype=config.kv_cache_dtype)
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                  batch_size=config.prompts, chat=True, member_axis=config.member_axis,
                  layer_loop=config.layer_loop)
  seeds, sigmas = population.draw_candidates(0, config.members, [1e-3])
  _, mask = gen.codec.encode(texts)
  prompt_tokens = int(mask.sum())
  peak_before = bench.peak_matmul_flops(config.repeats)
  c = config.members_per_batch
  start = time.perf_counter()
  list(gen.population_token_ids(seeds[:c], sigmas[:c], texts, members_per_batch=c))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  ours = np.concatenate([ids for _, ids in gen.population_token_ids(
      seeds, sigmas, texts, members_per_batch=c)])
  ours_s = time.perf_counter() - start
  peak = float(np.median([peak_before, bench.peak_matmul_flops(config.repeats)]))

  ids = gen.codec.token_ids(texts)
  width = max(len(x) for x in ids)
  input_ids = torch.tensor([[gen.codec.pad_id] * (width - len(x)) + x for x in ids])
  attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
  hf = torch_twin.transformers_model(loaded.config, loaded.params, contiguous=True)
  hf_s, same_rows = 0.0, 0
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = rebuild_member(loaded.params, int(seed), float(sigma), gen.perturb)
    # untimed: HF gets its weights for free
    hf.load_state_dict(torch_twin.state_dict(loaded.config, member))
    start = time.perf_counter()
    with torch.no_grad():
      out = hf.generate(input_ids, attention_mask=attention, max_new_tokens=config.new_tokens,
                        min_new_tokens=config.new_tokens, do_sample=False,
                        pad_token_id=gen.codec.pad_id)
    hf_s += time.perf_counter() - start
    same_rows += identical_rows(out[:, width:].numpy(), ours[m])
  tokens = config.members * (prompt_tokens + config.prompts * config.new_tokens)
  model_flops = tokens * flops.token_flops(loaded.config.num_params)
  rate = model_flops / ours_s
  logging.info("B3: %d members x %d prompts (%d prompt tokens) x %d new tokens; compile %.1f s; "
               "ours %.2f s/member (perturbation included), HF generate %.2f s/member; "
               "%d/%d rows token-identical to HF; HF %.0f GFLOP/s", config.members,
               config.prompts, prompt_tokens, config.new_tokens, compile_s,
               ours_s / config.members, hf_s / config.members, same_rows,
               config.members * config.prompts, model_flops / hf_s / 1e9)
  return (f"B3: {hf_s / ours_s:.2f}x HF generate ({ours_s:.1f} s vs {hf_s:.1f} s for "
          f"{config.members} members), {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


def timed_chunks(chunks: Iterable[tuple[slice, np.ndarray]]) -> tuple[np.ndarray, list[float]]:
  """Chunks of members as they come (`Generator.population_token_ids`, or
  `population.iter_population` reshaped) -> (their outputs concatenated over members, the
  seconds of each chunk)."""
  ids, seconds, start = [], [], time.perf_counter()
  for _, out in chunks:
    ids.append(out)
    seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
  return np.concatenate(ids), seconds


def members_per_second(chunks: Iterable[tuple[slice, np.ndarray]], members: int,
                       chunk: int) -> tuple[float, np.ndarray]:
  """(members per second over every chunk but the first, which includes compilation; the
  outputs) of `members` generated `chunk` at a time (`timed_chunks`)."""
  ids, seconds = timed_chunks(chunks)
  return (members - chunk) / sum(seconds[1:]), ids


def _rate(gen: Generator, seeds, sigmas, texts, chunk: int) -> tuple[float, np.ndarray]:
  """`members_per_second` of `gen`'s members on `texts`."""
  return members_per_second(
      gen.population_token_ids(seeds, sigmas, texts, members_per_batch=chunk), len(seeds), chunk)


@dataclasses.dataclass(frozen=True)
class B6Config(Prompts, NewTokens, MemberBatching, LayerLoop, KVCache):
  b6_members: int = configs.setting(64, "B6: members of each noise family.")
  b6_ranks: tuple[int, ...] = configs.setting((1, 4, 16), "B6: ranks of the low-rank members.")
  b6_chunk: int = configs.setting(
      16, "B6: low-rank members per factored call (rows = chunk x prompts).")
  b6_check: int = configs.setting(
      2, "B6: low-rank members also materialised, to compare tokens.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "b6_members", "b6_ranks", "b6_chunk", "b6_check")
    for flag, chunk in (("--members_per_batch", self.members_per_batch),
                        ("--b6_chunk", self.b6_chunk)):
      if self.b6_members < 2 * chunk:
        raise InputError(f"B6 times every chunk but the first: --b6_members {self.b6_members} "
                         f"needs at least two chunks of {flag} {chunk}.")


@register("B6", B6Config, "SmolLM2 low-rank members factored vs full rank")
def b6(config: B6Config) -> str:
  loaded = registry.load(SMOLLM2)
  texts = _countdown_prompts(config.prompts)
  sampling = generate.Sampling(max_new_tokens=config.new_tokens, ignore_eos=True,
                               cache_dtype=config.kv_cache_dtype)
  make = lambda spec, **kwargs: Generator(
      loaded.config, loaded.params, loaded.tokenizer, sampling, batch_size=config.prompts,
      chat=True, perturb=spec, layer_loop=config.layer_loop, **kwargs)
  seeds, sigmas = population.draw_candidates(0, config.b6_members, [1e-3])
  full = PerturbSpec(stacked=llm_model.STACKED_LEAVES)
  full_rate, _ = _rate(make(full, member_axis=config.member_axis), seeds, sigmas, texts,
                       config.members_per_batch)
  logging.info("B6 full rank, materialised (%s, %d per call): %.3f members/s",
               config.member_axis, config.members_per_batch, full_rate)
  figures = []
  for rank in config.b6_ranks:
    spec = dataclasses.replace(full, noise="lowrank", rank=rank)
    rate, ids = _rate(make(spec), seeds, sigmas, texts, config.b6_chunk)
    check = config.b6_check
    materialised, _ = timed_chunks(make(spec, factored=False, member_axis=config.member_axis
                                        ).population_token_ids(seeds[:check], sigmas[:check],
                                                               texts, members_per_batch=1))
    same = identical_rows(materialised, ids[:check])
    logging.info("B6 rank %d, factored (%d members x %d prompts per call): %.3f members/s = "
                 "%.2fx full rank; %d/%d rows token-identical to the materialised members", rank,
                 config.b6_chunk, config.prompts, rate, rate / full_rate, same,
                 check * config.prompts)
    figures.append(f"r={rank} {rate / full_rate:.2f}x ({rate:.3f} members/s, {same}/"
                   f"{check * config.prompts} rows identical to materialised)")
  return (f"B6: low-rank factored vs full-rank members, {config.b6_members} members x "
          f"{config.prompts} Countdown prompts x {config.new_tokens} new tokens: "
          + "; ".join(figures) + f"; full rank {full_rate:.3f} members/s")


def few_shot_prompts(n: int, shots: int, seed: int = 0) -> list[str]:
  """GSM8K-style prompts: one instruction and `shots` solved word problems all share, then a
  question of their own."""
  rng = np.random.default_rng(seed)
  names = ("Ada", "Ben", "Cleo", "Dev", "Ema", "Finn")
  items = ("apples", "books", "marbles", "stamps")

  def problem():
    name, item = rng.choice(names), rng.choice(items)
    a, b, c = (int(x) for x in rng.integers(5, 60, 3))
    question = (f"{name} has {a} {item}. {name} buys {b} more {item} and then gives {c} of them "
                f"to a friend. How many {item} does {name} have now?")
    return question, f"{name} has {a} + {b} - {c} = {a + b - c} {item}. #### {a + b - c}"

  solved = "\n\n".join("Question: {}\nAnswer: {}".format(*problem()) for _ in range(shots))
  header = ("Solve each grade-school math problem step by step and end with '#### ' and the "
            f"number.\n\n{solved}\n\n")
  return [f"{header}Question: {problem()[0]}\nAnswer:" for _ in range(n)]


@dataclasses.dataclass(frozen=True)
class B8Config(Repeats, Prompts, LayerLoop):
  b8_shots: int = configs.setting(8, "B8: solved examples in the few-shot prompts.")
  b8_new_tokens: int = configs.setting(
      1, "B8: new tokens per prompt (1 times the prefill; more adds decoding, where the shared "
      "prefix is kept once instead of in every row's cache).")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "b8_shots", "b8_new_tokens")


@register("B8", B8Config, "shared-prefix prefill: Countdown and few-shot prompts")
def b8(config: B8Config) -> str:
  """Generation time with the shared prefix computed and kept once vs inside every prompt, on
  B3's Countdown prompts and on few-shot GSM8K-style prompts (one model, `b8_new_tokens`: 1
  times the prefill alone)."""
  loaded = registry.load(SMOLLM2)
  workloads = {"countdown": _countdown_prompts(config.prompts),
               f"{config.b8_shots}-shot": few_shot_prompts(config.prompts, config.b8_shots)}
  sampling = generate.Sampling(max_new_tokens=config.b8_new_tokens, ignore_eos=True)
  figures = []
  for name, texts in workloads.items():
    seconds, ids = {}, {}
    for shared in (False, True):
      gen = Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                      batch_size=config.prompts, chat=True,
                      layer_loop=config.layer_loop, shared_prefix=shared)
      seconds[shared] = bench.median_seconds(gen.base_token_ids, texts, repeats=config.repeats)
      ids[shared] = gen.base_token_ids(texts)
    prefix, _, _ = gen.codec.encode_shared_prefix(texts)
    _, plain_mask = gen.codec.encode(texts)
    same = identical_rows(ids[False], ids[True])
    logging.info("B8 %s: %d prompts, %d real tokens (bucket %d), shared prefix %d tokens; "
                 "%d new tokens: %.2f s in every prompt, %.2f s shared; %d/%d rows identical",
                 name, len(texts), int(plain_mask.sum()), plain_mask.shape[-1], len(prefix),
                 config.b8_new_tokens, seconds[False], seconds[True], same, len(texts))
    figures.append(f"{name} {seconds[True]:.2f} s vs {seconds[False]:.2f} s "
                   f"({100 * (1 - seconds[True] / seconds[False]):.0f}% saved, prefix "
                   f"{len(prefix)} tokens, {same}/{len(texts)} rows identical)")
  what = ("prefill" if config.b8_new_tokens == 1 else
          f"prefill and {config.b8_new_tokens} new tokens")
  return f"B8: shared prefix, {what}, " + "; ".join(figures)
