"""`Generator`: tokenise -> a compiled generation program -> detokenise, for one loaded model,
its base or a population of perturbed members.

The program decodes in batches (`generate.token_generator`: each prompt batch until its longest
row ends) or with slot refill (`refill.refill_generator`: a finished row's slot takes the next
prompt). Both give the same tokens, so a population may switch between them from one chunk of
members to the next (`Decode`'s "auto"). For a population, each member is built inside the
jitted call: member parameters exist only for the members of the chunk being generated and are
never stored.
"""

import dataclasses
import functools
from typing import Callable, Iterator, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thickets_jax import distributed, population
from thickets_jax.errors import InputError
from thickets_jax.llm import chunk, refill
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.codec import PromptCodec
from thickets_jax.llm.config import ModelConfig
from thickets_jax.llm.generate import Sampling, completion_mask, prompt_keys, token_generator
from thickets_jax.perturb import PerturbSpec

DECODES = ("auto", "batch", "refill")
# The time of one slot-refill decode step over one batch-decoding step of as many rows (its
# refills and per-row cache writes), by backend, measured by B9. CPU (2 cores, SmolLM2, 8
# slots): refill ran 0.71x the decode steps of batch decoding and took 0.82x its time. GPU (an
# H200, random bfloat16 Qwen2.5-1.5B shapes, 32 slots): 0.45x the steps (useful row-steps 56%
# against 25%) in 0.45x the time (2.23x the members/s), where a decode step reads the weights
# whatever it writes. TPUs are unmeasured and take the CPU's dearer figure.
REFILL_STEP_COSTS = {"cpu": 1.16, "gpu": 1.0}


def refill_step_cost() -> float:
  """This backend's REFILL_STEP_COSTS entry."""
  return REFILL_STEP_COSTS.get(jax.default_backend(), REFILL_STEP_COSTS["cpu"])


@dataclasses.dataclass(frozen=True)
class Decode:
  """How rows decode. "batch": each prompt batch of `batch_size` rows per member until its
  longest row ends. "refill": `batch_size` slots per member, a finished row's slot taking the
  member's next prompt at once, prompts prefilled `refill_rows` together ahead of the slots
  that free (default a quarter of the slots); factored members share the chunk's slots, a
  finished row taking the chunk's next (member, prompt), and stage a quarter of all of them by
  default.
  "auto": a population's first chunk of members decodes in batches, and each next chunk with
  the decoder the last chunk's completion lengths say is faster (`faster_decode`): refill where
  lengths vary and a member has more prompts than slots, batches where rows run to one length
  or one batch holds every prompt. A single model's call (`Generator.base_token_ids`) and
  probability averaging decode in batches."""
  kind: str = "auto"
  refill_rows: Optional[int] = None

  def validate(self, batch_size: int) -> None:
    if self.kind not in DECODES:
      raise InputError(f"unknown decode {self.kind!r}; known: {', '.join(DECODES)}.")
    refill.check_slots(batch_size, self.refill_rows)

  def first(self) -> str:
    """The decoder a call starts with ("auto" starts in batches and may switch later)."""
    return "refill" if self.kind == "refill" else "batch"


def faster_decode(lengths: np.ndarray, batch_size: int, shared: bool = False) -> str:
  """"refill" or "batch": the decoder that runs completions of these lengths sooner, by the
  decode steps each runs for them (`refill.refill_steps`, `refill.batch_steps`) at a refill
  step's cost of `refill_step_cost()` batch steps. lengths [M, Q] (tokens generated, ≥ 1); prompts
  are padded to whole batches with rows of length 1; `shared`: the members share their slots
  (factored members)."""
  pad = -lengths.shape[1] % batch_size
  lengths = np.pad(np.maximum(lengths, 1), ((0, 0), (0, pad)), constant_values=1)
  refilled = refill.refill_steps(lengths, batch_size, shared) * refill_step_cost()
  return "refill" if refilled < refill.batch_steps(lengths, batch_size) else "batch"


