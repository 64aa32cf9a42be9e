"""Gaussian weight perturbations as pure maps `(params, key, sigma) -> params`.

A population member is identified by two numbers, `(seed, sigma)`; `member_key(seed)` and
`perturb` rebuild its parameters bit for bit, inside `jit`, from the base parameters. Nothing is
applied in place, so "restoring" the base is exact by construction.

Noise modes (see METHOD.md §1):
  * "independent" (default): leaf i draws from `fold_in(member_key, i)`, i the leaf's index in
    the sorted list of pytree paths; layer l of a stacked `[layers, ...]` leaf draws from
    `fold_in(fold_in(member_key, i), l)`. Every leaf and every layer gets its own noise.
  * "upstream": the reference code's behaviour, kept for comparison with published numbers:
    every leaf draws from the member key itself, so equal-shaped tensors (and all layers of a
    stacked leaf) receive identical noise.
"""

import re
from typing import Any, Optional

import jax
import jax.numpy as jnp

PyTree = Any

MODES = ("independent", "upstream")
# Keeps the member stream apart from any other use of `jax.random.key(seed)` with the same int.
_PERTURBATION_STREAM = 0x7E7B


def member_key(seed) -> jax.Array:
  """The PRNG key of the member with integer `seed` (a Python int or a traced int32)."""
  return jax.random.fold_in(jax.random.key(seed), _PERTURBATION_STREAM)


def path_name(path) -> str:
  """'layers/attn/q_proj/kernel' for a pytree key path."""
  parts = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def leaf_names(params: PyTree) -> list[str]:
  """Path names of the leaves of `params`, in `jax.tree` flattening order."""
  return [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def stable_leaf_indices(params: PyTree) -> list[int]:
  """Each leaf's index in the sorted list of path names: independent of dict insertion order."""
  names = leaf_names(params)
  rank = {name: i for i, name in enumerate(sorted(names))}
  return [rank[name] for name in names]


def _validate(mode: str, include: Optional[str], stacked: Optional[str]) -> None:
  if mode not in MODES:
    raise ValueError(f"unknown perturbation mode {mode!r}; known: {', '.join(MODES)}")
  for pattern in (include, stacked):
    if pattern is not None:
      re.compile(pattern)


def _leaf_noise(key, index: int, shape, mode: str, is_stacked: bool) -> jax.Array:
  """Standard normal noise [shape]; a stacked leaf's layer l draws from fold_in(leaf key, l)."""
  if mode == "upstream":
    noise = jax.random.normal(key, shape[1:] if is_stacked else shape, jnp.float32)
    return jnp.broadcast_to(noise, shape)
  leaf_key = jax.random.fold_in(key, index)
  if not is_stacked:
    return jax.random.normal(leaf_key, shape, jnp.float32)
  layer_noise = lambda layer: jax.random.normal(jax.random.fold_in(leaf_key, layer), shape[1:],
                                                jnp.float32)
  return jax.vmap(layer_noise)(jnp.arange(shape[0]))


def _leaf_std(leaf: jax.Array, is_stacked: bool) -> jax.Array:
  """std of the leaf (per layer for a stacked leaf), broadcastable against the leaf."""
  axes = tuple(range(1, leaf.ndim)) if is_stacked else None
  return jnp.std(leaf.astype(jnp.float32), axis=axes, keepdims=True)


def perturb(params: PyTree, key: jax.Array, sigma, *, mode: str = "independent",
            relative: bool = False, include: Optional[str] = None,
            stacked: Optional[str] = None) -> PyTree:
  """Returns θ + σ·ε for one member.

  Args:
    params: base parameters θ, any pytree of arrays. Non-floating leaves are left alone.
    key: the member's key, `member_key(seed)`.
    sigma: scalar noise scale (may be traced, so a vmapped population mixes sigmas).
    mode: "independent" or "upstream" (module docstring).
    relative: scale σ by each leaf's std (per layer for stacked leaves).
    include: regex searched in each leaf's path name; only matching leaves are perturbed.
      Leaf indices are computed over all leaves, so a leaf's noise does not depend on `include`.
    stacked: regex of path names whose leading axis stacks layers (a scanned `[layers, ...]`).

  Returns:
    A pytree like `params`, each leaf in its own dtype (noise is added in float32).
  """
  _validate(mode, include, stacked)
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  names = [path_name(p) for p, _ in flat]
  indices = stable_leaf_indices(params)
  out = []
  for name, index, (_, leaf) in zip(names, indices, flat):
    leaf = jnp.asarray(leaf)
    if not jnp.issubdtype(leaf.dtype, jnp.floating) or (
        include is not None and not re.search(include, name)):
      out.append(leaf)
      continue
    is_stacked = stacked is not None and re.search(stacked, name) is not None
    scale = sigma * _leaf_std(leaf, is_stacked) if relative else sigma
    noise = _leaf_noise(key, index, leaf.shape, mode, is_stacked)
    out.append((leaf.astype(jnp.float32) + scale * noise).astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def rebuild_member(params: PyTree, seed: int, sigma: float, **perturb_kwargs) -> PyTree:
  """θ_i from the member's `(seed, sigma)`: the same bits as inside any population call."""
  build = jax.jit(lambda p, seed, sigma: perturb(p, member_key(seed), sigma, **perturb_kwargs))
  return build(params, jnp.int32(seed), jnp.float32(sigma))
