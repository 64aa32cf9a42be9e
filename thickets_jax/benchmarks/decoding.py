"""B9: slot refill against batch decoding and transformers `generate`. Both decoders get the same
members and prompts, on a workload whose completion lengths vary, and must give the same
tokens. On an offline model `--decode auto` is timed too (each chunk of members after the first
with the decoder the last chunk's completion lengths choose), on the same members.

On an offline model the workload is real completions (greedy) of Countdown and GSM8K-style
prompts. With `--b9_random_weights` (accelerator checks, where no weights can be fetched) it
is random weights of a registered model's shapes and random prompts, sampled at temperature 1,
with every (n/4)-th token id a stop token, so lengths are roughly geometric with mean n/4."""

import dataclasses
import os
import time
from typing import Optional

import jax
import numpy as np
from absl import logging

from thickets_jax import configs, population
from thickets_jax.benchmarks.base import (KVCache, LayerLoop, MemberBatching, check_positive,
                                          identical_rows, register)
from thickets_jax.benchmarks.generation import few_shot_prompts, members_per_second
from thickets_jax.errors import InputError
from thickets_jax.llm import chunk, generate, refill, registry, roofline, session
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.generator import Decode, Generator, generation_function
from thickets_jax.perturb import PerturbSpec, rebuild_member
from thickets_jax.tasks import countdown

WORKLOADS = ("countdown", "gsm8k", "mixed")


