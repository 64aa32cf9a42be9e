"""Factored low-rank members inside the model: the `members` variable collection and each row's
share of it.

M members run as M member-major groups of rows `[M * b, ...]`. A weight's member term is
`(x a_m) b_mᵀ` for the rows of member m (`low_rank_term`), a vector leaf's (norm scale, bias) is
its member's dense displacement (`plus_member_vector`); `llm.model`'s layers add them to the base
computation, which all M × b rows share.
"""

import jax
import jax.numpy as jnp

MEMBERS = "members"  # variable collection of factored member displacements


def by_member(x: jax.Array, members: int) -> jax.Array:
  """Member-major rows [M * b, ..., d] -> [M, b * ..., d]."""
  return x.reshape(members, -1, x.shape[-1])


def low_rank_term(x: jax.Array, factors: dict) -> jax.Array:
  """Each row's member term (x a_m) b_mᵀ. x [M * b, ..., m], factors {"a": [M, m, r],
  "b": [M, n, r]} -> [M * b, ..., n] float32."""
  a, b = factors["a"], factors["b"]
  xa = jnp.einsum("gtm,gmr->gtr", by_member(x, a.shape[0]).astype(jnp.float32), a,
                  precision=jax.lax.Precision.HIGHEST)
  out = jnp.einsum("gtr,gnr->gtn", xa, b, precision=jax.lax.Precision.HIGHEST)
  return out.reshape(*x.shape[:-1], b.shape[1])


def plus_member_vector(y: jax.Array, delta: jax.Array) -> jax.Array:
  """y [M * b, ..., n] plus each row's member vector delta [M, n]."""
  return (by_member(y, delta.shape[0]) + delta[:, None, :].astype(y.dtype)).reshape(y.shape)


def members_collection(factors: dict) -> dict:
  """`perturb.member_factors` vmapped over M members (leaves [M, ...]) -> the `members`
  collection, whose stacked layer leaves are [layers, M, ...] (sliced by the layer loop)."""
  return {name: jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), sub) if name == "layers" else sub
          for name, sub in factors.items()}


def member_count(members: dict) -> int:
  """M of a `members` collection (stacked layer leaves [layers, M, ...], others [M, ...])."""
  name, subtree = next(iter(members.items()))
  return jax.tree.leaves(subtree)[0].shape[1 if name == "layers" else 0]
