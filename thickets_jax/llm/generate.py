"""Batched generation with a KV cache, for one model or a population of perturbed members.

The core is pure: `token_generator(...)` returns `(params, prompts, masks, keys) -> token ids`.
Prompts are left-padded to a length bucket (`codec.PromptCodec`), so all rows write the same
cache slot each step and one compiled program serves every batch of a bucket. Prefill runs the
whole prompt once (projecting only the last position to the vocabulary); decode is a
`lax.while_loop` that ends when every row has stopped or `max_new_tokens` is reached.

`Generator` wraps the pure function with tokenisation. For a population, the member is built
inside the jitted call: member parameters exist only for the members of the chunk being
generated and are never stored.
"""

import dataclasses
from typing import Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thickets_jax import distributed, population
from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.codec import PromptCodec
from thickets_jax.llm.config import ModelConfig
from thickets_jax.perturb import PerturbSpec


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Decoding settings. `temperature == 0` is greedy. `ignore_eos` forbids the stop tokens
  (their logits are masked, as transformers' `min_new_tokens = max_new_tokens`), so exactly
  `max_new_tokens` are decoded (benchmarks)."""
  max_new_tokens: int
  temperature: float = 0.0
  top_p: float = 1.0
  ignore_eos: bool = False

  def validate(self) -> None:
    if self.max_new_tokens <= 0:
      raise InputError(f"max_new_tokens must be positive, got {self.max_new_tokens}.")
    if self.temperature < 0:
      raise InputError(f"temperature must be >= 0, got {self.temperature}.")
    if not 0 < self.top_p <= 1:
      raise InputError(f"top_p must be in (0, 1], got {self.top_p}.")


def _pick(logits: jax.Array, key: jax.Array, sampling: Sampling) -> jax.Array:
  """Next token per row. logits [b, vocab] float32 -> [b] int32."""
  if sampling.temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  logits = logits / sampling.temperature
  if sampling.top_p < 1:
    order = jnp.argsort(-logits, axis=-1)
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    probs = jax.nn.softmax(sorted_logits, axis=-1)
    outside = jnp.cumsum(probs, axis=-1) - probs >= sampling.top_p  # keeps the top token always
    sorted_logits = jnp.where(outside, -jnp.inf, sorted_logits)
    logits = jnp.put_along_axis(jnp.empty_like(logits), order, sorted_logits, axis=-1,
                                inplace=False)
  return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


LAYER_LOOPS = ("scan", "unrolled")


def default_layer_loop() -> str:
  """The default layer loop: "unrolled" on GPUs (B5: 33% -> 59% of the roofline bound, see
  `model.Transformer`), else "scan" (on CPU unrolled measured no faster; TPUs unmeasured)."""
  return "unrolled" if jax.default_backend() == "gpu" else "scan"


def _check_layer_loop(layer_loop: str) -> None:
  if layer_loop not in LAYER_LOOPS:
    raise InputError(f"unknown layer loop {layer_loop!r}; known: {', '.join(LAYER_LOOPS)}.")


def generate_tokens(config: ModelConfig, params, prompt: jax.Array, prompt_mask: jax.Array,
                    key: jax.Array, *, sampling: Sampling, stop_ids: Sequence[int],
                    pad_id: int, layer_loop: str = "scan") -> jax.Array:
  """Continuations of left-padded prompts.

  Args:
    prompt: [b, p] int32, left-padded. prompt_mask: [b, p] bool, True on real tokens.
    key: sampling key (unused when greedy); step s draws from `fold_in(key, s)`.
    stop_ids: tokens that end a row: the stop token is emitted, `pad_id` fills the rest; never
      drawn with `sampling.ignore_eos`.
    pad_id: what fills a row after its stop token.
    layer_loop: "scan" runs the stacked layers in a scan; "unrolled" slices them once, before
      the decode loop, and runs them unrolled (`model.Transformer`). Same tokens, different
      speed and compile time.

  Returns:
    [b, max_new_tokens] int32; every position after a stop token holds `pad_id`
    (`completion_mask` marks the generated tokens).
  """
  _check_layer_loop(layer_loop)
  b, p = prompt.shape
  n = sampling.max_new_tokens
  cache = llm_model.init_cache(config, b, p + n)
  layers = None
  if layer_loop == "unrolled":
    layers, cache = llm_model.layer_list(params), llm_model.cache_list(cache)
  model = llm_model.Transformer(config)
  run = lambda *args, **kwargs: model.apply({"params": params}, *args, layers=layers, **kwargs)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)  # [b, p]
  prompt_len = prompt_mask.sum(axis=1)  # [b]
  cache_valid = jnp.concatenate([prompt_mask, jnp.zeros((b, n), bool)], axis=1)  # [b, p + n]
  logits, cache = run(prompt, positions, cache, 0, None, prompt_mask, last_only=True)
  stop = jnp.asarray(stop_ids, jnp.int32)

  def next_token(logits, step):
    if sampling.ignore_eos:
      logits = logits.at[:, stop].set(-jnp.inf)
    return _pick(logits, jax.random.fold_in(key, step), sampling)

  def emit(out, done, step, token):
    return out.at[:, step].set(jnp.where(done, pad_id, token)), done | jnp.isin(token, stop)

  out, done = emit(jnp.full((b, n), pad_id, jnp.int32), jnp.zeros((b,), bool), 0,
                   next_token(logits[:, -1], 0))

  def cond(state):
    step, _, _, _, done = state
    return (step < n) & ~jnp.all(done)

  def body(state):
    step, cache, cache_valid, out, done = state
    slot = p + step - 1  # where the previous token goes
    logits, cache = run(out[:, step - 1, None], (prompt_len + step - 1)[:, None], cache, slot,
                        cache_valid, jnp.ones((b, 1), bool))
    cache_valid = cache_valid.at[:, slot].set(True)
    out, done = emit(out, done, step, next_token(logits[:, 0], step))
    return step + 1, cache, cache_valid, out, done

  _, _, _, out, _ = jax.lax.while_loop(cond, body, (1, cache, cache_valid, out, done))
  return out


def completion_mask(ids, stop_ids: Sequence[int]):
  """True on the tokens a row generated: up to and including its first stop token.

  ids [..., max_new_tokens] (numpy or JAX) -> bool of the same shape.
  """
  xp = jnp if isinstance(ids, jax.Array) else np
  is_stop = xp.isin(ids, xp.asarray(stop_ids))
  return (xp.cumsum(is_stop, axis=-1) - is_stop) == 0


def training_rows(codec, texts: Sequence[str], ids: np.ndarray) -> dict:
  """Teacher-forcing rows of prompts and what was generated after them.

  Args:
    codec: the generator's `PromptCodec`. texts: [n] prompts. ids: [n, T] generated ids.

  Returns:
    tokens [n, p + T] int32 (left-padded prompt, then the completion), mask [n, p + T] bool
    (real tokens: the prompt and the generated ones), completion [n, T] bool.
  """
  prompt, prompt_mask = codec.encode(texts)
  prompt = prompt.reshape(-1, prompt.shape[-1])[:len(texts)]
  prompt_mask = prompt_mask.reshape(-1, prompt_mask.shape[-1])[:len(texts)]
  completion = completion_mask(ids, codec.stop_ids)
  return {"tokens": np.concatenate([prompt, ids], axis=1).astype(np.int32),
          "mask": np.concatenate([prompt_mask, completion], axis=1), "completion": completion}


def generate_batches(config: ModelConfig, params, prompts: jax.Array, masks: jax.Array,
                     keys: jax.Array, **kwargs) -> jax.Array:
  """`generate_tokens` over prompt batches one after another (bounded KV-cache memory).

  prompts, masks: [batches, b, p]; keys: [batches] -> [batches, b, max_new_tokens].
  """
  return jax.lax.map(lambda xs: generate_tokens(config, params, *xs, **kwargs),
                     (prompts, masks, keys))


def token_generator(config: ModelConfig, sampling: Sampling, *, stop_ids: Sequence[int],
                    pad_id: int, layer_loop: Optional[str] = None) -> Callable:
  """The pure generation function `(params, prompts, masks, keys) -> ids` (not yet jitted).

  prompts, masks: [batches, b, p] (`PromptCodec.encode`); keys: [batches] (`batch_keys`);
  ids: [batches, b, max_new_tokens] int32.
  """
  sampling.validate()
  layer_loop = default_layer_loop() if layer_loop is None else layer_loop
  _check_layer_loop(layer_loop)
  return lambda params, prompts, masks, keys: generate_batches(
      config, params, prompts, masks, keys, sampling=sampling, stop_ids=stop_ids, pad_id=pad_id,
      layer_loop=layer_loop)


def batch_keys(sampling: Sampling, key: Optional[jax.Array], batches: int) -> jax.Array:
  """One sampling key per prompt batch, `fold_in(key, batch)`. Greedy decoding draws nothing,
  so it needs no key; sampling with temperature > 0 requires one (`rng.key(seed, "sampling")`)."""
  if key is None:
    if sampling.temperature > 0:
      raise InputError("sampling with temperature > 0 needs an explicit PRNG key.")
    key = jax.random.key(0)  # never drawn from: greedy decoding ignores it
  return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batches))


class Generator:
  """Tokenise -> `token_generator` -> detokenise, for one loaded model, its base or members.

  One call per chunk of members covers every prompt batch, so each member is perturbed once.
  """

  def __init__(self, config: ModelConfig, params, tokenizer, sampling: Sampling, *,
               batch_size: int, chat: bool, stop_strings: Sequence[str] = (),
               member_axis: str = "map", perturb: Optional[PerturbSpec] = None,
               layer_loop: Optional[str] = None):
    """`perturb` defaults to independent noise over every leaf and layer of the model."""
    self.codec = PromptCodec(tokenizer, batch_size=batch_size, chat=chat,
                             stop_strings=stop_strings)
    self.perturb = PerturbSpec(stacked=llm_model.STACKED_LEAVES) if perturb is None else perturb
    if self.perturb.stacked != llm_model.STACKED_LEAVES:
      raise ValueError(f"a language model's PerturbSpec needs stacked="
                       f"{llm_model.STACKED_LEAVES!r} (one noise draw per layer), got "
                       f"{self.perturb.stacked!r}")
    self.config, self.params, self.sampling = config, params, sampling
    run = token_generator(config, sampling, stop_ids=self.codec.stop_ids,
                          pad_id=self.codec.pad_id, layer_loop=layer_loop)
    self._base = jax.jit(run)
    self._population = population.population_fn(run, member_axis=member_axis, spec=self.perturb)

  def base_token_ids(self, texts: Sequence[str], key: Optional[jax.Array] = None,
                     params=None) -> np.ndarray:
    """Continuations, [prompts, max_new_tokens] token ids, of the base model or of `params`
    (e.g. a member rebuilt with `rebuild_member`), through the same compiled program."""
    tokens, mask = self.codec.encode(texts)
    params = self.params if params is None else params
    keys = batch_keys(self.sampling, key, len(tokens))
    out = distributed.to_host(self._base(params, tokens, mask, keys))
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
    key (irrelevant when greedy, the RandOpt protocol).
    """
    tokens, mask = self.codec.encode(texts)
    keys = batch_keys(self.sampling, key, len(tokens))
    params = self.params if params is None else params
    for part, out in population.iter_population(self._population, params, seeds, sigmas,
                                                chunk_size=members_per_batch, mesh=mesh,
                                                args=(tokens, mask, keys)):
      yield part, out.reshape(out.shape[0], -1, out.shape[-1])[:, :len(texts)]

  def generate_population(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str],
                          **kwargs) -> Iterator[tuple[slice, list[list[str]]]]:
    """Yields (members slice, [members][prompts] texts); arguments as `population_token_ids`."""
    for part, ids in self.population_token_ids(seeds, sigmas, texts, **kwargs):
      yield part, [[self.codec.decode(row) for row in member] for member in ids]
