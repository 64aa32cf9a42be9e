"""1D families, the MLP, pretraining, rollouts and sample de-duplication."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax.errors import InputError
from thickets_jax.signals import families, model as M


def test_mlp_has_the_papers_parameter_count():
  params = M.init_params(M.SignalMLP(128, 5), jax.random.key(0), ctx=10)
  assert M.count_params(params) == 51073
  assert all(float(jnp.abs(b).max()) == 0 for b in
             jax.tree.leaves(jax.tree.map(lambda x: x, {k: v["bias"] for k, v in params.items()})))


@pytest.mark.parametrize("init", ["xavier", "kaiming", "ortho"])
def test_inits_give_their_own_weights(init):
  params = M.init_params(M.SignalMLP(64, 3, init), jax.random.key(0), ctx=10)
  w = np.asarray(params["Dense_1"]["kernel"])
  if init == "ortho":
    np.testing.assert_allclose(w.T @ w, np.eye(64), atol=1e-5)
  else:  # uniform with bound sqrt(6 / (fan_in + fan_out)) or sqrt(6 / fan_in)
    bound = np.sqrt(6 / 128) if init == "xavier" else np.sqrt(6 / 64)
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound


@pytest.mark.parametrize("family", families.FAMILIES.names())
def test_families_are_finite_deterministic_and_shaped(family):
  ctx, future = families.sample(family, jax.random.key(1), 32, 10, 60)
  assert ctx.shape == (32, 10) and future.shape == (32, 60)
  assert bool(jnp.all(jnp.isfinite(future)))
  again, _ = families.sample(family, jax.random.key(1), 32, 10, 60)
  np.testing.assert_array_equal(ctx, again)
  if family.startswith("one_"):
    np.testing.assert_array_equal(ctx, jnp.broadcast_to(ctx[0], ctx.shape))
  else:
    assert len(np.unique(np.asarray(ctx), axis=0)) == 32


def test_families_follow_their_formulas():
  x = families.grid(70)
  np.testing.assert_allclose(x[:3], [-2.5, -2.4, -2.3], atol=1e-6)
  np.testing.assert_allclose(families.FAMILIES.get("one_line")(None, x, 1)[0], -0.25 * x)
  lines = families.FAMILIES.get("line")(jax.random.key(0), x, 500)
  slope = (lines[:, 1] - lines[:, 0]) / 0.1
  assert -0.5 <= float(slope.min()) and float(slope.max()) <= 0.5
  waves = families.FAMILIES.get("sinusoid")(jax.random.key(0), x, 500)
  amplitude = (waves.max(1) - waves.min(1)) / 2
  assert 0.75 < float(amplitude.min()) and float(amplitude.max()) <= 1.2 + 1e-6


def test_mixed_draws_every_part():
  x = families.grid(12)
  mixed = np.asarray(families.FAMILIES.get("mixed")(jax.random.key(3), x, 300))
  k_pick, *k_parts = jax.random.split(jax.random.key(3), len(families.MIXED_PARTS) + 1)
  hits = set()
  for name, k in zip(families.MIXED_PARTS, k_parts):
    part = np.asarray(families.FAMILIES.get(name)(k, x, 300))
    if np.any(np.all(part == mixed, axis=1)):
      hits.add(name)
  assert hits == set(families.MIXED_PARTS)


def test_unknown_family_is_refused():
  with pytest.raises(InputError, match="unknown signal family 'zigzag'"):
    families.sample("zigzag", jax.random.key(0), 2, 10, 5)


def test_pretraining_lowers_the_loss():
  model = M.SignalMLP(32, 3)
  params = M.init_params(model, jax.random.key(0), ctx=10)
  _, losses = M.pretrain(model, params, "line", jax.random.key(1), ctx=10, steps=300)
  assert float(losses[-20:].mean()) < 0.2 * float(losses[:5].mean())


def test_rollout_feeds_its_predictions_back():
  model = M.SignalMLP(16, 3)
  params = M.init_params(model, jax.random.key(0), ctx=4)
  context = jax.random.normal(jax.random.key(1), (3, 4))
  ys = M.rollout(model, params, context, 3)
  first = model.apply({"params": params}, context)
  second = model.apply({"params": params}, jnp.concatenate([context[:, 1:], first[:, None]], 1))
  np.testing.assert_allclose(ys[:, 0], first, rtol=1e-6)
  np.testing.assert_allclose(ys[:, 1], second, rtol=1e-5, atol=1e-6)


def test_unique_samples_keep_the_exact_mse():
  rng = np.random.default_rng(0)
  rows = rng.normal(size=(3, 8)).astype(np.float32)
  picks = rng.integers(0, 3, size=50)
  context, future = rows[picks, :5], rows[picks, 5:]
  u_ctx, u_fut, counts = M.unique_samples(context, future)
  assert len(counts) == 3 and counts.sum() == 50
  prediction = lambda c: jnp.tile(c.mean(1, keepdims=True), (1, 3))
  full = M.weighted_mse(prediction(context), future, jnp.ones(50))
  dedup = M.weighted_mse(prediction(u_ctx), u_fut, counts)
  np.testing.assert_allclose(dedup, full, rtol=1e-6)
