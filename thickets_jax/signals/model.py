"""The 1D-signal MLP, its pretraining and its autoregressive rollouts (docs/method.md §3).

The model sees only the last `ctx` values of a curve (x is not an input) and predicts the next.
"""

import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from thickets_jax.errors import InputError
from thickets_jax.registry import Registry
from thickets_jax.signals import families

PyTree = Any

INITS = Registry("initialisation")
INITS.register("xavier")(nn.initializers.xavier_uniform())
INITS.register("kaiming")(nn.initializers.kaiming_uniform())  # gain √2: torch's default a=0
INITS.register("ortho")(nn.initializers.orthogonal())


class SignalMLP(nn.Module):
  """Linear(ctx→w), (depth−2)×[ReLU, Linear(w→w)], ReLU, Linear(w→1); zero biases at init."""
  width: int = 128
  depth: int = 5
  init_name: str = "xavier"

  @nn.compact
  def __call__(self, window: jax.Array) -> jax.Array:  # [..., ctx] -> [...]
    kernel_init = INITS.get(self.init_name)
    h = nn.Dense(self.width, kernel_init=kernel_init)(window)  # [..., width]
    for _ in range(self.depth - 2):
      h = nn.Dense(self.width, kernel_init=kernel_init)(nn.relu(h))
    return nn.Dense(1, kernel_init=kernel_init)(nn.relu(h))[..., 0]


def validate_shape(width: int, depth: int, ctx: int, fut: int) -> None:
  for name, value, low in (("width", width, 1), ("depth", depth, 2), ("ctx", ctx, 1),
                           ("fut", fut, 1)):
    if value < low:
      raise InputError(f"--{name} must be at least {low}, got {value}.")


def init_params(model: SignalMLP, key: jax.Array, ctx: int) -> PyTree:
  return model.init(key, jnp.zeros((1, ctx), jnp.float32))["params"]


def count_params(params: PyTree) -> int:
  return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def pretrain(model: SignalMLP, params: PyTree, family: str, key: jax.Array, *, ctx: int,
             steps: int = 1000, batch: int = 256, learning_rate: float = 1e-3) -> tuple[PyTree, jax.Array]:
  """Adam on the MSE of the first future value, a fresh batch of `family` every step.

  Returns:
    (trained params, [steps] losses).
  """
  return _pretrainer(model, family, ctx, steps, batch, learning_rate)(params, key)


@functools.lru_cache(maxsize=None)
def _pretrainer(model: SignalMLP, family: str, ctx: int, steps: int, batch: int,
                learning_rate: float) -> Callable:
  """The jitted pretraining of `pretrain`, one per setting: every seed's base reuses its
  compilation (the seed enters through the parameters and the key)."""
  sample_family = families.FAMILIES.get(family)
  x = families.grid(ctx + 1)
  optimizer = optax.adam(learning_rate)

  def loss_fn(p, curves):  # curves [batch, ctx + 1]
    return jnp.mean((model.apply({"params": p}, curves[:, :ctx]) - curves[:, ctx]) ** 2)

  def step(carry, step_key):
    p, opt_state = carry
    loss, grads = jax.value_and_grad(loss_fn)(p, sample_family(step_key, x, batch))
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return (optax.apply_updates(p, updates), opt_state), loss

  @jax.jit
  def run(p, key):
    keys = jax.random.split(key, steps)
    (p, _), losses = jax.lax.scan(step, (p, optimizer.init(p)), keys)
    return p, losses

  return run


def rollout(model: SignalMLP, params: PyTree, context: jax.Array, fut: int) -> jax.Array:
  """Predict, append, slide the window, `fut` times. [n, ctx] -> [n, fut]."""
  def step(window, _):
    y = model.apply({"params": params}, window)  # [n]
    return jnp.concatenate([window[:, 1:], y[:, None]], axis=1), y
  _, ys = jax.lax.scan(step, context, None, length=fut)  # [fut, n]
  return ys.T


def weighted_mse(prediction: jax.Array, target: jax.Array, weights: jax.Array) -> jax.Array:
  """Σ_n w_n · mean_t (pred − target)² / Σ_n w_n. [n, fut] x2, [n] -> []"""
  per_sample = jnp.mean((prediction - target) ** 2, axis=-1)
  return jnp.sum(weights * per_sample) / jnp.sum(weights)


def unique_samples(context: np.ndarray, future: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Collapses repeated (context, future) rows into one row with a count.

  The `one_*` families are single fixed curves, so their 1024-sample sets hold one distinct row;
  scoring it once with weight 1024 gives exactly the same MSE at 1/1024 of the work.

  Returns:
    context [u, ctx], future [u, fut], counts [u] float32.
  """
  rows = np.concatenate([np.asarray(context), np.asarray(future)], axis=1)
  unique, first, counts = np.unique(rows, axis=0, return_index=True, return_counts=True)
  order = np.argsort(first)  # keep the original order of first appearance
  unique, counts = unique[order], counts[order]
  ctx = context.shape[1]
  return unique[:, :ctx], unique[:, ctx:], counts.astype(np.float32)
