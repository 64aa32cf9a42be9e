"""Gaussian weight perturbations as pure maps `(params, key, sigma) -> params`.

A population member is identified by `(seed, sigma, spec)`: `spec` (a `PerturbSpec`) says how
noise is drawn and where it goes, and is shared by every member of a run. `perturb` with
`rng.member_key(seed)` rebuilds a member's parameters bit for bit, inside `jit`, from the base
parameters. Nothing is applied in place, so "restoring" the base is exact by construction.

Noise modes (docs/method.md):
  * "independent" (default): leaf i draws from `fold_in(member_key, i)`, i the leaf's index in
    the sorted list of pytree paths; layer l of a stacked `[layers, ...]` leaf draws from
    `fold_in(fold_in(member_key, i), l)`. Every leaf and every layer gets its own noise.
  * "upstream": the reference code's behaviour, kept for comparison with published numbers:
    every leaf draws from the member key itself, so equal-shaped tensors (and all layers of a
    stacked leaf) receive identical noise.

Noise families (`PerturbSpec.noise`):
  * "full" (default): ε ~ N(0, I) on every entry.
  * "lowrank" (EGGROLL-style): every 2-D weight [m, n] (per layer of a stacked leaf) gets
    ε = A Bᵀ / √r with A [m, r] and B [n, r] standard normal, drawn from the leaf's (layer's)
    key split in two; each entry then has variance 1, as under full-rank noise, so σ means the
    same per entry. Leaves of other ranks (biases, norm scales) keep full-rank noise, or are
    left alone with `vector_noise=False`.
"""

import dataclasses
import functools
import re
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import rng, scales, tree
from thickets_jax.errors import InputError

PyTree = Any

MODES = ("independent", "upstream")
NOISE_DTYPES = ("float32", "bfloat16")
NOISE_FAMILIES = ("full", "lowrank")
# Fields added after the first runs were written; a record without them is a full-rank run.
_LATER_FIELDS = {"noise": "full", "rank": 4, "vector_noise": True, "scale": "isotropic",
                 "masses": scales.DEFAULT_MASSES}


@dataclasses.dataclass(frozen=True)
class PerturbSpec:
  """How every member of a population is perturbed; with `(seed, sigma)` it names a member.

  Attributes:
    mode: "independent" or "upstream" (module docstring).
    relative: scale σ by each leaf's std (per layer for stacked leaves).
    include: regex searched in each leaf's path name; only matching leaves are perturbed. Leaf
      indices are computed over all leaves, so a leaf's noise does not depend on `include`.
    stacked: regex of path names whose leading axis stacks layers (a scanned `[layers, ...]`);
      each layer then gets its own noise. A model module exports its pattern
      (`llm.model.STACKED_LEAVES`).
    noise_dtype: dtype the standard normals are drawn in; they are added to θ in float32.
    noise: "full" or "lowrank" (module docstring). rank: r of low-rank noise.
    vector_noise: under low-rank noise, whether leaves that are not 2-D get full-rank noise.
    scale: what each tensor's noise is divided by (`scales.SCALES`, defined in
      `thickets_jax.scales`): "isotropic" (nothing), "frobenius", "natural" or "modular".
    masses: "GROUP=MASS,..." of every module group (`scales.GROUPS`), read by the "modular"
      scale (kept in `scales.canonical_masses` form).
  """
  mode: str = "independent"
  relative: bool = False
  include: Optional[str] = None
  stacked: Optional[str] = None
  noise_dtype: str = "float32"
  noise: str = "full"
  rank: int = 4
  vector_noise: bool = True
  scale: str = "isotropic"
  masses: str = scales.DEFAULT_MASSES

  def __post_init__(self):
    object.__setattr__(self, "masses", scales.canonical_masses(self.masses))
    if self.mode not in MODES:
      raise InputError(f"unknown perturbation mode {self.mode!r}; known: {', '.join(MODES)}.")
    if self.noise_dtype not in NOISE_DTYPES:
      raise InputError(f"unknown noise dtype {self.noise_dtype!r}; known: "
                       f"{', '.join(NOISE_DTYPES)}.")
    if self.noise not in NOISE_FAMILIES:
      raise InputError(f"unknown --noise {self.noise!r}; known: {', '.join(NOISE_FAMILIES)}.")
    if self.noise == "lowrank" and self.mode != "independent":
      raise InputError("low-rank noise needs the independent mode (its factors are drawn from "
                       "each leaf's own key).")
    if self.rank <= 0:
      raise InputError(f"--rank must be positive, got {self.rank}.")
    self._validate_scale()
    for pattern in (self.include, self.stacked):
      if pattern is not None:
        try:
          re.compile(pattern)
        except re.error as e:
          raise InputError(f"{pattern!r} is not a valid regular expression ({e}).") from None

  def _validate_scale(self) -> None:
    if self.scale not in scales.SCALES:
      raise InputError(f"unknown --scale {self.scale!r}; known: {', '.join(scales.SCALES)}.")
    if self.scale != "isotropic" and self.relative:
      raise InputError(f"--relative sets each tensor's σ from its std and --scale {self.scale} "
                       "from its noise's norm: give one of them.")
    if self.scale != "isotropic" and self.noise != "full":
      raise InputError(f"--scale {self.scale} needs full-rank noise (low-rank members are run "
                       "factored, without their tensors' norms).")

  def to_json(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, record: dict) -> "PerturbSpec":
    """The spec `to_json` wrote; unknown or missing fields are refused, never defaulted, except
    the fields added later (`_LATER_FIELDS`), which a record written before them lacks and whose
    defaults are what that run used."""
    fields = {f.name for f in dataclasses.fields(cls)}
    record = {**{k: v for k, v in _LATER_FIELDS.items() if k not in record}, **record}
    if set(record) != fields:
      raise InputError(f"a perturbation record needs exactly the fields {sorted(fields)}, "
                       f"got {sorted(record)}.")
    return cls(**record)


