"""Evolution strategies: the update against hand computations, options, descent, resume."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import checkpoint, rng
from thickets_jax.baselines import es
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec, direction, perturb


def _three_leaves(dtype=jnp.float32):
  return {"a": jnp.arange(3, dtype=dtype), "b": jnp.ones((2, 2), dtype), "c": jnp.full((4,), 2.0, dtype)}


def _hand_noise(seed, params):
  """ε of member `seed`: leaf i (sorted path order) draws from fold_in(member_key, i)."""
  key = rng.member_key(seed)
  return {name: np.asarray(jax.random.normal(jax.random.fold_in(key, i), params[name].shape))
          for i, name in enumerate(sorted(params))}


def _step(config, params, seeds, sigmas, scores):
  step = es.make_step(config)
  return step(params, es.init(params, config), jnp.asarray(seeds, jnp.int32),
              jnp.asarray(sigmas, jnp.float32), jnp.asarray(scores, jnp.float32))[0]


def test_update_equals_hand_computation_on_three_leaves():
  params = _three_leaves()
  seeds, scores = [11, 12, 13, 14], np.array([1.0, 0.0, 3.0, 2.0])
  z = (scores - scores.mean()) / (scores.std() + 1e-8)
  config = es.ESConfig(population=4)
  new = _step(config, params, seeds, [config.sigma] * 4, scores)
  for name in params:
    expected = np.asarray(params[name]) + config.learning_rate / 4 * sum(
        zi * _hand_noise(s, params)[name] for zi, s in zip(z, seeds))
    np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-9)


def test_direction_is_the_members_perturbation_per_unit_sigma():
  params = {"w": jax.random.normal(jax.random.key(0), (8, 8)), "b": jnp.zeros(8)}
  for spec in (PerturbSpec(), PerturbSpec(relative=True), PerturbSpec(include="w")):
    key = rng.member_key(5)
    member = perturb(params, key, 0.01, spec)
    d = direction(params, key, spec)
    chex.assert_trees_all_close(member, jax.tree.map(lambda p, x: p + 0.01 * x, params, d),
                                atol=1e-7)
  assert not np.any(direction(params, key, PerturbSpec(include="w"))["b"])


def test_antithetic_pairs_share_seeds_and_weigh_the_difference():
  config = es.ESConfig(population=4, antithetic=True)
  seeds, sigmas = es.iteration_members(0, 3, config)
  assert seeds[0] == seeds[1] and seeds[2] == seeds[3] and seeds[0] != seeds[2]
  np.testing.assert_array_equal(sigmas, [1e-3, -1e-3, 1e-3, -1e-3])
  params = _three_leaves()
  scores = np.array([2.0, 0.0, 1.0, 1.0])
  z = (scores - scores.mean()) / (scores.std() + 1e-8)
  new = _step(config, params, seeds, sigmas, scores)
  for name in params:
    expected = np.asarray(params[name]) + config.learning_rate / 4 * (
        (z[0] - z[1]) * _hand_noise(int(seeds[0]), params)[name]
        + (z[2] - z[3]) * _hand_noise(int(seeds[2]), params)[name])
    np.testing.assert_allclose(new[name], expected, rtol=1e-6, atol=1e-9)


def test_centered_ranks_share_ties_and_span_half():
  np.testing.assert_allclose(es.shape_fitness(jnp.array([3.0, 1.0, 2.0, 2.0]), "centered_rank"),
                             [0.5, -0.5, 0.0, 0.0])
  z = es.shape_fitness(jnp.array([5.0, -1.0, 100.0]), "centered_rank")
  np.testing.assert_allclose(z, [0.0, -0.5, 0.5])


def test_divide_by_sigma_weight_decay_and_optimisers():
  params = _three_leaves()
  seeds, scores = [1, 2], [0.0, 1.0]
  plain = _step(es.ESConfig(population=2), params, seeds, [1e-3] * 2, scores)
  scaled = _step(es.ESConfig(population=2, divide_by_sigma=True), params, seeds, [1e-3] * 2,
                 scores)
  chex.assert_trees_all_close(jax.tree.map(lambda n, p: (n - p) / 1e3, scaled, params),
                              jax.tree.map(jnp.subtract, plain, params), atol=2e-7)
  decayed = _step(es.ESConfig(population=2, weight_decay=0.5), params, seeds, [1e-3] * 2, scores)
  chex.assert_trees_all_close(decayed, jax.tree.map(lambda n, p: n - 5e-4 * 0.5 * p, plain,
                                                    params), rtol=1e-6)
  for name in es.OPTIMIZERS:
    moved = _step(es.ESConfig(population=2, optimizer=name), params, seeds, [1e-3] * 2, scores)
    assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(moved))
    assert not np.allclose(moved["a"], params["a"])


def test_bfloat16_weights_get_a_float32_update():
  params = _three_leaves(jnp.bfloat16)
  config = es.ESConfig(population=2, optimizer="adam")
  state = es.init(params, config)
  assert {x.dtype for x in jax.tree.leaves(state) if x.ndim} == {jnp.dtype(jnp.float32)}
  new, _ = es.make_step(config)(params, state, jnp.array([1, 2]), jnp.array([1e-3, 1e-3]),
                                jnp.array([0.0, 1.0]))
  assert {x.dtype for x in jax.tree.leaves(new)} == {jnp.dtype(jnp.bfloat16)}


def _quadratic_score(target):
  def score(params, iteration, seeds, sigmas):
    del iteration
    members = [perturb(params, rng.member_key(int(s)), float(g)) for s, g in zip(seeds, sigmas)]
    return [-float(jnp.sum((m["x"] - target) ** 2)) for m in members]
  return score


@pytest.mark.parametrize("options", [
    {"learning_rate": 0.05},
    {"antithetic": True, "fitness": "centered_rank", "learning_rate": 0.2}])  # ranks: |z| <= 0.5
def test_es_lowers_a_quadratic(options):
  target = jnp.linspace(-1, 1, 16)
  params = {"x": jnp.zeros(16)}
  config = es.ESConfig(population=20, sigma=0.05, **options)
  final = es.train(params, _quadratic_score(target), config, iterations=40, seed=0)
  assert float(jnp.sum((final["x"] - target) ** 2)) < 0.25 * float(jnp.sum(target ** 2))


def test_killed_run_resumes_to_the_same_bits(tmp_path):
  target = jnp.linspace(-1, 1, 16)
  config = es.ESConfig(population=6, sigma=0.05, learning_rate=0.05, optimizer="adam")
  params = {"x": jnp.zeros(16)}
  whole = es.train(params, _quadratic_score(target), config, iterations=5, seed=1)

  calls = []
  def killed_after_three(params, iteration, seeds, sigmas):
    if iteration == 3:
      raise KeyboardInterrupt
    calls.append(iteration)
    return _quadratic_score(target)(params, iteration, seeds, sigmas)
  ckpt = checkpoint.TrainingCheckpoints(str(tmp_path / "ckpt"))
  with pytest.raises(KeyboardInterrupt):
    es.train(params, killed_after_three, config, iterations=5, seed=1, checkpoints=ckpt,
             checkpoint_every=2)
  resumed_from = []
  def resumed(params, iteration, seeds, sigmas):
    resumed_from.append(iteration)
    return _quadratic_score(target)(params, iteration, seeds, sigmas)
  again = es.train(params, resumed, config, iterations=5, seed=1,
                   checkpoints=checkpoint.TrainingCheckpoints(str(tmp_path / "ckpt")),
                   checkpoint_every=2)
  assert calls == [0, 1, 2] and resumed_from == [2, 3, 4]
  np.testing.assert_array_equal(np.asarray(again["x"]), np.asarray(whole["x"]))


def test_bad_settings_are_one_sentence():
  """At construction, naming the flag."""
  with pytest.raises(InputError, match="even --es_population, got 5"):
    es.ESConfig(population=5, antithetic=True)
  with pytest.raises(InputError, match="--es_sigma must be positive"):
    es.ESConfig(sigma=0.0)
  with pytest.raises(InputError, match="unknown --es_optimizer 'lbfgs'"):
    es.ESConfig(optimizer="lbfgs")
