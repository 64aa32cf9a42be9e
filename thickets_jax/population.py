"""Populations of perturbed members: drawing `(seed, sigma)` and scoring them in vmapped chunks.

A chunk of members is one `jit(vmap(...))` call: the member parameters are built inside it from
the base parameters and each member's `(seed, sigma)`, so memory is bounded by the chunk size,
never by N. The last chunk is padded to the chunk size, so the function compiles once.
With a mesh, the member axis of a chunk is sharded over the mesh axis `population`.
"""

from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from thickets_jax import distributed
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec, perturb_member

PyTree = Any
POPULATION_AXIS = "population"
_SEED_LIMIT = 2**31 - 1  # seeds are int32 so they can be traced


def draw_candidates(root_seed: int, n: int, sigmas: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
  """N distinct member seeds and their sigmas, drawn from `root_seed`.

  Seeds come from one PCG64 stream and sigmas from a second, so the first n candidates are
  the same whatever N is (a run can be extended without changing its members).

  Returns:
    seeds: [n] int64, distinct, in [0, 2^31 - 1).
    sigmas: [n] float64, each drawn uniformly from `sigmas`.
  """
  if n <= 0:
    raise InputError(f"the population size must be positive, got N={n}.")
  validate_sigmas(sigmas)
  seed_stream, sigma_stream = np.random.SeedSequence(root_seed).spawn(2)
  seed_rng = np.random.Generator(np.random.PCG64(seed_stream))
  seeds, seen = [], set()
  while len(seeds) < n:
    for seed in seed_rng.integers(0, _SEED_LIMIT, size=n - len(seeds)).tolist():
      if seed not in seen:
        seen.add(seed)
        seeds.append(seed)
  sigma_rng = np.random.Generator(np.random.PCG64(sigma_stream))
  picks = sigma_rng.integers(0, len(sigmas), size=n)
  return np.asarray(seeds, np.int64), np.asarray(sigmas, np.float64)[picks]


def validate_sigmas(sigmas: Sequence[float]) -> None:
  if len(sigmas) == 0:
    raise InputError("the sigma list is empty; give at least one positive sigma.")
  bad = [s for s in sigmas if not (s > 0 and np.isfinite(s))]
  if bad:
    raise InputError(f"sigma must be a positive finite number, got {bad[0]}.")


MEMBER_AXES = ("vmap", "map")


def population_fn(score_fn: Callable[..., PyTree], *, member_axis: str = "vmap",
                  spec: PerturbSpec = PerturbSpec()) -> Callable:
  """`jit` of `score_fn(perturb_member(params, seed, sigma, spec), *args)` over members.

  Args:
    spec: how members are perturbed (with `(seed, sigma)`, a member's identity).
    member_axis: "vmap" batches the members of a chunk into every op (best for small models and
      accelerators; shardable over a mesh); "map" runs them one after another inside the same
      program (`lax.map`), so only one member's parameters exist at a time: memory stays at one
      perturbed copy whatever the chunk, and each matmul stays a plain 2-D one.

  Returns:
    jitted f(params, seeds [C] int32, sigmas [C] float32, *args) -> pytree of [C, ...] outputs;
    `args` (e.g. a prompt batch) are shared by all members and are traced, not baked into the
    program (`f.lower` compiles it ahead of time on abstract inputs: dry runs).
  """
  if member_axis not in MEMBER_AXES:
    raise InputError(f"unknown member axis {member_axis!r}; known: {', '.join(MEMBER_AXES)}.")

  def member(params, seed, sigma, args):
    return score_fn(perturb_member(params, seed, sigma, spec), *args)

  def chunk(params, seeds, sigmas, *args):
    if member_axis == "vmap":
      return jax.vmap(member, in_axes=(None, 0, 0, None))(params, seeds, sigmas, args)
    return jax.lax.map(lambda one: member(params, *one, args), (seeds, sigmas))
  return jax.jit(chunk)


def population_mesh(devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A 1-D mesh whose single axis, `population`, spreads members over devices."""
  devices = jax.devices() if devices is None else devices
  return Mesh(np.asarray(devices), (POPULATION_AXIS,))


def chunk_mesh(chunk_size: int) -> tuple[Optional[Mesh], int]:
  """The population mesh over all devices (None for one) and `chunk_size` rounded up to a
  multiple of the device count, so every device gets members."""
  devices = jax.devices()
  if len(devices) == 1:
    return None, chunk_size
  return population_mesh(devices), -(-chunk_size // len(devices)) * len(devices)


def iter_population(fn: Callable, params: PyTree, seeds: np.ndarray, sigmas: np.ndarray, *,
                    chunk_size: int, mesh: Optional[Mesh] = None,
                    args: tuple = ()) -> Iterator[tuple[slice, PyTree]]:
  """Yields `(slice of members, outputs as numpy)` chunk by chunk.

  Args:
    fn: from `population_fn`.
    params: base parameters; leaves not yet on the mesh are replicated over it.
    seeds, sigmas: [N] member identities.
    chunk_size: members per call; with a mesh, a multiple of the mesh size.
    mesh: optional mesh with a `population` axis.
    args: further arguments of `fn`, shared by all members.
  """
  if chunk_size <= 0:
    raise InputError(f"the chunk size must be positive, got {chunk_size}.")
  member_sharding = None
  if mesh is not None:
    if chunk_size % mesh.shape[POPULATION_AXIS]:
      raise InputError(f"the chunk size {chunk_size} must be a multiple of the "
                       f"{mesh.shape[POPULATION_AXIS]} devices of the population mesh.")
    member_sharding = NamedSharding(mesh, PartitionSpec(POPULATION_AXIS))
    params = jax.tree.map(lambda x: _on_mesh(x, mesh), params)
  n = len(seeds)
  for start in range(0, n, chunk_size):
    stop = min(start + chunk_size, n)
    pad = chunk_size - (stop - start)
    chunk_seeds = np.pad(np.asarray(seeds[start:stop], np.int32), (0, pad), mode="edge")
    chunk_sigmas = np.pad(np.asarray(sigmas[start:stop], np.float32), (0, pad), mode="edge")
    member_args = (jnp.asarray(chunk_seeds), jnp.asarray(chunk_sigmas))
    if member_sharding is not None:
      member_args = jax.device_put(member_args, member_sharding)
    outputs = distributed.to_host(fn(params, *member_args, *args))
    yield slice(start, stop), jax.tree.map(lambda x: x[:stop - start], outputs)


def _on_mesh(leaf, mesh: Mesh):
  """A leaf already placed on `mesh` (e.g. model-parallel) stays; anything else is replicated."""
  sharding = getattr(leaf, "sharding", None)
  if isinstance(sharding, NamedSharding) and sharding.mesh == mesh:
    return leaf
  return jax.device_put(leaf, NamedSharding(mesh, PartitionSpec()))


def evaluate_population(fn: Callable, params: PyTree, seeds: np.ndarray, sigmas: np.ndarray, *,
                        chunk_size: int, mesh: Optional[Mesh] = None, args: tuple = ()) -> PyTree:
  """All members' outputs, stacked: a pytree of [N, ...] numpy arrays."""
  parts = [out for _, out in iter_population(fn, params, seeds, sigmas, chunk_size=chunk_size,
                                             mesh=mesh, args=args)]
  return jax.tree.map(lambda *xs: np.concatenate(xs), *parts)
