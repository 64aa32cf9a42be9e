"""Scores on a plane through the base, θ + a·d₁ + b·d₂: the neighbourhood RandOpt samples, as a map.

Two kinds of directions:
  * "members": the perturbations σ₁ε₁ and σ₂ε₂ of two members (`perturb.direction` scaled by
    their sigma), so the points (1, 0) and (0, 1) are those members, exactly.
  * "random": two Gaussian directions drawn like member noise from the `landscape` PRNG
    stream, filter-normalised as in Li et al. 2018 ("Visualizing the Loss Landscape of Neural
    Nets"): in every leaf of two or more axes, each unit's filter (the slice along every axis
    but the last, per layer of a stacked leaf: a Dense kernel's column [in], the embedding's
    hidden unit [vocab]) is rescaled to the norm of the same filter of θ. Leaves of one axis
    (biases, norm scales) get no component, as in Li et al.

Other members are placed on the plane by orthogonal projection (least squares on the Gram
matrix of d₁, d₂); `residual` says how much of a member's perturbation lies off the plane.
"""

import dataclasses
import functools
from typing import Any, Callable, ClassVar, Iterable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import configs, perturb, rng, storage
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec

PyTree = Any
DIRECTIONS = ("members", "random")


@dataclasses.dataclass(frozen=True)
class PlaneConfig(configs.Config):
  """The plane and its grid, shared by every domain's landscape config (`RANDOM_EXTENT`: the
  domain's default extent for random directions)."""
  directions: str = configs.setting(
      "members", "The plane: the top two members, or two filter-normalised random directions.",
      choices=DIRECTIONS)
  extent: Optional[float] = configs.setting(
      None, "The grid spans [-extent, extent]^2 (default: 2 for members; for random 1 (signals) "
      "or 0.05 (llm)).")
  points: int = configs.setting(21, "Grid points per axis, odd (default 21 signals, 5 llm).")
  RANDOM_EXTENT: ClassVar[float] = 1.0

  @property
  def grid_extent(self) -> float:
    return self.extent if self.extent is not None else (
        2.0 if self.directions == "members" else self.RANDOM_EXTENT)

  def validate(self) -> None:
    validate_grid(self.directions, self.points, self.grid_extent)


def validate_grid(directions: str, points: int, extent: float) -> None:
  """One sentence for a bad plane: unknown directions, an even or tiny grid, extent <= 0."""
  if directions not in DIRECTIONS:
    raise InputError(f"unknown --directions {directions!r}; known: {', '.join(DIRECTIONS)}.")
  if points < 3 or points % 2 == 0:
    raise InputError(f"--points must be odd and at least 3 (the base on the grid), got "
                     f"{points}.")
  if extent <= 0:
    raise InputError(f"--extent must be positive, got {extent}.")


def filter_normalized(direction: PyTree, params: PyTree, spec: PerturbSpec) -> PyTree:
  """`direction` with each filter rescaled to the norm of θ's filter (module docstring)."""
  treedef, leaves = perturb.perturbed_leaves(params, spec)
  out = []
  for d, (leaf, _, is_stacked) in zip(jax.tree_util.tree_leaves(direction), leaves):
    if is_stacked is None or leaf.ndim - bool(is_stacked) < 2:
      out.append(jnp.zeros_like(d))
      continue
    axes = tuple(range(int(bool(is_stacked)), leaf.ndim - 1))
    norm = lambda x: jnp.sqrt(jnp.sum(jnp.square(x.astype(jnp.float32)), axes, keepdims=True))
    out.append(d * norm(leaf) / (norm(d) + 1e-10))
  return jax.tree_util.tree_unflatten(treedef, out)


def random_directions(params: PyTree, seed: int, spec: PerturbSpec) -> tuple[PyTree, PyTree]:
  """Two filter-normalised Gaussian directions from the run's `landscape` stream."""
  stream = rng.key(seed, "landscape")
  return tuple(_random_direction(params, jax.random.fold_in(stream, i), spec) for i in (0, 1))


@functools.partial(jax.jit, static_argnums=2)
def _random_direction(params: PyTree, key: jax.Array, spec: PerturbSpec) -> PyTree:
  return filter_normalized(perturb.direction(params, key, spec), params, spec)


def member_direction(params: PyTree, seed: int, sigma: float, spec: PerturbSpec) -> PyTree:
  """θ_member − θ = σ·d of the member `(seed, sigma, spec)`, float32."""
  return _member_direction(params, jnp.int32(seed), jnp.float32(sigma), spec)


@functools.partial(jax.jit, static_argnums=3)
def _member_direction(params: PyTree, seed: jax.Array, sigma: jax.Array,
                      spec: PerturbSpec) -> PyTree:
  return jax.tree_util.tree_map(lambda x: sigma * x,
                                perturb.direction(params, rng.member_key(seed), spec))