def workload_prompts(name: str, n: int) -> list[str]:
  """n prompts: Countdown, 8-shot GSM8K-style word problems, or the two alternating."""
  problems = [countdown.prompt(p) for p in countdown.generate(0, n)]
  word = few_shot_prompts(n, 8)
  if name == "countdown":
    return problems
  if name == "gsm8k":
    return word
  return [(problems if i % 2 == 0 else word)[i // 2] for i in range(n)]


def length_summary(lengths: np.ndarray, limit: int) -> dict:
  """Completion lengths [members, prompts] -> their distribution (as tokens)."""
  flat = lengths.ravel()
  return {"mean": float(flat.mean()), "median": float(np.median(flat)),
          "p10": float(np.percentile(flat, 10)), "p90": float(np.percentile(flat, 90)),
          "min": int(flat.min()), "max": int(flat.max()),
          "cv": float(flat.std() / flat.mean()), "truncated": float(np.mean(flat == limit))}


def useful_fractions(lengths: np.ndarray, *, batch_size: int, per_call: int, lockstep: bool,
                     shared: bool = False) -> tuple[float, float]:
  """Useful decode row-steps, Σ(length − 1), as a fraction of the row-steps each decoder runs:
  (batch, refill). lengths [members, prompts]; `per_call` members per call, stepping together when
  `lockstep` (vmapped or factored members), else one after another; `shared`: a call's members
  share their slots (factored)."""
  step = per_call if lockstep else 1
  groups = [lengths[i:i + step] for i in range(0, len(lengths), step)]
  useful = float((lengths - 1).sum())
  batch = sum(refill.batch_steps(g, batch_size) * g.shape[0] * batch_size for g in groups)
  slots = sum(refill.refill_steps(g, batch_size, shared) * g.shape[0] * batch_size
              for g in groups)
  return useful / batch, useful / slots


@dataclasses.dataclass(frozen=True)
class B9Config(MemberBatching, LayerLoop, KVCache):
  b9_model: str = configs.setting(
      registry.OFFLINE_MODELS[0], "B9: the model: an offline one, or with --b9_random_weights "
      "any registered model's shapes.")
  b9_random_weights: bool = configs.setting(
      False, "B9: random weights and prompts, sampled, every (n/4)-th token id a stop (no "
      "weights needed; accelerator checks).")
  b9_dtype: Optional[str] = configs.setting(
      None, "B9 with --b9_random_weights: the weights' dtype (default bfloat16 on accelerators, "
      "float32 on CPU; float32 multiplies in full precision).", choices=tuple(session.DTYPES))
  b9_workload: str = configs.setting(
      "mixed", "B9: countdown, gsm8k (8-shot word problems) or mixed (the two alternating).",
      choices=WORKLOADS)
  b9_prompts: int = configs.setting(32, "B9: prompts every member answers.")
  b9_members: int = configs.setting(4, "B9: perturbed members (all but the first chunk timed).")
  b9_new_tokens: int = configs.setting(256, "B9: generation length limit (greedy, stops end rows).")
  b9_batch: int = configs.setting(8, "B9: rows per prompt batch = slots per member.")
  b9_refill_rows: Optional[int] = configs.setting(
      None, "B9: prompts one prefill stages together for the slots that free (default: a "
      "quarter of a member's slots, or of a call's for factored members).")
  b9_rank: int = configs.setting(
      0, "B9: 0 perturbs at full rank (members materialised); r > 0 draws low-rank members of "
      "rank r, run factored: a call's members share their slots.")
  b9_hf: bool = configs.setting(
      True, "B9: also time transformers generate on the timed members (offline models).")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "b9_prompts", "b9_members", "b9_new_tokens", "b9_batch")
    if self.b9_rank < 0:
      raise InputError(f"--b9_rank must be 0 (full rank) or positive, got {self.b9_rank}.")
    registry.entry(self.b9_model)  # an unknown model is one sentence
    if not self.b9_random_weights and self.b9_model not in registry.OFFLINE_MODELS:
      raise InputError(f"--b9_model {self.b9_model} has no offline weights; use one of "
                       f"{', '.join(registry.OFFLINE_MODELS)}, or --b9_random_weights.")
    if self.b9_dtype and not self.b9_random_weights:
      raise InputError("--b9_dtype sets the random weights' dtype; it needs --b9_random_weights.")
    refill.check_slots(self.b9_batch, self.b9_refill_rows, ("--b9_batch", "--b9_refill_rows"))
    if self.b9_members < 2 * self.members_per_batch:
      raise InputError(f"B9 times every chunk but the first: --b9_members {self.b9_members} "
                       f"needs at least two chunks of --members_per_batch "
                       f"{self.members_per_batch}.")
    if self.b9_prompts % self.b9_batch:
      raise InputError(f"--b9_prompts {self.b9_prompts} must be a multiple of --b9_batch "
                       f"{self.b9_batch}.")


def _perturbation(config: B9Config) -> PerturbSpec:
  """Full-rank members, or low-rank ones of rank `b9_rank` (factored)."""
  if config.b9_rank:
    return PerturbSpec(stacked=llm_model.STACKED_LEAVES, noise="lowrank", rank=config.b9_rank)
  return PerturbSpec(stacked=llm_model.STACKED_LEAVES)


def _hf_generate(loaded, gen: Generator, seeds, sigmas, texts, config: B9Config):
  """(members per second of transformers `generate`, its ids [M, Q, n] padded after a stop),
  on the same members, prompts and stop tokens, in the same batches, greedy."""
  import torch  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import torch_twin  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  hf = torch_twin.transformers_model(loaded.config, loaded.params, contiguous=True)
  prefix, tokens, mask = gen.codec.encode_shared_prefix(texts)
  rows = [prefix.tolist() + t[m].tolist() for t, m in zip(tokens.reshape(-1, tokens.shape[-1]),
                                                            mask.reshape(-1, mask.shape[-1]))]
  rows = rows[:len(texts)]
  seconds, out = 0.0, np.full((len(seeds), len(texts), config.b9_new_tokens), gen.codec.pad_id)
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = rebuild_member(loaded.params, int(seed), float(sigma), gen.perturb)
    hf.load_state_dict(torch_twin.state_dict(loaded.config, member))  # untimed
    for start in range(0, len(rows), config.b9_batch):
      batch = rows[start:start + config.b9_batch]
      width = max(len(r) for r in batch)
      ids = torch.tensor([[gen.codec.pad_id] * (width - len(r)) + r for r in batch])
      attention = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch])
      begin = time.perf_counter()
      with torch.no_grad():
        new = hf.generate(ids, attention_mask=attention, max_new_tokens=config.b9_new_tokens,
                          do_sample=False, eos_token_id=list(gen.codec.stop_ids),
                          pad_token_id=gen.codec.pad_id)[:, width:].numpy()
      seconds += time.perf_counter() - begin
      new = np.where(generate.completion_mask(new, gen.codec.stop_ids), new, gen.codec.pad_id)
      out[m, start:start + len(batch), :new.shape[1]] = new
  return len(seeds) / seconds, out


