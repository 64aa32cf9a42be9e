"""A chunk of members generated together, as member-major rows of one program.

`token_generator` functions take `members=`: the factored low-rank members of a chunk
(`factored.members_collection`, the base matmuls shared by all of them) or `MaterialisedMembers`
(full-rank members built inside the call). Either way every prompt row runs under each of the M
members, rows [M * b] member-major, under one decode loop. This module builds those chunks
(`population_program`) and runs materialised members (`runner`).
"""

import functools
from typing import Any, Callable

import flax
import jax

from thickets_jax import population, rng
from thickets_jax.llm import factored, kv_cache
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.config import ModelConfig
from thickets_jax.perturb import PerturbSpec, member_factors, perturb_member


@flax.struct.dataclass
class MaterialisedMembers:
  """M perturbed parameter trees of one chunk, stacked for one program: leaves [M, ...], the
  stacked layer leaves [layers, M, ...] (`member_axes`), so the layer loop reads each layer's
  members as they lie. Rows are M member-major groups, as under factored members."""
  params: Any

  @property
  def count(self) -> int:
    return jax.tree.leaves(self.params["embed"])[0].shape[0]


def member_axes(params) -> dict:
  """Where the member axis goes in each subtree of stacked members: after the layer axis."""
  return {name: 1 if name == "layers" else 0 for name in params}


def count(members) -> int:
  """M of factored or materialised members (1 for None)."""
  if members is None:
    return 1
  if isinstance(members, MaterialisedMembers):
    return members.count
  return factored.member_count(members)


def runner(config: ModelConfig, members: MaterialisedMembers, layer_loop: str) -> Callable:
  """`Transformer.apply` of each of M materialised members on its own rows [M * b, ...],
  vmapped over the members inside one call: the decode loop that calls it stays outside the
  vmap, so no per-member predicate selects over (and rewrites) the KV cache every step, as a
  vmapped `while_loop` does.

  The cache is member-split, [layers, M, b, ...] (per layer [M, b, ...]; `generate.empty_cache`):
  each member reads its rows where they lie, and the members' new keys and values are written
  after the vmap, in place. Splitting merged rows inside the call, or writing inside the vmap
  (where the update becomes a scatter on a member-major transpose), made XLA copy the whole
  cache every decode step.
  """
  model = llm_model.Transformer(config)
  count, axes = members.count, member_axes(members.params)
  axis = 1 if layer_loop == "scan" else 0  # the member axis of a stacked / per-layer cache

  def one(params, tokens, positions, cache, cache_positions, token_mask, prefix, last_only):
    layers = llm_model.layer_list(params) if layer_loop == "unrolled" else None
    return model.apply({"params": params}, tokens, positions, cache, None, cache_positions,
                       token_mask, last_only=last_only, layers=layers,
                       prefix=prefix)  # new keys/values

  def run(tokens, positions, cache, write_index, cache_positions, token_mask, last_only=False,
          prefix=None):
    split = lambda x: x.reshape(count, -1, *x.shape[1:])  # member-major rows [M * b, ...]
    positions_axis = None if cache_positions is None else 0
    prefix_axis = None if prefix is None else axis  # `prefill_prefix` on M rows, member-split
    logits, new_kv = jax.vmap(functools.partial(one, last_only=last_only),
                              in_axes=(axes, 0, 0, axis, positions_axis, 0, prefix_axis),
                              out_axes=(0, axis))(
        members.params, split(tokens), split(positions), cache,
        None if cache_positions is None else split(cache_positions), split(token_mask), prefix)
    logits = logits.reshape(-1, *logits.shape[2:])
    if write_index is None:  # the caller writes them (`refill`: each row at its own slot)
      return logits, new_kv
    cache = jax.tree.map(lambda c, new: kv_cache.write_slots(c, new, write_index), cache, new_kv)
    return logits, cache
  return run


def _members_fn(run: Callable, build: Callable) -> Callable:
  """`jit` of a `token_generator` function over a chunk of M members built inside the call by
  `build(params, seeds, sigmas)`, all generated together as member-major rows: the signature
  and outputs of `population.population_fn`, f(params, seeds [M], sigmas [M], prompts, masks,
  keys, prefix) -> [M, batches, b, new]."""
  def call(params, seeds, sigmas, prompts, masks, keys, prefix):
    out = run(params, prompts, masks, keys, prefix, members=build(params, seeds, sigmas))
    return out.reshape(out.shape[0], len(seeds), -1, out.shape[-1]).swapaxes(0, 1)
  return jax.jit(call)


def factored_population_fn(run: Callable, spec: PerturbSpec) -> Callable:
  """Low-rank members run factored (`factored.members_collection`): `_members_fn`."""
  def build(params, seeds, sigmas):
    factors = jax.vmap(lambda seed, sigma: member_factors(params, rng.member_key(seed), sigma,
                                                          spec))(seeds, sigmas)
    return factored.members_collection(factors)
  return _members_fn(run, build)


def materialised_population_fn(run: Callable, spec: PerturbSpec) -> Callable:
  """Members materialised together (`MaterialisedMembers`, the member axis of the layer leaves
  after the layer axis): `_members_fn`, with one decode loop for all of them."""
  def build(params, seeds, sigmas):
    perturbed = jax.vmap(lambda seed, sigma: perturb_member(params, seed, sigma, spec),
                         out_axes=member_axes(params))(seeds, sigmas)
    return MaterialisedMembers(perturbed)
  return _members_fn(run, build)


def population_program(run: Callable, spec: PerturbSpec, *, member_axis: str,
                       factored: bool) -> Callable:
  """The jitted call that generates a chunk of members: low-rank members factored
  (`factored_population_fn`); else materialised together with `member_axis` "vmap"
  (`materialised_population_fn`) or one after another with "map" (`population.population_fn`:
  one member's copy in memory at a time)."""
  if factored:
    return factored_population_fn(run, spec)
  if member_axis == "vmap":
    return materialised_population_fn(run, spec)
  return population.population_fn(run, member_axis=member_axis, spec=spec)
