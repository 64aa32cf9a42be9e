"""Candidate draws, vmapped chunked populations vs per-member loops, sharded populations."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import population
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec, rebuild_member


def _params():
  key = jax.random.key(0)
  return {"w": jax.random.normal(key, (16, 8)), "b": jnp.zeros((8,))}


def _score(p):
  x = jnp.linspace(-1, 1, 16)
  return {"score": jnp.sum(jnp.tanh(x @ p["w"] + p["b"])), "out": p["b"][:3]}


def test_candidates_are_distinct_prefix_stable_and_from_the_sigma_list():
  seeds, sigmas = population.draw_candidates(7, 200, [1e-3, 2e-3, 5e-3])
  assert len(set(seeds.tolist())) == 200
  assert set(sigmas.tolist()) == {1e-3, 2e-3, 5e-3}
  head_seeds, head_sigmas = population.draw_candidates(7, 50, [1e-3, 2e-3, 5e-3])
  np.testing.assert_array_equal(head_seeds, seeds[:50])
  np.testing.assert_array_equal(head_sigmas, sigmas[:50])
  other, _ = population.draw_candidates(8, 50, [1e-3])
  assert not np.array_equal(other, head_seeds)


@pytest.mark.parametrize("bad", [[0.0], [-1e-3], [float("nan")], []])
def test_bad_sigmas_are_refused(bad):
  with pytest.raises(InputError):
    population.draw_candidates(0, 4, bad)


def test_vmapped_chunks_equal_a_per_member_loop():
  params = _params()
  seeds, sigmas = population.draw_candidates(1, 7, [0.1, 0.3])
  fn = population.population_fn(_score)
  batched = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=3)
  for i, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    single = jax.tree.map(np.asarray, _score(rebuild_member(params, int(seed), float(sigma), PerturbSpec())))
    np.testing.assert_allclose(batched["score"][i], single["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batched["out"][i], single["out"], rtol=1e-6)


def test_members_built_in_a_population_equal_rebuilt_members_bitwise():
  params = _params()
  seeds, sigmas = population.draw_candidates(2, 5, [1e-3, 1e-2])
  members = population.evaluate_population(population.population_fn(lambda p: p), params,
                                           seeds, sigmas, chunk_size=2)
  for i, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    chex.assert_trees_all_equal(jax.tree.map(lambda x: x[i], members),
                                jax.tree.map(np.asarray, rebuild_member(params, int(seed), float(sigma), PerturbSpec())))


def test_population_compiles_once_across_chunks():
  params = _params()
  traced = chex.assert_max_traces(_score, n=1)
  fn = population.population_fn(traced)
  seeds, sigmas = population.draw_candidates(3, 10, [0.1])
  population.evaluate_population(fn, params, seeds, sigmas, chunk_size=4)  # 3 chunks, padded


@pytest.mark.two_devices
def test_sharded_population_equals_unsharded():
  assert jax.device_count() >= 2, "tests/conftest.py asks for two host devices"
  params = _params()
  seeds, sigmas = population.draw_candidates(4, 6, [0.1, 0.2])
  fn = population.population_fn(_score)
  plain = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=2)
  mesh = population.population_mesh(jax.devices()[:2])
  sharded = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=2, mesh=mesh)
  chex.assert_trees_all_close(plain, sharded, rtol=1e-6)
  with pytest.raises(InputError, match="multiple"):
    population.evaluate_population(fn, params, seeds, sigmas, chunk_size=3, mesh=mesh)