def _dot(x: PyTree, y: PyTree) -> float:
  return float(sum(jnp.vdot(a, b) for a, b in zip(jax.tree_util.tree_leaves(x),
                                                  jax.tree_util.tree_leaves(y))))


def project(vector: PyTree, d1: PyTree, d2: PyTree) -> dict:
  """Coordinates (a, b) of the point of the plane nearest θ + `vector`, and the residual
  ‖vector − a·d₁ − b·d₂‖ / ‖vector‖."""
  gram = np.asarray([[_dot(d1, d1), _dot(d1, d2)], [_dot(d2, d1), _dot(d2, d2)]])
  a, b = np.linalg.lstsq(gram, np.asarray([_dot(vector, d1), _dot(vector, d2)]), rcond=None)[0]
  norm2 = _dot(vector, vector)
  off = norm2 - 2 * (a * _dot(vector, d1) + b * _dot(vector, d2)) + \
      a * a * gram[0, 0] + 2 * a * b * gram[0, 1] + b * b * gram[1, 1]
  return {"a": float(a), "b": float(b),
          "residual": float(np.sqrt(max(off, 0.0) / norm2)) if norm2 > 0 else 0.0}


def plane_point(params: PyTree, d1: PyTree, d2: PyTree, a, b) -> PyTree:
  """θ + a·d₁ + b·d₂ in each leaf's dtype (computed in float32); traceable in a, b."""
  return jax.tree_util.tree_map(
      lambda x, u, v: (x.astype(jnp.float32) + a * u + b * v).astype(x.dtype), params, d1, d2)


def grid(extent: float, points: int) -> np.ndarray:
  """[points] coordinates in [−extent, extent]; odd `points` puts the base on the grid."""
  return np.linspace(-extent, extent, points)


def score_plane(score_points: Callable[[np.ndarray], Iterable[dict]], coordinates: np.ndarray,
                store: storage.CandidateStore, chunk_size: int) -> np.ndarray:
  """Scores every grid point the store lacks, persisting each chunk as it finishes.

  Args:
    score_points: [P, 2] (a, b) -> P records (dicts with at least "score").
    coordinates: [points] values used for both axes.
    store: keyed by `point_key`; points it holds are not scored again.

  Returns:
    [points (b), points (a)] scores, row i at b = coordinates[i].
  """
  pairs = [(float(a), float(b)) for b in coordinates for a in coordinates]
  pending = [p for p in pairs if p not in store]
  progress = storage.Progress(len(pairs), done=len(pairs) - len(pending), what="grid points")
  for start in range(0, len(pending), chunk_size):
    chunk = pending[start:start + chunk_size]
    store.append({"a": a, "b": b, **record}
                 for (a, b), record in zip(chunk, score_points(np.asarray(chunk))))
    progress.update(len(chunk))
  return np.asarray([store.records[p]["score"] for p in pairs]).reshape(
      len(coordinates), len(coordinates))


def point_key(record: dict) -> tuple[float, float]:
  return float(record["a"]), float(record["b"])


def summarize(scores: np.ndarray, coordinates: np.ndarray, base: float, higher_is_better: bool,
              margins: Sequence[float] = (0.0, 0.5)) -> dict:
  """What the map says in numbers: per relative margin m, the fraction of grid points whose
  gain over the base exceeds m·|base| (all points, and those within radius 1 of the base), and
  the best point."""
  a, b = np.meshgrid(coordinates, coordinates)
  gain = relative_gain(scores, base, higher_is_better) / 100.0
  finite = np.isfinite(scores)
  inner = finite & (np.hypot(a, b) <= 1.0 + 1e-9) & ((a != 0) | (b != 0))
  best = np.unravel_index(np.argmax(np.where(finite, gain, -np.inf)), scores.shape)
  better = lambda where, m: float(np.mean(gain[where] > m)) if where.any() else None
  return {"better": [{"margin": m, "fraction": better(finite, m),
                      "fraction_within_1": better(inner, m)} for m in margins],
          "best": {"a": float(a[best]), "b": float(b[best]), "score": float(scores[best])}}


def relative_gain(scores: np.ndarray, base: float, higher_is_better: bool) -> np.ndarray:
  """(score − base)/|base| × 100, sign flipped for losses: positive is better (Figure 2's
  colour scale)."""
  gain = (scores - base) if higher_is_better else (base - scores)
  return 100.0 * gain / max(abs(base), 1e-12)


def describe_members(params: PyTree, d1: PyTree, d2: PyTree, members: Sequence[dict],
                     spec: PerturbSpec) -> list[dict]:
  """Each member `{seed, sigma, ...}` with its plane coordinates and residual."""
  return [{**m, **project(member_direction(params, m["seed"], m["sigma"], spec), d1, d2)}
          for m in members]