def _leaf_noise(key, index: int, shape, spec: PerturbSpec, is_stacked: bool) -> jax.Array:
  """Standard normal noise [shape]; a stacked leaf's layer l draws from fold_in(leaf key, l)."""
  dtype = jnp.dtype(spec.noise_dtype)
  if spec.mode == "upstream":
    noise = jax.random.normal(key, shape[1:] if is_stacked else shape, dtype)
    return jnp.broadcast_to(noise, shape)
  leaf_key = jax.random.fold_in(key, index)
  core = shape[1:] if is_stacked else shape
  draw = lambda k: jax.random.normal(k, core, dtype)
  if spec.noise == "lowrank" and len(core) == 2:
    draw = lambda k: _low_rank_noise(k, core, spec.rank, dtype)
  elif spec.noise == "lowrank" and not spec.vector_noise:
    return jnp.zeros(shape, dtype)
  return _per_layer(draw, leaf_key, shape, is_stacked)


def _per_layer(draw, leaf_key, shape, is_stacked: bool):
  """`draw(leaf_key)`, or for a stacked leaf layer l's `draw(fold_in(leaf_key, l))`, stacked."""
  if not is_stacked:
    return draw(leaf_key)
  return jax.vmap(lambda layer: draw(jax.random.fold_in(leaf_key, layer)))(jnp.arange(shape[0]))


def _low_rank_factors(key, shape, rank: int, dtype) -> tuple[jax.Array, jax.Array]:
  """A [m, r] and B [n, r], standard normal, of a low-rank draw for a [m, n] core."""
  a_key, b_key = jax.random.split(key)
  return (jax.random.normal(a_key, (shape[0], rank), dtype),
          jax.random.normal(b_key, (shape[1], rank), dtype))


def _low_rank_noise(key, shape, rank: int, dtype) -> jax.Array:
  """A Bᵀ / √r (`_low_rank_factors`): entries of variance 1. -> [m, n]"""
  a, b = _low_rank_factors(key, shape, rank, dtype)
  return (a.astype(jnp.float32) @ b.astype(jnp.float32).T / jnp.sqrt(rank)).astype(dtype)


def _leaf_std(leaf: jax.Array, is_stacked: bool) -> jax.Array:
  """std of the leaf (per layer for a stacked leaf), broadcastable against the leaf."""
  axes = tuple(range(1, leaf.ndim)) if is_stacked else None
  return jnp.std(leaf.astype(jnp.float32), axis=axes, keepdims=True)


def perturbed_leaves(params: PyTree, spec: PerturbSpec):
  """How `spec` treats each leaf of `params`: (treedef, [(leaf, its noise index, whether it
  stacks layers, or None when the spec leaves it alone)]), in flattening order."""
  flat, treedef = jax.tree_util.tree_flatten_with_path(params)
  leaves = []
  for index, (path, leaf) in zip(tree.stable_leaf_indices(params), flat):
    leaf, name = jnp.asarray(leaf), tree.path_name(path)
    perturbed = jnp.issubdtype(leaf.dtype, jnp.floating) and (
        spec.include is None or re.search(spec.include, name) is not None)
    is_stacked = spec.stacked is not None and re.search(spec.stacked, name) is not None
    leaves.append((leaf, index, is_stacked if perturbed else None))
  return treedef, leaves


