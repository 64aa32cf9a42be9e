"""Batched generation with a KV cache, for one model or a population of perturbed members.

The core is pure: `token_generator(...)` returns `(params, prompts, masks, keys, prefix) -> ids`.
Prompts are left-padded to a length bucket (`codec.PromptCodec`), so all rows write the same
cache slot each step and one compiled program serves every batch of a bucket. The token prefix
all prompts share (chat template, instruction, few-shot examples) is prefilled once and its
keys and values copied to every row; each prompt's own tokens are then prefilled together
(projecting only the last position to the vocabulary); decode is a `lax.while_loop` that ends
when every row has stopped or `max_new_tokens` is reached.

`llm.refill` decodes the same tokens with slot refill; `llm.generator.Generator` wraps either
with tokenisation and member chunks.
"""

import dataclasses
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax.errors import InputError
from thickets_jax.llm import chunk, factored, kv_cache
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.config import ModelConfig


CACHE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


@dataclasses.dataclass(frozen=True)
class Sampling:
  """Decoding settings. `temperature == 0` is greedy. `ignore_eos` forbids the stop tokens
  (their logits are masked, as transformers' `min_new_tokens = max_new_tokens`), so exactly
  `max_new_tokens` are decoded (benchmarks). `average_members`: the M members of a call decode
  one sequence per prompt together, each token picked from the mean of their next-token
  probabilities (`_pick_from_mean`): the probability-averaging ensemble. `cache_dtype`: the KV
  cache's dtype (`CACHE_DTYPES`; None: the model's), e.g. "bfloat16" halves a float32 model's
  cache and what each decode step reads of it."""
  max_new_tokens: int
  temperature: float = 0.0
  top_p: float = 1.0
  ignore_eos: bool = False
  average_members: bool = False
  cache_dtype: Optional[str] = None

  def validate(self) -> None:
    if self.max_new_tokens <= 0:
      raise InputError(f"max_new_tokens must be positive, got {self.max_new_tokens}.")
    if self.temperature < 0:
      raise InputError(f"temperature must be >= 0, got {self.temperature}.")
    if not 0 < self.top_p <= 1:
      raise InputError(f"top_p must be in (0, 1], got {self.top_p}.")
    if self.cache_dtype is not None and self.cache_dtype not in CACHE_DTYPES:
      raise InputError(f"unknown KV cache dtype {self.cache_dtype!r}; known: "
                       f"{', '.join(CACHE_DTYPES)}.")


def _pick(logits: jax.Array, keys: jax.Array, sampling: Sampling) -> jax.Array:
  """Next token per row. logits [b, vocab] float32, keys [b] (each row's key of this step,
  `step_keys`; unused when greedy) -> [b] int32."""
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
  return jax.vmap(jax.random.categorical)(keys, logits).astype(jnp.int32)


def step_keys(prompt_keys: jax.Array, steps) -> jax.Array:
  """Each row's key for the token it is generating: `fold_in(prompt key, step)`. prompt_keys
  [b] (`prompt_keys`), steps: scalar or [b] -> [b]. A row's draws depend on its prompt and
  step only, not on its batch, its slot or the other rows."""
  steps = jnp.broadcast_to(steps, prompt_keys.shape)
  return jax.vmap(jax.random.fold_in)(prompt_keys, steps)


def pick_token(logits: jax.Array, keys: jax.Array, sampling: Sampling,
               stop: jax.Array) -> jax.Array:
  """`_pick` after forbidding the stop tokens under `ignore_eos`: logits [b, vocab], keys [b]
  (`step_keys`), stop [stops] int32 -> [b] int32."""
  if sampling.ignore_eos:
    logits = logits.at[:, stop].set(-jnp.inf)
  return _pick(logits, keys, sampling)


def _pick_from_mean(logits: jax.Array, keys: jax.Array, sampling: Sampling,
                    members: int) -> jax.Array:
  """Next token of every prompt under M members together: logits [M * b, vocab] member-major,
  keys [b] -> [M * b] int32, each prompt's token repeated for its M rows. Greedy takes the
  argmax of the mean of the members' softmax; sampling draws from that mean, the members'
  softmax at the temperature, then top-p over the mixture."""
  logits = logits.reshape(members, -1, logits.shape[-1]).astype(jnp.float32)
  temperature = sampling.temperature or 1.0
  mean = jnp.mean(jax.nn.softmax(logits / temperature, axis=-1), axis=0)  # [b, vocab]
  mixed = dataclasses.replace(sampling, temperature=1.0 if sampling.temperature else 0.0)
  return jnp.tile(_pick(jnp.log(mean), keys, mixed), members)


LAYER_LOOPS = ("scan", "unrolled")


def default_layer_loop() -> str:
  """The default layer loop: "unrolled" on GPUs (B5: 33% -> 59% of the roofline bound, see
  `model.Transformer`), else "scan" (on CPU unrolled measured no faster; TPUs unmeasured)."""
  return "unrolled" if jax.default_backend() == "gpu" else "scan"