def _random_workload(config: B9Config) -> tuple:
  """(per-decode members/s, ids [M, Q, n], stop ids): random weights and prompts (module
  docstring), each decoder's population program timed over every chunk but the first."""
  dtype = config.b9_dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  shapes = registry.entry(config.b9_model).config.replace(dtype=session.DTYPES[dtype])
  params = roofline.random_params(shapes, jax.random.key(0))
  rng = np.random.default_rng(0)
  batches, prompt = config.b9_prompts // config.b9_batch, 64
  lengths = rng.integers(prompt // 2, prompt + 1, (batches, config.b9_batch))
  masks = np.arange(prompt)[None, None] >= (prompt - lengths)[..., None]
  prompts = np.where(masks, rng.integers(1000, shapes.vocab_size - 1000, masks.shape), 0)
  stride = max(2, config.b9_new_tokens // 4)
  stops = tuple(range(stride // 2, shapes.vocab_size, stride))  # not the padding id 0
  sampling = generate.Sampling(max_new_tokens=config.b9_new_tokens, temperature=1.0,
                               cache_dtype=config.kv_cache_dtype)
  args = (prompts.astype(np.int32), masks,
          generate.prompt_keys(sampling, jax.random.key(1), batches, config.b9_batch),
          np.zeros((0,), np.int32))
  seeds, sigmas = population.draw_candidates(0, config.b9_members, [1e-3])
  spec = _perturbation(config)
  rates, ids = {}, {}
  for kind in ("batch", "refill"):
    run = generation_function(shapes, sampling, Decode(kind, config.b9_refill_rows),
                              config.b9_batch, stop_ids=stops, pad_id=0,
                              layer_loop=config.layer_loop)
    program = chunk.population_program(run, spec, member_axis=config.member_axis,
                                       factored=config.b9_rank > 0)
    chunks = ((part, out.reshape(out.shape[0], -1, out.shape[-1]))
              for part, out in population.iter_population(
                  program, params, seeds, sigmas, chunk_size=config.members_per_batch,
                  args=args))
    rates[kind], ids[kind] = members_per_second(chunks, len(seeds), config.members_per_batch)
  return rates, ids, stops


@register("B9", B9Config, "slot refill vs batch decoding vs HF generate, varied lengths")
def b9(config: B9Config) -> str:
  if config.b9_random_weights:
    rates, ids, stops = _random_workload(config)
    return _report(config, rates, ids, stops, "")
  loaded = registry.load(config.b9_model)
  texts = workload_prompts(config.b9_workload, config.b9_prompts)
  sampling = generate.Sampling(max_new_tokens=config.b9_new_tokens,
                               cache_dtype=config.kv_cache_dtype)
  seeds, sigmas = population.draw_candidates(0, config.b9_members, [1e-3])
  per_call = config.members_per_batch
  rates, ids = {}, {}
  for kind in ("batch", "refill", "auto"):  # auto reuses the two programs compiled before it
    gen = Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                    batch_size=config.b9_batch, chat=loaded.entry.instruct,
                    member_axis=config.member_axis, layer_loop=config.layer_loop,
                    perturb=_perturbation(config), decode=Decode(kind, config.b9_refill_rows))
    rates[kind], ids[kind] = members_per_second(
        gen.population_token_ids(seeds, sigmas, texts, members_per_batch=per_call), len(seeds),
        per_call)
    logging.info("B9 %s decoding: %.4f members/s; chunks decoded %s", kind, rates[kind],
                 gen.chunk_decodes)
  hf = ""
  if config.b9_hf:  # on the timed members
    hf_rate, hf_ids = _hf_generate(loaded, gen, seeds[per_call:], sigmas[per_call:], texts,
                                   config)
    hf_same = identical_rows(hf_ids, ids["batch"][per_call:])
    logging.info("B9 transformers generate: %.4f members/s; %d/%d rows token-identical",
                 hf_rate, hf_same, hf_ids.shape[0] * hf_ids.shape[1])
    hf = (f", {rates['refill'] / hf_rate:.2f}x HF generate ({hf_same}/"
          f"{hf_ids.shape[0] * hf_ids.shape[1]} rows identical to HF)")
  return _report(config, rates, ids, gen.codec.stop_ids, hf)


def _report(config: B9Config, rates: dict, ids: dict, stop_ids, hf: str) -> str:
  """The lengths' distribution (logged per workload part) and B9's line."""
  same = identical_rows(ids["batch"], ids["refill"])
  auto = ""
  if "auto" in rates:  # the offline workloads
    auto_same = identical_rows(ids["batch"], ids["auto"])
    auto = (f"; --decode auto {rates['auto'] / rates['batch']:.2f}x batch decoding "
            f"({auto_same}/{ids['auto'].shape[0] * ids['auto'].shape[1]} rows identical)")
  lengths = generate.completion_mask(ids["batch"], stop_ids).sum(-1)
  summary = length_summary(lengths, config.b9_new_tokens)
  batch_useful, refill_useful = useful_fractions(
      lengths, batch_size=config.b9_batch, per_call=config.members_per_batch,
      lockstep=config.member_axis == "vmap" or config.b9_rank > 0, shared=config.b9_rank > 0)
  workload = "random" if config.b9_random_weights else config.b9_workload
  parts = {workload: lengths}
  if workload == "mixed":
    parts.update(countdown=lengths[:, 0::2], gsm8k=lengths[:, 1::2])
  for name, part in parts.items():
    logging.info("B9 %s on %s, %d members x %d prompts, <= %d new tokens: lengths %s",
                 config.b9_model, name, config.b9_members, part.shape[1], config.b9_new_tokens,
                 {k: round(v, 2) for k, v in length_summary(part, config.b9_new_tokens).items()})
  return (f"B9: slot refill {rates['refill'] / rates['batch']:.2f}x batch decoding "
          f"({rates['refill']:.4f} vs {rates['batch']:.4f} members/s){hf}; useful decode "
          f"row-steps {100 * refill_useful:.0f}% vs {100 * batch_useful:.0f}%; {same}/"
          f"{lengths.size} rows identical; {config.b9_model} {workload}, lengths mean "
          f"{summary['mean']:.0f}, CV {summary['cv']:.2f}, {100 * summary['truncated']:.0f}% at "
          f"the {config.b9_new_tokens}-token limit{auto}")