def keyed_leaves(params: PyTree) -> list[str]:
  """The leaf path names in rank order: under the independent mode leaf `names[i]` draws its
  noise from `fold_in(member_key, i)`. A run records them (`topk.json`), so a renamed or added
  leaf cannot silently give its members other noise."""
  return sorted(tree.leaf_names(params))


def check_keyed_leaves(recorded: Optional[list], params: PyTree, where: str) -> None:
  """Refuses to rebuild members whose recorded `keyed_leaves` differ from `params`' (None: a
  record written before they were kept)."""
  if recorded is None or list(recorded) == keyed_leaves(params):
    return
  changed = sorted(set(recorded) ^ set(keyed_leaves(params)))
  raise InputError(f"{where} drew its members' noise over other parameter names than this "
                   f"model has ({', '.join(changed[:3]) or 'a different order'}), so they "
                   "cannot be rebuilt bit for bit.")


def perturb(params: PyTree, key: jax.Array, sigma, spec: PerturbSpec = PerturbSpec()) -> PyTree:
  """Returns θ + σ·ε for one member.

  Args:
    params: base parameters θ, any pytree of arrays. Non-floating leaves are left alone.
    key: the member's key, `rng.member_key(seed)`.
    sigma: scalar noise scale (may be traced, so a vmapped population mixes sigmas; a negative
      sigma is the antithetic member θ − |σ|·ε).
    spec: how noise is drawn and where it goes.

  Returns:
    A pytree like `params`, each leaf in its own dtype (noise is added in float32).
  """
  treedef, parts = _scaled_noise(params, key, spec)
  out = []
  for leaf, noise, factor in parts:
    if noise is None:
      out.append(leaf)
      continue
    scale = sigma if factor is None else sigma * factor
    out.append((leaf.astype(jnp.float32) + scale * noise).astype(leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def direction(params: PyTree, key: jax.Array, spec: PerturbSpec = PerturbSpec()) -> PyTree:
  """The member's unit-σ direction d, float32, so that `perturb(θ, key, σ) = θ + σ·d` (up to
  the rounding of the leaf dtype): ε, times each leaf's std when `spec.relative`; zeros on
  leaves the spec leaves alone. Evolution strategies regenerate it from the seed."""
  treedef, parts = _scaled_noise(params, key, spec)
  out = []
  for leaf, noise, factor in parts:
    if noise is None:
      out.append(jnp.zeros(leaf.shape, jnp.float32))
      continue
    out.append(noise if factor is None else factor * noise)
  return jax.tree_util.tree_unflatten(treedef, out)


def _scaled_noise(params: PyTree, key: jax.Array, spec: PerturbSpec):
  """(treedef, [(leaf, ε or None, factor or None)]) in flattening order: the member's unit-σ
  direction on a leaf is factor·ε (ε float32; factor None means 1), ε None where the spec leaves
  the leaf alone. The factor is the leaf's std (`relative`) or 1/c of its scale (`scales`)."""
  treedef, leaves = perturbed_leaves(params, spec)
  names = [tree.path_name(path) for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]
  modular = {}
  if spec.scale == "modular":
    modular = scales.modular_factors(
        ((name, leaf.shape[0] if is_stacked else 1) for name, (leaf, _, is_stacked)
         in zip(names, leaves) if is_stacked is not None), spec.masses)
  parts = []
  for name, (leaf, index, is_stacked) in zip(names, leaves):
    if is_stacked is None:
      parts.append((leaf, None, None))
      continue
    noise = _leaf_noise(key, index, leaf.shape, spec, is_stacked).astype(jnp.float32)
    factor = _leaf_std(leaf, is_stacked) if spec.relative else None
    if spec.scale != "isotropic":
      s = modular.get(name, 1.0)
      factor = (jnp.zeros((), jnp.float32) if s == float("inf") else
                1.0 / (s * scales.denominator(noise, name, spec.scale, is_stacked)))
    parts.append((leaf, noise, factor))
  return treedef, parts


def member_factors(params: PyTree, key: jax.Array, sigma, spec: PerturbSpec) -> dict:
  """The member's displacement σ·ε without materialising low-rank leaves, for a factored forward
  (`x (W + σε) = x W + (x a) bᵀ` with the base matmul shared by all members).

  Args: as `perturb`; `spec.noise` must be "lowrank" and `spec.mode` "independent".

  Returns:
    A nested dict over the perturbed leaves' path names (unperturbed leaves absent): a 2-D core
    [m, n] becomes {"a": σ·s·A/√r [m, r], "b": B [n, r]} (s the leaf std when `spec.relative`,
    else 1), any other leaf its dense σ·s·ε; float32; stacked leaves keep their leading
    `[layers]` axis. `a bᵀ` equals the ε of `perturb` up to rounding.
  """
  if spec.noise != "lowrank" or spec.scale != "isotropic":
    raise ValueError("member_factors needs low-rank noise on the isotropic scale; other members "
                     "are materialised.")
  flat, _ = jax.tree_util.tree_flatten_with_path(params)
  _, leaves = perturbed_leaves(params, spec)
  dtype = jnp.dtype(spec.noise_dtype)
  out = {}
  for (path, _), (leaf, index, is_stacked) in zip(flat, leaves):
    if is_stacked is None:
      continue
    scale = sigma * _leaf_std(leaf, is_stacked) if spec.relative else sigma
    core = leaf.shape[1:] if is_stacked else leaf.shape
    if len(core) != 2:
      value = scale * _leaf_noise(key, index, leaf.shape, spec, is_stacked).astype(jnp.float32)
    else:
      draw = lambda k: _low_rank_factors(k, core, spec.rank, dtype)
      a, b = _per_layer(draw, jax.random.fold_in(key, index), leaf.shape, is_stacked)
      value = {"a": scale * a.astype(jnp.float32) / jnp.sqrt(spec.rank),
               "b": b.astype(jnp.float32)}  # scale [layers, 1, 1] or [1, 1] / scalar
    node = out
    keys = tree.path_name(path).split("/")
    for k in keys[:-1]:
      node = node.setdefault(k, {})
    node[keys[-1]] = value
  return out


def mean_displacement(params: PyTree, seeds: jax.Array, coefficients: jax.Array,
                      spec: PerturbSpec) -> PyTree:
  """(1/N) Σᵢ cᵢ·dᵢ over members' unit-σ directions dᵢ (`direction`), float32, one
  member's direction in memory at a time. seeds [N] int32, coefficients [N]."""
  def add(total, member):
    seed, coefficient = member
    d = direction(params, rng.member_key(seed), spec)
    return jax.tree.map(lambda t, x: t + coefficient * x, total, d), None

  zeros = jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), params)
  total, _ = jax.lax.scan(add, zeros, (seeds, coefficients.astype(jnp.float32)))
  return jax.tree.map(lambda t: t / seeds.shape[0], total)


