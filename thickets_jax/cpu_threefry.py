"""Threefry-2x32 on the CPU backend: large draws in one fused pass, the same bits.

JAX lowers the threefry hash for CPU as a rolled loop over its five groups of four rounds,
which keeps small programs quick to compile; but XLA's CPU backend then runs each iteration as a
pass over buffers the size of the draw, so drawing a member's noise is memory-bound (64M float32
normals: 1.0 s on 2 cores). Unrolled, as JAX lowers it for GPU and TPU, the 20 rounds fuse into
one pass (0.27 s, 3.7x faster). `register()` (called on importing the package) lowers draws of
at least `UNROLL_FROM` elements unrolled and smaller ones rolled: the arithmetic is the same, so
every member's bits are too (tests/test_cpu_threefry.py checks both forms against Random123's
known answers and against each other). JAX keeps its unrolled form private, so the hash
(Salmon et al., SC 2011: 20 rounds, a key injection after every four) is written here against
the public primitive.
"""

import math

from jax import lax
from jax.extend.random import threefry2x32_p
from jax.interpreters import mlir
import jax.numpy as jnp
import numpy as np

UNROLL_FROM = 1 << 20  # elements per draw; below it compile time matters more than run time
ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))  # of the even and the odd groups of rounds
_PARITY = np.uint32(0x1BD11BDA)


def _start(k1, k2, x1, x2) -> tuple[list, list]:
  """The counters with the first key injection, and the key schedule (k1, k2, k1 ^ k2 ^ C)
  rotated to the words the first group's injection adds."""
  ks = [k1, k2, k1 ^ k2 ^ _PARITY]
  return [x1 + ks[0], x2 + ks[1]], ks[1:] + ks[:1]


def _group(x: list, ks: list, rotations, i) -> list:
  """Group i (0-4): four mix rounds (x0 += x1; x1 = rotl(x1, r) ^ x0), then the injection of
  key words ks[0], ks[1] + i + 1."""
  for r in rotations:
    x0 = x[0] + x[1]
    x = [x0, ((x[1] << r) | (x[1] >> (np.uint32(32) - r))) ^ x0]
  return [x[0] + ks[0], x[1] + ks[1] + i + np.uint32(1)]


def unrolled(k1, k2, x1, x2) -> list:
  """The hash of counters (x1, x2) under key (k1, k2), all uint32 of one broadcast shape."""
  x, ks = _start(k1, k2, x1, x2)
  for i in range(5):
    x = _group(x, ks, [np.uint32(r) for r in ROTATIONS[i % 2]], np.uint32(i))
    ks = ks[1:] + ks[:1]
  return x


def rolled(k1, k2, x1, x2) -> list:
  """`unrolled` as a loop over the five groups (one copy of four rounds in the program)."""
  def step(i, state):
    x, ks, rotations = state
    x = _group(x, ks, [rotations[0, j] for j in range(4)], i.astype(jnp.uint32))
    return x, ks[1:] + ks[:1], rotations[::-1]
  x, ks = _start(k1, k2, x1, x2)
  x, _, _ = lax.fori_loop(0, 5, step, (x, ks, jnp.asarray(ROTATIONS, jnp.uint32)))
  return x


_UNROLLED = mlir.lower_fun(lambda *a: unrolled(*jnp.broadcast_arrays(*a)), multiple_results=True)
_ROLLED = mlir.lower_fun(lambda *a: rolled(*jnp.broadcast_arrays(*a)), multiple_results=True)


def _lowering(ctx, *args):
  size = math.prod(ctx.avals_out[0].shape)
  return (_UNROLLED if size >= UNROLL_FROM else _ROLLED)(ctx, *args)


def register() -> None:
  """Lowers threefry for the CPU backend by draw size (module docstring)."""
  mlir.register_lowering(threefry2x32_p, _lowering, platform="cpu")

