"""Batched generation with a KV cache, for one model or a population of perturbed members.

Prompts are left-padded to a length bucket, so all rows write the same cache slot each step and
one compiled program serves every batch of a bucket. Prefill runs the whole prompt once
(projecting only the last position to the vocabulary); decode is a `lax.while_loop` that ends
when every row has stopped or `max_new_tokens` is reached.

For a population, `perturb` runs inside the jitted, vmapped call: member parameters exist only
for the members of the chunk being generated and are never stored.
"""

import dataclasses
import functools
from typing import Any, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thickets_jax import distributed, population
from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.config import ModelConfig

PROMPT_BUCKETS = (64, 128, 256, 512, 1024, 2048, 4096)
STACKED_LEAVES = r"^layers/"  # the scanned layers: their leading axis stacks layers


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
  `model.apply_layer_list`), else "scan" (on CPU unrolled measured no faster; TPUs unmeasured)."""
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
    key: sampling key (unused when greedy).
    stop_ids: tokens that end a row (it is not emitted); never drawn with `sampling.ignore_eos`.
    pad_id: what fills a row after it stopped.
    layer_loop: "scan" runs the stacked layers in a scan; "unrolled" slices them once and runs
      them unrolled (`model.apply_layer_list`). Same tokens, different speed and compile time.

  Returns:
    [b, max_new_tokens] int32; after a stop token every position holds `pad_id`.
  """
  b, p = prompt.shape
  n = sampling.max_new_tokens
  slots = p + n
  cache = llm_model.init_cache(config, b, slots)
  _check_layer_loop(layer_loop)
  if layer_loop == "unrolled":
    layers, cache = llm_model.layer_list(params), llm_model.cache_list(cache)
    run = functools.partial(llm_model.apply_layer_list, config, params, layers)
  else:
    model = llm_model.Transformer(config)
    run = lambda *args, **kwargs: model.apply({"params": params}, *args, **kwargs)
  positions = jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)  # [b, p]
  prompt_len = prompt_mask.sum(axis=1)  # [b]
  cache_valid = jnp.concatenate([prompt_mask, jnp.zeros((b, n), bool)], axis=1)  # [b, slots]
  logits, cache = run(prompt, positions, cache, 0, None, prompt_mask, last_only=True)
  stop = jnp.asarray(stop_ids, jnp.int32)

  def next_token(logits, step):
    if sampling.ignore_eos:
      logits = logits.at[:, stop].set(-jnp.inf)
    return _pick(logits, jax.random.fold_in(key, step), sampling)

  def emit(out, done, step, token):
    stopped = done | jnp.isin(token, stop)
    return out.at[:, step].set(jnp.where(stopped, pad_id, token)), stopped

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


def generate_batches(config: ModelConfig, params, prompts: jax.Array, masks: jax.Array,
                     keys: jax.Array, **kwargs) -> jax.Array:
  """`generate_tokens` over prompt batches one after another (bounded KV-cache memory).

  prompts, masks: [batches, b, p]; keys: [batches] -> [batches, b, max_new_tokens].
  """
  return jax.lax.map(lambda xs: generate_tokens(config, params, *xs, **kwargs),
                     (prompts, masks, keys))