def averaged_member(params: PyTree, seeds, sigmas, spec: PerturbSpec) -> PyTree:
  """θ + (1/K) Σₖ σₖ·dₖ: one model carrying the mean displacement of the K members
  `(seeds [K], sigmas [K])`, added in float32, each leaf in its own dtype."""
  return _averaged_member(params, jnp.asarray(seeds, jnp.int32),
                          jnp.asarray(sigmas, jnp.float32), spec)


@functools.partial(jax.jit, static_argnums=3)
def _averaged_member(params: PyTree, seeds: jax.Array, sigmas: jax.Array,
                     spec: PerturbSpec) -> PyTree:
  mean = mean_displacement(params, seeds, sigmas, spec)
  return jax.tree.map(lambda p, m: (p.astype(jnp.float32) + m).astype(p.dtype) if
                      jnp.issubdtype(p.dtype, jnp.floating) else p, params, mean)


@functools.partial(jax.jit, static_argnums=2)
def _direction_norm(params: PyTree, seed: jax.Array, spec: PerturbSpec) -> jax.Array:
  d = direction(params, rng.member_key(seed), spec)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x)) for x in jax.tree.leaves(d)))


def matched_sigma(params: PyTree, spec: PerturbSpec, isotropic_sigma: float,
                  seeds: Sequence[int] = (0, 1, 2, 3)) -> float:
  """The σ under `spec` whose members move the whole model as far, in the mean over `seeds`,
  as members of the isotropic scale (same spec otherwise) at `isotropic_sigma`: σ_iso times
  the ratio of the two directions' mean norms. Scales are compared at it."""
  isotropic = dataclasses.replace(spec, scale="isotropic")
  norm = lambda s: np.mean([float(_direction_norm(params, jnp.int32(seed), s)) for seed in seeds])
  return float(isotropic_sigma * norm(isotropic) / norm(spec))


def perturb_member(params: PyTree, seed, sigma, spec: PerturbSpec) -> PyTree:
  """θ_i of the member `(seed, sigma, spec)`; traceable, the one definition of a member."""
  return perturb(params, rng.member_key(seed), sigma, spec)


def rebuild_member(params: PyTree, seed: int, sigma: float, spec: PerturbSpec) -> PyTree:
  """θ_i from the member's `(seed, sigma)` and its run's `spec`: the same bits as inside any
  population call."""
  build = jax.jit(perturb_member, static_argnums=3)
  return build(params, jnp.int32(seed), jnp.float32(sigma), spec)
