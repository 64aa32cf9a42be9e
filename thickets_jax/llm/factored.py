"""Factored low-rank members inside the model: the `members` variable collection and each row's
share of it.

M members run as M member-major groups of rows `[M * b, ...]`, or, once `assign_rows` gives the
collection each row's member, as rows of any members in any order (slot refill's shared slots).
A weight's member term is `(x a_m) b_mᵀ` for the rows of member m (`low_rank_term`), a vector
leaf's (norm scale, bias) is its member's dense displacement (`with_member_vector`); `llm.model`'s
layers add them to the base computation, which all rows share.
"""

from typing import Optional

import jax
import jax.numpy as jnp

MEMBERS = "members"  # variable collection of factored member displacements
ROWS = "rows"  # in every module scope of the collection: each row's member, [b] int32
_FACTORS = ("a", "b")  # the keys of one weight's low-rank factors


def by_member(x: jax.Array, members: int) -> jax.Array:
  """Member-major rows [M * b, ..., d] -> [M, b * ..., d]."""
  return x.reshape(members, -1, x.shape[-1])


def low_rank_term(x: jax.Array, factors: dict, rows: Optional[jax.Array] = None) -> jax.Array:
  """Each row's member term (x a_m) b_mᵀ. x [b, ..., m], factors {"a": [M, m, r], "b": [M, n, r]},
  rows [b] each row's member (None: b is M member-major groups) -> [b, ..., n] float32.

  With `rows`, x a is taken under every member's a, [b, t, M, r], the other members' columns
  are zeroed, and one contraction over (M, r) gives each row its own term: a rank-M·r matmul
  that reads each member's factors once, where gathering b_m per row would copy [b, n, r]."""
  a, b = factors["a"], factors["b"]
  count, highest = a.shape[0], jax.lax.Precision.HIGHEST
  if rows is None:
    xa = jnp.einsum("gtm,gmr->gtr", by_member(x, count).astype(jnp.float32), a, precision=highest)
    out = jnp.einsum("gtr,gnr->gtn", xa, b, precision=highest)
  else:
    flat = x.reshape(x.shape[0], -1, x.shape[-1]).astype(jnp.float32)
    xa = jnp.einsum("btm,gmr->btgr", flat, a, precision=highest)
    own = jax.nn.one_hot(rows, count, dtype=jnp.float32)[:, None, :, None]
    out = jnp.einsum("btgr,gnr->btn", xa * own, b, precision=highest)
  return out.reshape(*x.shape[:-1], b.shape[1])


def with_member_vector(y: jax.Array, delta: jax.Array, rows: Optional[jax.Array] = None,
                       op=jnp.add) -> jax.Array:
  """op(y, each row's member vector): y [b, ..., n], delta [M, n] (rows: as `low_rank_term`)
  -> [b, ..., n]. `op` is jnp.add for a bias; RMSNorm multiplies by its members' scales."""
  if rows is None:
    return op(by_member(y, delta.shape[0]), delta[:, None, :]).reshape(y.shape)
  return op(y, delta[rows].reshape(y.shape[0], *(1,) * (y.ndim - 2), delta.shape[-1]))


def rows_of(module) -> Optional[jax.Array]:
  """The rows' members (`assign_rows`) in `module`'s scope, or None (member-major rows)."""
  return module.get_variable(MEMBERS, ROWS) if module.has_variable(MEMBERS, ROWS) else None


def members_collection(factors: dict) -> dict:
  """`perturb.member_factors` vmapped over M members (leaves [M, ...]) -> the `members`
  collection, whose stacked layer leaves are [layers, M, ...] (sliced by the layer loop)."""
  return {name: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), sub) if name == "layers" else sub
          for name, sub in factors.items()}


def assign_rows(members: dict, rows: jax.Array, num_layers: int) -> dict:
  """`members` with each row's member: rows [b] int32 in [0, M), in every module scope (ROWS;
  [layers, b] under `layers`, which the layer loop slices), so the rows of one call may belong
  to any members in any order. `layers/attn` always gets it: a shared prefix is kept per
  member, and each row attends to its own member's."""
  def scope(tree, value):
    if not isinstance(tree, dict) or set(tree) == set(_FACTORS):
      return tree
    return {ROWS: value, **{name: scope(sub, value) for name, sub in tree.items()}}
  stacked = jnp.broadcast_to(rows, (num_layers, *rows.shape))
  out = {name: scope(sub, stacked if name == "layers" else rows)
         for name, sub in members.items()}
  layers = out.setdefault("layers", {ROWS: stacked})
  layers.setdefault("attn", {ROWS: stacked})
  return out


def member_count(members: dict) -> int:
  """M of a `members` collection (stacked layer leaves [layers, M, ...], others [M, ...])."""
  for path, leaf in jax.tree_util.tree_leaves_with_path(members):
    names = [getattr(key, "key", None) for key in path]
    if names[-1] != ROWS:
      return leaf.shape[1 if names[0] == "layers" else 0]
  raise ValueError("a members collection without factors")
