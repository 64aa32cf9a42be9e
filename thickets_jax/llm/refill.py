"""Slot-refill (continuous) batching: a finished row's slot takes the next (member, prompt), so
no row-step waits for the longest row of a batch.

A call generates Q prompts under each of M members (factored low-rank, materialised, or M = 1
without members), in M * S slots, rows [M * S] member-major as in `generate.generate_tokens`.
The slots form groups, each with its own queue of (member, prompt) pairs, taken in order:

- materialised members (and M = 1): one group per member, its S slots and its Q prompts (a
  member's weights exist only for its own rows);
- factored members: one group of all M * S slots and the M * Q pairs, member by member. Rows
  carry their member (`factored.assign_rows`), so slots of any member share a call, and only
  the chunk's last pairs drain the slots, not each member's.

One compiled `lax.while_loop` alternates two phases, with no host round trip per token:

1. Refill. Every free slot takes the next pair its group has staged. A group with a free slot
   and nothing staged first stages its next R pairs (`refill_size`: by default a quarter of
   its slots) in one prefill call, which attends to the shared prefix of their member (kept
   once per member beside the slots' cache, `model.Transformer`'s `prefix`) and draws each
   pair's first token. So slots refill one at a time, as they free, while prompts are
   prefilled R together (a one-prompt call costs more per prompt).
2. Decode. Every slot runs one token. Each row writes its key and value at its own slot, and
   keeps its own RoPE positions, so rows at different steps share the call.

Each row's cache region has the layout of `generate.generate_tokens`: the left-padded prompt
(p slots), then n new tokens, after the prefix. A row attends to the same slots in the same
order, and its sampling key depends only on its prompt and step (`generate.step_keys`). So every
(member, prompt) gets the tokens `generate.token_generator` gives it.
"""

from typing import NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax.errors import InputError
from thickets_jax.llm import chunk, generate
from thickets_jax.llm.config import ModelConfig


class _Stage(NamedTuple):
  """Pairs prefilled ahead of a free slot, R per group, each [groups, R, ...]; they move into
  their group's slots in order, one to each slot that frees."""
  cache: object  # their keys and values, [groups, R, (layers,) kv, p, hd] per leaf
  positions: jax.Array  # [groups, R, p] RoPE position of each prompt slot, -1 if padding
  member: jax.Array
  prompt: jax.Array
  first: jax.Array  # the first token each drew
  length: jax.Array  # real tokens before it (prefix and prompt)
  rows: jax.Array  # [groups] pairs staged
  moved: jax.Array  # [groups] of them moved into slots


class _State(NamedTuple):
  """The loop state. Row arrays are [M * S], member-major (groups of consecutive slots)."""
  cache: object  # the KV cache, laid out as `generate.empty_cache` lays out M * S rows
  positions: jax.Array  # [M * S, p + n] RoPE position of each cached slot, -1 if unused
  member: jax.Array  # the member each row serves (fixed unless the members share slots)
  prompt: jax.Array  # the prompt each row serves, -1 before its first
  step: jax.Array  # tokens the row has generated
  last: jax.Array  # its last token
  done: jax.Array  # free: ended, or never filled
  length: jax.Array  # real tokens before its first new one (prefix and prompt)
  queue: jax.Array  # [groups] pairs each group has staged
  stage: _Stage
  out: jax.Array  # [M, Q, n] generated ids, padded
  steps: jax.Array  # decode steps run
  prefills: jax.Array  # prefill calls run


def _leading(leaf, split: bool) -> int:
  """1 for a stacked cache leaf [layers, rows..., kv, slots, hd], 0 for a per-layer one."""
  return leaf.ndim - 4 - split


def _write_each_row(leaf, new, slot, split: bool):
  """Writes each row's new keys or values [..., rows..., kv, t, hd] at its own slot.

  `slot` is [M, S], one index per row."""
  write = lambda c, n, i: jax.lax.dynamic_update_slice_in_dim(c, n.astype(c.dtype), i, 1)
  index = slot if split else slot.reshape(-1)
  for _ in range(index.ndim):
    write = jax.vmap(write)
  if _leading(leaf, split):
    write = jax.vmap(write, in_axes=(0, 0, None))
  return write(leaf, new, index)


def _write_rows(leaf, new, slot, split: bool):
  """Writes the prompts' keys or values of R rows per group, new [groups, R, ..., kv, p, hd]
  (`_Stage.cache`), at slots [0, p) of the group's slots `slot` [groups, R]. An index equal to
  the group's slots is not written."""
  count, per_member = slot.shape
  lead = _leading(leaf, split)
  slots = leaf.shape[lead + 1] if split else leaf.shape[lead] // count
  member = jnp.broadcast_to(jnp.arange(count)[:, None], slot.shape)
  rows = (member, slot) if split else (
      jnp.where(slot < slots, member * slots + slot, count * slots),)
  new = jnp.moveaxis(new, (0, 1), (lead, lead + 1))
  index = (slice(None),) * lead + rows + (slice(None), slice(0, new.shape[-2]))
  return leaf.at[index].set(new.astype(leaf.dtype), mode="drop")