def generation_function(config: ModelConfig, sampling: Sampling, decode: Decode, batch_size: int,
                        *, stop_ids: Sequence[int], pad_id: int,
                        layer_loop: Optional[str]) -> Callable:
  """The pure generation function of `decode` (`generate.token_generator`'s signature): slot
  refill with `batch_size` slots per member, or batches of `batch_size` (also for "auto",
  which `Generator` resolves chunk by chunk). Probability averaging decodes the members in
  lockstep, so it always runs in batches."""
  if decode.kind == "refill" and not sampling.average_members:
    return refill.refill_generator(config, sampling, stop_ids=stop_ids, pad_id=pad_id,
                                   slots=batch_size, refill_rows=decode.refill_rows,
                                   layer_loop=layer_loop)
  return token_generator(config, sampling, stop_ids=stop_ids, pad_id=pad_id,
                         layer_loop=layer_loop)


@functools.lru_cache(maxsize=None)
def _programs(config: ModelConfig, sampling: Sampling, stop_ids: tuple[int, ...], pad_id: int,
              layer_loop: Optional[str], perturb: PerturbSpec, member_axis: str,
              factored: bool, decode: Decode, batch_size: int) -> tuple[Callable, Callable]:
  """(the jitted base generation, the population program) of these settings, built once per
  process: every `Generator` with the same settings (one per experiment phase, rung, sampler
  temperature or test) shares their compilations. Parameters are arguments, never constants,
  so sharing cannot mix two models' weights."""
  run = generation_function(config, sampling, decode, batch_size, stop_ids=stop_ids,
                            pad_id=pad_id, layer_loop=layer_loop)
  return jax.jit(run), chunk.population_program(run, perturb, member_axis=member_axis,
                                                factored=factored)


