"""Solution density with Wilson intervals; spectral discordance on constructed cases."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from thickets_jax import metrics


def test_wilson_interval_known_values():
  assert metrics.wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
  assert metrics.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
  assert metrics.wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)


def test_density_per_sigma_and_margin():
  scores = np.array([0.50, 0.52, 0.60, 0.40, 0.55, 0.50])
  sigmas = np.array([1e-3, 1e-3, 1e-3, 2e-3, 2e-3, 2e-3])
  rows = metrics.solution_density(scores, 0.5, [0.0, 0.05], sigmas=sigmas)
  table = {(r["sigma"], r["margin"]): (r["count"], r["n"]) for r in rows}
  assert table == {(1e-3, 0.0): (3, 3), (1e-3, 0.05): (1, 3),
                   (2e-3, 0.0): (2, 3), (2e-3, 0.05): (1, 3)}
  for r in rows:
    assert r["ci_low"] <= r["density"] <= r["ci_high"]


def test_relative_density_for_losses():
  mse = np.array([1.0, 0.5, 0.05, 2.0])
  rows = metrics.solution_density(-mse, -1.0, [0.0, 0.5, 0.9], relative=True)
  assert [r["count"] for r in rows] == [3, 2, 1]


def test_discordance_zero_for_identical_columns():
  col = np.random.default_rng(0).normal(size=500)
  d = metrics.spectral_discordance(np.stack([col, 2 * col + 1, col**3], axis=1))
  assert d["discordance"] == pytest.approx(0.0, abs=1e-9)


def test_discordance_about_one_for_independent_columns():
  d = metrics.spectral_discordance(np.random.default_rng(1).normal(size=(4000, 6)))
  assert d["discordance"] == pytest.approx(1.0, abs=0.05)


def test_discordance_near_upper_bound_for_anticorrelated_columns():
  two = metrics.spectral_discordance(np.stack([np.arange(50.0), -np.arange(50.0)], axis=1))
  assert two["discordance"] == pytest.approx(2.0) and two["upper_bound"] == 2.0
  t = np.linspace(0, 2 * np.pi, 3000, endpoint=False)
  three = np.stack([np.cos(t + 2 * np.pi * j / 3) for j in range(3)], axis=1)
  d = metrics.spectral_discordance(three)
  assert d["upper_bound"] == 1.5
  assert 0.95 * 1.5 < d["discordance"] <= 1.5 + 1e-9


def test_constant_task_leaves_discordance_undefined():
  scores = np.stack([np.arange(10.0), np.zeros(10)], axis=1)
  d = metrics.spectral_discordance(scores)
  assert d["discordance"] is None and d["constant_tasks"] == [1]


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 6), st.integers(3, 40), st.integers(0, 2**31 - 1))
def test_discordance_stays_within_its_bounds(m, n, seed):
  scores = np.random.default_rng(seed).integers(0, 4, size=(n, m)).astype(float)
  d = metrics.spectral_discordance(scores)
  if d["discordance"] is not None:
    assert -1e-9 <= d["discordance"] <= m / (m - 1) + 1e-9


def test_discordance_interval_covers_the_estimate_and_shrinks_with_n():
  rng = np.random.default_rng(0)
  small, large = rng.normal(size=(16, 3)), rng.normal(size=(400, 3))
  for scores in (small, large):
    d = metrics.spectral_discordance(scores)["discordance"]
    low, high = metrics.discordance_interval(scores, draws=300)
    assert low <= d <= high
  width = lambda s: np.subtract(*metrics.discordance_interval(s, draws=300)[::-1])
  assert width(large) < width(small) / 2
  constant = np.concatenate([rng.normal(size=(10, 2)), np.zeros((10, 1))], axis=1)
  assert metrics.discordance_interval(constant, draws=50) is None