def _check_layer_loop(layer_loop: str) -> None:
  if layer_loop not in LAYER_LOOPS:
    raise InputError(f"unknown layer loop {layer_loop!r}; known: {', '.join(LAYER_LOOPS)}.")


def member_runner(config: ModelConfig, params, members, layer_loop: str) -> Callable:
  """`Transformer.apply` over `params` (and factored or materialised `members`) with the layer
  loop's layers bound. Under factored members it also takes `row_members=` [b], each row's
  member (`factored.assign_rows`; default: member-major groups)."""
  _check_layer_loop(layer_loop)
  if isinstance(members, chunk.MaterialisedMembers):
    return chunk.runner(config, members, layer_loop)
  layers = llm_model.layer_list(params) if layer_loop == "unrolled" else None
  model = llm_model.Transformer(config)

  def run(*args, row_members=None, **kwargs):
    variables = {"params": params}
    if members is not None:
      variables[factored.MEMBERS] = members if row_members is None else factored.assign_rows(
          members, row_members, config.num_layers)
    return model.apply(variables, *args, layers=layers, **kwargs)
  return run


def empty_cache(config: ModelConfig, rows: int, slots: int, layer_loop: str, members=None,
                dtype: Optional[str] = None):
  """An empty cache of `rows` rows, [layers, rows, kv, slots, hd] (or per layer); under
  materialised members the rows are split member-major, [layers, M, rows / M, ...]
  (`chunk.runner` reads each member's rows where they lie)."""
  cache = kv_cache.init_cache(config, rows, slots,
                               None if dtype is None else CACHE_DTYPES[dtype])
  if isinstance(members, chunk.MaterialisedMembers):
    cache = jax.tree.map(lambda c: c.reshape(c.shape[0], members.count, -1, *c.shape[2:]), cache)
  return kv_cache.cache_list(cache) if layer_loop == "unrolled" else cache


def prefill_prefix(config: ModelConfig, params, prefix: jax.Array, *,
                   members: Optional[dict] = None, layer_loop: str = "scan",
                   cache_dtype: Optional[str] = None):
  """Keys and values of a prefix [P] every prompt shares, under each of M members (M = 1
  without): the cache `generate_tokens` takes as `prefix_kv`, rows [M], P slots (stacked, or
  per layer when unrolled). They are computed in the model's dtype and then stored in
  `cache_dtype` (`Sampling.cache_dtype`; None: the model's)."""
  count = chunk.count(members)
  shared = prefix.shape[0]
  run = member_runner(config, params, members, layer_loop)
  _, cache = run(jnp.broadcast_to(prefix, (count, shared)),
                 jnp.broadcast_to(jnp.arange(shared), (count, shared)),
                 empty_cache(config, count, shared, layer_loop, members), 0, None,
                 jnp.ones((count, shared), bool), last_only=True)
  if cache_dtype is None:
    return cache
  return jax.tree.map(lambda a: a.astype(CACHE_DTYPES[cache_dtype]), cache)