def _by_group(leaf, groups: int, split: bool):
  """A prefill's keys or values [(layers,) rows..., kv, p, hd], rows member-major (or [M, R]
  when split), as [groups, R, (layers,) kv, p, hd]."""
  lead = _leading(leaf, split)
  leaf = leaf.reshape(*leaf.shape[:lead], groups, -1, *leaf.shape[-3:])
  return jnp.moveaxis(leaf, (lead, lead + 1), (0, 1))


def shares_slots(members) -> bool:
  """Whether a call's members share one group of slots: factored members, whose rows carry
  their member (module docstring)."""
  return members is not None and not isinstance(members, chunk.MaterialisedMembers)


def refill_tokens(config: ModelConfig, params, prompts: jax.Array, masks: jax.Array,
                  keys: jax.Array, *, sampling: generate.Sampling, stop_ids: Sequence[int],
                  pad_id: int, slots: int, refill_rows: Optional[int] = None,
                  layer_loop: str = "scan", prefix_kv=None,
                  members: Optional[dict] = None) -> tuple:
  """Continuations of Q left-padded prompts under each of M members, in S slots per member.

  Args:
    prompts, masks: [Q, p] left-padded prompts and their real tokens. keys: [Q], each prompt's
      sampling key (`generate.prompt_keys`).
    slots: S, decode rows per member (factored members share the M * S). refill_rows: the
      pairs one prefill stages for a group (`refill_size`).
    prefix_kv, members, sampling, stop_ids, pad_id, layer_loop: as
      `generate.generate_tokens`. Probability averaging decodes every member in lockstep, so
      it is refused here.

  Returns:
    ids [M, Q, n] int32, with `pad_id` after a stop token, the same as
    `generate.generate_tokens` gives; the decode steps run and the prefill calls run, scalars.
    Useful decode row-steps are Σ(length − 1) over (member, prompt), out of steps × M × S.
  """
  if sampling.average_members:
    raise ValueError("probability averaging decodes the members in lockstep; use "
                     "generate.token_generator")
  queued, p = prompts.shape
  count = chunk.count(members)
  split = isinstance(members, chunk.MaterialisedMembers)
  groups = 1 if shares_slots(members) else count
  n = sampling.max_new_tokens
  width, rows = p + n, count * slots
  per_group, pairs = rows // groups, count * queued // groups  # a group's slots and queue
  per_stage = refill_size(per_group, refill_rows)
  shared = 0 if prefix_kv is None else jax.tree.leaves(prefix_kv)[0].shape[-2]
  model = generate.member_runner(config, params, members, layer_loop)

  def run(member, *args, **kwargs):
    """The model on rows of members `member` [b] (member-major unless they share slots)."""
    if groups != count:
      kwargs["row_members"] = member
    return model(*args, prefix=prefix_kv, **kwargs)

  stop = jnp.asarray(stop_ids, jnp.int32)
  cache = generate.empty_cache(config, rows, width, layer_loop, members,
                               sampling.cache_dtype)
  # A placeholder of one slot: a prefill reads only the prefix and its own tokens.
  prefill_cache = generate.empty_cache(config, groups * per_stage, 1, layer_loop, members)

  def prefill(queue: jax.Array, take: jax.Array) -> _Stage:
    """The `take` [groups] pairs that follow `queue` [groups] in each group's queue, staged."""
    pair = jnp.arange(groups)[:, None] * pairs + jnp.minimum(
        queue[:, None] + jnp.arange(per_stage)[None], pairs - 1)  # member-major
    member, prompt = pair // queued, pair % queued
    mask = masks[prompt].reshape(-1, p)
    positions = shared + jnp.maximum(jnp.cumsum(mask, axis=1) - 1, 0)
    logits, new_kv = run(member.reshape(-1), prompts[prompt].reshape(-1, p), positions,
                         prefill_cache, None, None, mask, last_only=True)
    first = generate.pick_token(logits[:, -1], generate.step_keys(keys[prompt.reshape(-1)], 0),
                                sampling, stop)
    by_group = lambda a: a.reshape(groups, per_stage, *a.shape[1:])
    return _Stage(cache=jax.tree.map(lambda c: _by_group(c, groups, split), new_kv),
                  positions=by_group(jnp.where(mask, positions, -1)), member=member,
                  prompt=prompt, first=by_group(first), length=by_group(shared + mask.sum(1)),
                  rows=take, moved=jnp.zeros_like(take))

  def free_slots(st: _State) -> jax.Array:
    """[groups, slots of a group]: slots whose row has ended or never started."""
    return st.done.reshape(groups, per_group)

  def needs_stage(st: _State) -> jax.Array:
    """[groups]: a free slot, nothing staged left, and pairs left to stage."""
    free = free_slots(st).any(axis=1)
    return free & (st.stage.moved == st.stage.rows) & (st.queue < pairs)

  def stage(st: _State) -> _State:
    need = needs_stage(st)
    take = jnp.where(need, jnp.minimum(per_stage, pairs - st.queue), 0)
    new = prefill(st.queue, take)
    keep_or_new = lambda a, b: jnp.where(need.reshape(-1, *(1,) * (a.ndim - 1)), a, b)
    return st._replace(stage=jax.tree.map(keep_or_new, new, st.stage), queue=st.queue + take,
                       prefills=st.prefills + 1)

  def wants_refill(st: _State) -> jax.Array:
    free = free_slots(st).any(axis=1)
    return jnp.any(free & ((st.stage.moved < st.stage.rows) | (st.queue < pairs)))

  def refill(st: _State) -> _State:
    """Stages pairs where a group needs them, then moves staged pairs into free slots."""
    st = jax.lax.while_loop(lambda s: jnp.any(needs_stage(s)), stage, st)
    free = free_slots(st)
    order = jnp.argsort(~free, axis=1, stable=True)[:, :per_stage]  # free slots first
    take = jnp.minimum(free.sum(axis=1), st.stage.rows - st.stage.moved)
    taken = jnp.arange(per_stage)[None] < take[:, None]  # [groups, R]
    slot = jnp.where(taken, order, per_group)
    source = jnp.minimum(st.stage.moved[:, None] + jnp.arange(per_stage)[None], per_stage - 1)
    take_rows = jax.vmap(lambda a, i: a[i])  # rows i [R] of a group's [R, ...], per group
    moving = jax.tree.map(lambda a: take_rows(a, source),
                          st.stage._replace(rows=None, moved=None))
    first = moving.first.reshape(-1)
    row_positions = jnp.concatenate(
        [moving.positions.reshape(-1, p), jnp.full((first.shape[0], n), -1)], axis=1)
    row = jnp.where(taken, jnp.arange(groups)[:, None] * per_group + slot, rows).reshape(-1)
    put = lambda a, value: a.at[row].set(value, mode="drop")
    out = st.out.at[jnp.where(taken, moving.member, count), moving.prompt, 0].set(
        moving.first, mode="drop")
    return st._replace(
        cache=jax.tree.map(lambda c, new: _write_rows(c, new, slot, split), st.cache,
                           moving.cache),
        positions=put(st.positions, row_positions.astype(jnp.int32)),
        member=put(st.member, moving.member.reshape(-1)),
        prompt=put(st.prompt, moving.prompt.reshape(-1)), step=put(st.step, 1),
        last=put(st.last, first), done=put(st.done, jnp.isin(first, stop) | (n == 1)),
        length=put(st.length, moving.length.reshape(-1)), out=out,
        stage=st.stage._replace(moved=st.stage.moved + take))

  def decode(st: _State) -> _State:
    active = ~st.done
    slot = p + st.step - 1  # where each row's last token goes
    position = st.length + st.step - 1
    logits, new_kv = run(st.member, st.last[:, None], position[:, None], st.cache, None,
                         st.positions, jnp.ones((rows, 1), bool))
    token = generate.pick_token(
        logits[:, 0], generate.step_keys(keys[jnp.maximum(st.prompt, 0)], st.step), sampling,
        stop)
    step = st.step + active
    return st._replace(
        cache=jax.tree.map(lambda c, new: _write_each_row(
            c, new, slot.reshape(groups, per_group), split), st.cache, new_kv),
        positions=st.positions.at[jnp.arange(rows), jnp.where(active, slot, width)].set(
            position, mode="drop"),
        out=st.out.at[st.member, jnp.where(active, st.prompt, queued), st.step].set(
            token, mode="drop"),
        step=step, last=jnp.where(active, token, st.last),
        done=st.done | (active & (jnp.isin(token, stop) | (step == n))),
        steps=st.steps + jnp.any(active))

  def busy(st: _State):
    return jnp.any(~st.done) | jnp.any(st.stage.moved < st.stage.rows) | jnp.any(
        st.queue < pairs)

  def body(st: _State) -> _State:
    return decode(jax.lax.while_loop(wants_refill, refill, st))

  initial = jnp.full((groups,), min(per_stage, pairs), jnp.int32)  # every slot starts free
  start = _State(cache=cache, positions=jnp.full((rows, width), -1, jnp.int32),
                 member=jnp.repeat(jnp.arange(count, dtype=jnp.int32), slots),
                 prompt=jnp.full((rows,), -1, jnp.int32), step=jnp.zeros((rows,), jnp.int32),
                 last=jnp.full((rows,), pad_id, jnp.int32), done=jnp.ones((rows,), bool),
                 length=jnp.zeros((rows,), jnp.int32), queue=initial,
                 stage=prefill(jnp.zeros((groups,), jnp.int32), initial),
                 out=jnp.full((count, queued, n), pad_id, jnp.int32),
                 steps=jnp.zeros((), jnp.int32), prefills=jnp.ones((), jnp.int32))
  end = jax.lax.while_loop(busy, body, start)
  return end.out, end.steps, end.prefills