class Generator:
  """Tokenise → generate → detokenise for one loaded model, base or population members.

  All prompts of a call are left-padded to one length bucket and split into batches of
  `batch_size` rows (the last padded with empty rows), so a run compiles once per bucket. One
  call per chunk of members covers every prompt batch, so each member is perturbed once.
  """

  def __init__(self, config: ModelConfig, params, tokenizer, sampling: Sampling, *,
               batch_size: int, chat: bool, stop_strings: Sequence[str] = (),
               member_axis: str = "map", perturb_kwargs: Optional[dict] = None,
               layer_loop: Optional[str] = None):
    sampling.validate()
    layer_loop = default_layer_loop() if layer_loop is None else layer_loop
    _check_layer_loop(layer_loop)
    if batch_size <= 0:
      raise InputError(f"the prompt batch size must be positive, got {batch_size}.")
    self.config, self.params, self.tokenizer = config, params, tokenizer
    self.sampling, self.batch_size, self.chat = sampling, batch_size, chat
    self.stop_strings = tuple(stop_strings)
    self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    vocab = tokenizer.get_vocab()
    ends = {tokenizer.eos_token_id} | {vocab[t] for t in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>")
                                       if t in vocab}
    self.stop_ids = tuple(sorted(i for i in ends if i is not None))
    run = lambda params, prompts, masks, keys: generate_batches(
        config, params, prompts, masks, keys, sampling=sampling, stop_ids=self.stop_ids,
        pad_id=self.pad_id, layer_loop=layer_loop)
    self._base = jax.jit(run)
    self._population = population.population_fn(run, member_axis=member_axis,
                                                stacked=STACKED_LEAVES, **(perturb_kwargs or {}))

  def prompt_text(self, user_text: str) -> str:
    if not self.chat:
      return user_text
    return self.tokenizer.apply_chat_template([{"role": "user", "content": user_text}],
                                              tokenize=False, add_generation_prompt=True)

  def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Left-padded ids and mask, [batches, batch_size, bucket], for all prompts."""
    if not texts:
      raise InputError("there are no prompts to generate for.")
    ids = [self.tokenizer(self.prompt_text(t), add_special_tokens=False)["input_ids"] for t in texts]
    longest = max(len(x) for x in ids)
    bucket = next((b for b in PROMPT_BUCKETS if b >= longest), None)
    if bucket is None:
      raise InputError(f"a prompt of {longest} tokens exceeds the largest bucket {PROMPT_BUCKETS[-1]}.")
    batches = -(-len(ids) // self.batch_size)
    tokens = np.full((batches * self.batch_size, bucket), self.pad_id, np.int32)
    mask = np.zeros((batches * self.batch_size, bucket), bool)
    for row, x in enumerate(ids):
      tokens[row, bucket - len(x):] = x
      mask[row, bucket - len(x):] = True
    shape = (batches, self.batch_size, bucket)
    return tokens.reshape(shape), mask.reshape(shape)

  def decode(self, tokens: np.ndarray) -> str:
    """Text of one row, cut at the first stop token and the first stop string."""
    tokens = tokens.tolist()
    for i, t in enumerate(tokens):
      if t in self.stop_ids:
        tokens = tokens[:i]
        break
    text = self.tokenizer.decode(tokens, skip_special_tokens=True)
    for stop in self.stop_strings:
      cut = text.find(stop)
      if cut >= 0:
        text = text[:cut]
    return text

  @staticmethod
  def _keys(key: Optional[jax.Array], batches: int) -> jax.Array:
    key = jax.random.key(0) if key is None else key
    return jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.arange(batches))

  def base_token_ids(self, texts: Sequence[str], key: Optional[jax.Array] = None,
                     params=None) -> np.ndarray:
    """Continuations, [prompts, max_new_tokens] token ids, of the base model or of `params`
    (e.g. a member rebuilt with `rebuild_member`), through the same compiled program."""
    tokens, mask = self.encode(texts)
    params = self.params if params is None else params
    out = distributed.to_host(self._base(params, tokens, mask, self._keys(key, len(tokens))))
    return out.reshape(-1, out.shape[-1])[:len(texts)]

  def generate(self, texts: Sequence[str], key: Optional[jax.Array] = None,
               params=None) -> list[str]:
    return [self.decode(row) for row in self.base_token_ids(texts, key, params)]

  def population_token_ids(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str], *,
                           members_per_batch: int, mesh: Optional[Mesh] = None,
                           key: Optional[jax.Array] = None) -> Iterator[tuple[slice, np.ndarray]]:
    """Yields (members slice, [members, prompts, max_new_tokens] token ids) per chunk of members.

    Members share the sampling key (irrelevant when greedy, the RandOpt protocol).
    """
    tokens, mask = self.encode(texts)
    keys = self._keys(key, len(tokens))
    for part, out in population.iter_population(self._population, self.params, seeds, sigmas,
                                                chunk_size=members_per_batch, mesh=mesh,
                                                args=(tokens, mask, keys)):
      yield part, out.reshape(out.shape[0], -1, out.shape[-1])[:, :len(texts)]

  def generate_population(self, seeds: np.ndarray, sigmas: np.ndarray, texts: Sequence[str],
                          **kwargs) -> Iterator[tuple[slice, list[list[str]]]]:
    """Yields (members slice, [members][prompts] texts); arguments as `population_token_ids`."""
    for part, ids in self.population_token_ids(seeds, sigmas, texts, **kwargs):
      yield part, [[self.decode(row) for row in member] for member in ids]
