"""Signal families on the fixed grid x_k = −2.5 + 0.1·k (docs/method.md §3).

Each family maps `(key, x [T], n)` to `n` curves `[n, T]`; every curve draws its own amplitude,
phase and offset. The `one_*` families are single fixed curves.
"""

import jax
import jax.numpy as jnp

from thickets_jax.registry import Registry

FAMILIES = Registry("signal family")
MIXED_PARTS = ("sinusoid", "squarewave", "sawtooth", "harmonic", "sigmoid", "line")


def grid(length: int) -> jax.Array:
  """x_k = −2.5 + 0.1·k for k < length. [length]"""
  return -2.5 + 0.1 * jnp.arange(length, dtype=jnp.float32)


def _uniform(key, n, low, high):
  return jax.random.uniform(key, (n, 1), jnp.float32, low, high)


def _amp_phase_offset(key, n, amp=(0.8, 1.2)):
  k_amp, k_phase, k_off = jax.random.split(key, 3)
  return (_uniform(k_amp, n, *amp), _uniform(k_phase, n, 0.0, 2 * jnp.pi),
          _uniform(k_off, n, -0.5, 0.5))


@FAMILIES.register("line")
def line(key, x, n):
  k_slope, k_icpt = jax.random.split(key)
  return _uniform(k_slope, n, -0.5, 0.5) * x + _uniform(k_icpt, n, -1.0, 1.0)


@FAMILIES.register("sigmoid")
def sigmoid(key, x, n):
  amp, phase, off = _amp_phase_offset(key, n, amp=(0.5, 1.5))
  return amp * jnp.tanh(0.1 * x + phase - jnp.pi) + off


@FAMILIES.register("harmonic")
def harmonic(key, x, n):
  amp, phase, off = _amp_phase_offset(key, n)
  return amp * (0.5 * jnp.sin(4 * x + phase) + 0.3 * jnp.sin(8 * x)) + off


@FAMILIES.register("sinusoid")
def sinusoid(key, x, n):
  amp, phase, off = _amp_phase_offset(key, n)
  return amp * jnp.sin(4 * x + phase) + off


@FAMILIES.register("squarewave")
def squarewave(key, x, n):
  key, k_sharp = jax.random.split(key)
  amp, phase, off = _amp_phase_offset(key, n, amp=(0.2, 0.4))
  return amp * jnp.tanh(_uniform(k_sharp, n, 4.0, 6.0) * jnp.sin(4 * x + phase)) + off


@FAMILIES.register("sawtooth")
def sawtooth(key, x, n):
  amp, phase, off = _amp_phase_offset(key, n)
  t = 4 * x + phase
  wave = jnp.sin(t) - 0.5 * jnp.sin(2 * t) + 0.33 * jnp.sin(3 * t) - 0.25 * jnp.sin(4 * t)
  return amp * 0.5 * wave + off


@FAMILIES.register("mixed")
def mixed(key, x, n):
  k_pick, *k_parts = jax.random.split(key, len(MIXED_PARTS) + 1)
  curves = jnp.stack([FAMILIES.get(name)(k, x, n) for name, k in zip(MIXED_PARTS, k_parts)])
  pick = jax.random.randint(k_pick, (n,), 0, len(MIXED_PARTS))
  return curves[pick, jnp.arange(n)]  # [n, T]


@FAMILIES.register("one_line")
def one_line(key, x, n):
  del key
  return jnp.broadcast_to(-0.25 * x, (n, x.shape[0]))


@FAMILIES.register("one_sinusoid")
def one_sinusoid(key, x, n):
  del key
  return jnp.broadcast_to(0.5 * jnp.sin(4 * x), (n, x.shape[0]))


@FAMILIES.register("one_squarewave")
def one_squarewave(key, x, n):
  del key
  return jnp.broadcast_to(0.3 * jnp.tanh(5 * jnp.sin(4 * x)), (n, x.shape[0]))


def sample(family: str, key: jax.Array, n: int, ctx: int, fut: int) -> tuple[jax.Array, jax.Array]:
  """n curves of `family`, split into (context [n, ctx], future [n, fut])."""
  curves = FAMILIES.get(family)(key, grid(ctx + fut), n)
  return curves[:, :ctx], curves[:, ctx:]