def refill_size(group_slots: int, refill_rows: Optional[int]) -> int:
  """Pairs one prefill stages for a group of slots (a member's, or a factored chunk's shared
  ones): `refill_rows`, by default a quarter of the group."""
  return max(1, group_slots // 4) if refill_rows is None else min(refill_rows, group_slots)


def refill_steps(lengths: np.ndarray, slots: int, shared: bool = False) -> int:
  """The decode steps `refill_tokens` runs for completions of these lengths, replayed on the
  host: lengths [M, Q] (tokens generated, `generate.completion_mask` summed; ≥ 1) -> steps. A
  row of length L takes L − 1 decode steps after its prefill, a free slot takes its group's
  next pair before the next step (however many pairs a prefill stages), and the members step
  together. `shared`: the members share their M * S slots (`shares_slots`), one queue of
  M * Q pairs."""
  count, queued = lengths.shape
  if shared and count > 1:
    return refill_steps(lengths.reshape(1, -1), count * slots)
  left_steps = np.zeros((count, slots), np.int64)  # decode steps each slot's row still needs
  queue, steps = np.zeros(count, np.int64), 0
  while (left_steps > 0).any() or (queue < queued).any():
    for m in range(count):
      while queue[m] < queued and (left_steps[m] == 0).any():  # a length-1 row frees its slot
        slot = np.flatnonzero(left_steps[m] == 0)[:queued - queue[m]]
        left_steps[m, slot] = lengths[m, queue[m]:queue[m] + len(slot)] - 1
        queue[m] += len(slot)
    steps += int((left_steps > 0).any())
    left_steps = np.maximum(left_steps - 1, 0)
  return steps


def batch_steps(lengths: np.ndarray, batch_size: int) -> int:
  """The decode steps `generate.generate_batches` runs for completions of these lengths:
  lengths [M, Q] (members together) -> Σ over prompt batches of the longest row's length − 1."""
  batches = lengths.reshape(lengths.shape[0], -1, batch_size)
  return int((batches.max(axis=(0, 2)) - 1).sum())


def check_slots(slots: int, refill_rows: Optional[int],
                names: tuple[str, str] = ("--batch_size", "--refill_rows")) -> None:
  """One sentence unless 1 ≤ refill_rows ≤ slots (None: the default); `names` are their flags
  (a run's slots are its --batch_size)."""
  if slots <= 0:
    raise InputError(f"{names[0]} must be positive, got {slots}.")
  if refill_rows is not None and not 0 < refill_rows <= slots:
    raise InputError(f"{names[1]} must be between 1 and {names[0]} ({slots}), got "
                     f"{refill_rows}.")


def refill_generator(config: ModelConfig, sampling: generate.Sampling, *,
                     stop_ids: Sequence[int], pad_id: int, slots: int,
                     refill_rows: Optional[int] = None,
                     layer_loop: Optional[str] = None):
  """`refill_tokens` behind `generate.token_generator`'s signature, `(params, prompts, masks,
  keys, prefix, members=None) -> ids [batches, M * b, n]`: the prompt batches of a call are one
  queue, the shared prefix is prefilled once per member (not yet jitted)."""
  sampling.validate()
  check_slots(slots, refill_rows)
  layer_loop = generate.default_layer_loop() if layer_loop is None else layer_loop

  def run(params, prompts, masks, keys, prefix, members=None):
    batches, per_batch, p = prompts.shape
    prefix_kv = None
    if prefix.shape[0]:
      prefix_kv = generate.prefill_prefix(config, params, prefix, members=members,
                                          layer_loop=layer_loop,
                                          cache_dtype=sampling.cache_dtype)
    out, _, _ = refill_tokens(config, params, prompts.reshape(-1, p), masks.reshape(-1, p),
                           keys.reshape(-1), sampling=sampling, stop_ids=stop_ids,
                           pad_id=pad_id, slots=slots, refill_rows=refill_rows,
                           layer_loop=layer_loop, prefix_kv=prefix_kv, members=members)
    count = out.shape[0]
    return out.reshape(count, batches, per_batch, -1).swapaxes(0, 1).reshape(
        batches, count * per_batch, -1)
  return run