class Generator:
  """Tokenise -> generate (`decode`: batches or slot refill) -> detokenise, for one loaded
  model, its base or members.

  One call per chunk of members covers every prompt batch, so each member is perturbed once
  (`chunk.population_program`). Low-rank members run factored: the chunk's members share every
  base matmul. Full-rank members are materialised: together under one decode loop with
  `member_axis="vmap"`, one after another with "map". The longest token prefix all prompts of a
  call share is prefilled once per member (`shared_prefix`).
  """

  def __init__(self, config: ModelConfig, params, tokenizer, sampling: Sampling, *,
               batch_size: int, chat: bool, stop_strings: Sequence[str] = (),
               member_axis: str = "map", perturb: Optional[PerturbSpec] = None,
               layer_loop: Optional[str] = None, shared_prefix: bool = True,
               factored: bool = True, base_template: str = "{}", decode: Decode = Decode()):
    """`perturb` defaults to independent noise over every leaf and layer of the model;
    `factored=False` materialises low-rank members too (tests, benchmarks); `chat`,
    `stop_strings` and `base_template` as `PromptCodec`."""
    self.codec = PromptCodec(tokenizer, batch_size=batch_size, chat=chat,
                             stop_strings=stop_strings, base_template=base_template)
    self.perturb = PerturbSpec(stacked=llm_model.STACKED_LEAVES) if perturb is None else perturb
    if self.perturb.stacked != llm_model.STACKED_LEAVES:
      raise ValueError(f"a language model's PerturbSpec needs stacked="
                       f"{llm_model.STACKED_LEAVES!r} (one noise draw per layer), got "
                       f"{self.perturb.stacked!r}")
    self.config, self.params, self.sampling = config, params, sampling
    self.shared_prefix = shared_prefix
    decode.validate(batch_size)
    self.decode, self.factored = decode, factored and self.perturb.noise == "lowrank"

    def programs_of(kind: str, averaged: bool = False):
      """`_programs` of decoder `kind`; `averaged`: probability averaging, whose materialised
      members must share a decode loop (vmap)."""
      return _programs(
          config, dataclasses.replace(sampling, average_members=True) if averaged else sampling,
          tuple(self.codec.stop_ids), self.codec.pad_id, layer_loop, self.perturb,
          "vmap" if averaged else member_axis, self.factored,
          Decode(kind, decode.refill_rows if kind == "refill" else None), batch_size)
    self._programs_of = programs_of
    self._base = programs_of(decode.first())[0]
    self.chunk_decodes: list[str] = []  # the decoder of each population chunk generated

  def _encode(self, texts: Sequence[str], key: Optional[jax.Array]) -> tuple:
    """(prompts, masks, keys, prefix): the generation arguments of `texts`."""
    if self.shared_prefix:
      prefix, tokens, mask = self.codec.encode_shared_prefix(texts)
    else:
      (tokens, mask), prefix = self.codec.encode(texts), np.zeros((0,), np.int32)
    return tokens, mask, prompt_keys(self.sampling, key, *tokens.shape[:2]), prefix

  def base_token_ids(self, texts: Sequence[str], key: Optional[jax.Array] = None,
                     params=None) -> np.ndarray:
    """Continuations, [prompts, max_new_tokens] token ids, of the base model or of `params`
    (e.g. a member rebuilt with `rebuild_member`), through the same compiled program."""
    params = self.params if params is None else params
    out = distributed.to_host(self._base(params, *self._encode(texts, key)))
    return out.reshape(-1, out.shape[-1])[:len(texts)]

  def generate(self, texts: Sequence[str], key: Optional[jax.Array] = None,
               params=None) -> list[str]:
    return [self.codec.decode(row) for row in self.base_token_ids(texts, key, params)]

  def population_token_ids(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str], *,
                           members_per_batch: int, mesh: Optional[Mesh] = None,
                           key: Optional[jax.Array] = None,
                           params=None) -> Iterator[tuple[slice, np.ndarray]]:
    """Yields (members slice, [members, prompts, max_new_tokens] token ids) per chunk of members.

    Members perturb `params` (default: the base, e.g. an ES iterate) and share the sampling
    key (irrelevant when greedy, the RandOpt protocol). Under `Decode("auto")` each chunk after
    the first decodes with `faster_decode` of the last chunk's completion lengths.
    """
    params = self.params if params is None else params
    decoder = self.decode.first()
    program = lambda *args: self._programs_of(decoder)[1](*args)  # the decoder chosen by then
    for part, out in population.iter_population(program, params, seeds, sigmas,
                                                chunk_size=members_per_batch, mesh=mesh,
                                                args=self._encode(texts, key)):
      ids = out.reshape(out.shape[0], -1, out.shape[-1])[:, :len(texts)]
      self.chunk_decodes.append(decoder)
      if self.decode.kind == "auto":
        chosen = faster_decode(completion_mask(ids, self.codec.stop_ids).sum(-1),
                               self.codec.batch_size, shared=self.factored)
        if chosen != decoder:
          logging.info("decode: %s from member %d on (the last chunk's completion lengths)",
                       chosen, part.stop)
        decoder = chosen
      yield part, ids

  def averaged_token_ids(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str],
                         key: Optional[jax.Array] = None, params=None) -> np.ndarray:
    """Continuations, [prompts, max_new_tokens] token ids, of the probability-averaging
    ensemble of the members `(seeds [K], sigmas [K])`: all K run in one call (factored when
    low-rank, else materialised together), each step's token from the mean of their
    next-token probabilities (`Sampling.average_members`)."""
    params = self.params if params is None else params
    program = self._programs_of("batch", averaged=True)[1]
    out = distributed.to_host(program(params, jnp.asarray(seeds, jnp.int32),
                                      jnp.asarray(sigmas, jnp.float32),
                                      *self._encode(texts, key)))  # [K, batches, b, new]
    return out[0].reshape(-1, out.shape[-1])[:len(texts)]

  def generate_population(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str],
                          **kwargs) -> Iterator[tuple[slice, list[list[str]]]]:
    """Yields (members slice, [members][prompts] texts); arguments as `population_token_ids`."""
    for part, ids in self.population_token_ids(seeds, sigmas, texts, **kwargs):
      yield part, [[self.codec.decode(row) for row in member] for member in ids]