def generate_tokens(config: ModelConfig, params, prompt: jax.Array, prompt_mask: jax.Array,
                    keys: jax.Array, *, sampling: Sampling, stop_ids: Sequence[int],
                    pad_id: int, layer_loop: str = "scan", prefix_kv=None,
                    members: Optional[dict] = None) -> jax.Array:
  """Continuations of left-padded prompts, optionally after a shared prefix, optionally under
  M factored members.

  Args:
    prompt: [b, p] int32, left-padded. prompt_mask: [b, p] bool, True on real tokens.
    keys: [b] each prompt's sampling key (`prompt_keys`; unused when greedy): its token s is
      drawn from `fold_in(key, s)` under every member.
    stop_ids: tokens that end a row: the stop token is emitted, `pad_id` fills the rest; never
      drawn with `sampling.ignore_eos`.
    pad_id: what fills a row after its stop token.
    layer_loop: "scan" runs the stacked layers in a scan; "unrolled" slices them once, before
      the decode loop, and runs them unrolled (`model.Transformer`). Same tokens, different
      speed and compile time.
    prefix_kv: `prefill_prefix` of P tokens every prompt starts with, left out of `prompt`:
      kept once per member beside the rows' cache (`model.Transformer`'s `prefix`), which
      holds the prompts at slots [0, p) and the new tokens after them. The tokens of the
      prefix inside the prompts (RoPE positions count real tokens), for P rows of prefill
      instead of b × P, and P cache slots per member instead of per row.
    members: a chunk of M members (`chunk`: factored low-rank, or `MaterialisedMembers`):
      every prompt row runs under each member (rows [M * b], member-major).

  Returns:
    [M * b, max_new_tokens] int32 (M = 1 without members); every position after a stop token
    holds `pad_id` (`completion_mask` marks the generated tokens).
  """
  b, p = prompt.shape
  count = chunk.count(members)
  rows = count * b
  shared = 0 if prefix_kv is None else jax.tree.leaves(prefix_kv)[0].shape[-2]
  n = sampling.max_new_tokens
  run = member_runner(config, params, members, layer_loop)
  prompt, prompt_mask = jnp.tile(prompt, (count, 1)), jnp.tile(prompt_mask, (count, 1))
  cache = empty_cache(config, rows, p + n, layer_loop, members, sampling.cache_dtype)
  positions = shared + jnp.maximum(jnp.cumsum(prompt_mask, axis=1) - 1, 0)  # [rows, p]
  prompt_len = shared + prompt_mask.sum(axis=1)  # [rows]
  logits, cache = run(prompt, positions, cache, 0, None, prompt_mask, last_only=True,
                      prefix=prefix_kv)
  cache_positions = jnp.concatenate(  # [rows, p + n], -1 on padding and future slots
      [jnp.where(prompt_mask, positions, -1), jnp.full((rows, n), -1)], axis=1).astype(jnp.int32)
  stop = jnp.asarray(stop_ids, jnp.int32)

  def next_token(logits, step):
    if sampling.average_members:
      if sampling.ignore_eos:
        logits = logits.at[:, stop].set(-jnp.inf)
      return _pick_from_mean(logits, step_keys(keys, step), sampling, count)
    return pick_token(logits, step_keys(jnp.tile(keys, count), step), sampling, stop)

  def emit(out, done, step, token):
    return out.at[:, step].set(jnp.where(done, pad_id, token)), done | jnp.isin(token, stop)

  out, done = emit(jnp.full((rows, n), pad_id, jnp.int32), jnp.zeros((rows,), bool), 0,
                   next_token(logits[:, -1], 0))

  def cond(state):
    step, _, _, _, done = state
    return (step < n) & ~jnp.all(done)

  def body(state):
    step, cache, cache_positions, out, done = state
    slot = p + step - 1  # where the previous token goes
    position = prompt_len + step - 1
    logits, cache = run(out[:, step - 1, None], position[:, None], cache, slot,
                        cache_positions, jnp.ones((rows, 1), bool), prefix=prefix_kv)
    cache_positions = cache_positions.at[:, slot].set(position)
    out, done = emit(out, done, step, next_token(logits[:, 0], step))
    return step + 1, cache, cache_positions, out, done

  _, _, _, out, _ = jax.lax.while_loop(cond, body, (1, cache, cache_positions, out, done))
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
                     keys: jax.Array, prefix: Optional[jax.Array] = None,
                     members: Optional[dict] = None, layer_loop: str = "scan", *,
                     sampling: Sampling, **kwargs) -> jax.Array:
  """`generate_tokens` over prompt batches one after another (bounded KV-cache memory), the
  shared prefix prefilled once for all of them.

  prompts, masks: [batches, b, p]; keys: [batches, b]; prefix: [P] int32 tokens all prompts start
  with (`prefill_prefix`), or None; members: as `generate_tokens`
  -> [batches, M * b, max_new_tokens].
  """
  prefix_kv = None
  if prefix is not None:
    prefix_kv = prefill_prefix(config, params, prefix, members=members, layer_loop=layer_loop,
                               cache_dtype=sampling.cache_dtype)
  return jax.lax.map(lambda xs: generate_tokens(config, params, *xs, prefix_kv=prefix_kv,
                                                members=members, layer_loop=layer_loop,
                                                sampling=sampling, **kwargs),
                     (prompts, masks, keys))


def token_generator(config: ModelConfig, sampling: Sampling, *, stop_ids: Sequence[int],
                    pad_id: int, layer_loop: Optional[str] = None) -> Callable:
  """The pure generation function `(params, prompts, masks, keys, prefix, members=None) -> ids`
  (not yet jitted).

  prompts, masks: [batches, b, p] and prefix [P] (`PromptCodec.encode_shared_prefix`, P may be
  0); keys: [batches, b] (`prompt_keys`); members: as `generate_tokens`; ids: [batches, M * b,
  max_new_tokens] int32.
  """
  sampling.validate()
  layer_loop = default_layer_loop() if layer_loop is None else layer_loop
  _check_layer_loop(layer_loop)
  return lambda params, prompts, masks, keys, prefix, members=None: generate_batches(
      config, params, prompts, masks, keys, prefix if prefix.shape[0] else None, members,
      sampling=sampling, stop_ids=stop_ids, pad_id=pad_id, layer_loop=layer_loop)


def prompt_keys(sampling: Sampling, key: Optional[jax.Array], batches: int,
                batch_size: int) -> jax.Array:
  """One sampling key per prompt, `fold_in(key, prompt index)`: [batches, batch_size]. Greedy
  decoding draws nothing, so it needs no key; sampling with temperature > 0 requires one
  (`rng.key(seed, "sampling")`)."""
  if key is None:
    if sampling.temperature > 0:
      raise InputError("sampling with temperature > 0 needs an explicit PRNG key.")
    key = jax.random.key(0)  # never drawn from: greedy decoding ignores it
  indices = jnp.arange(batches * batch_size).reshape(batches, batch_size)
  return jax.vmap(jax.vmap(lambda i: jax.random.fold_in(key, i)))(indices)
