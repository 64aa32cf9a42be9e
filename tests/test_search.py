"""The ask/tell interface: one scorer drives RandOpt, successive halving and ES; a rerun replays."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import halving, population, randopt, rng, search
from thickets_jax.baselines import es
from thickets_jax.perturb import perturb

TARGETS = np.linspace(-1, 1, 12)[:, None] * np.linspace(0.5, 1.5, 6)  # [examples, dim]
PARAMS = {"x": jnp.zeros(6)}


def _example_scores(params, seeds, sigmas) -> np.ndarray:
  """[P, examples]: −‖member − target_e‖² of each member around `params` on each example."""
  members = [perturb(params, rng.member_key(int(s)), float(g))["x"] for s, g in zip(seeds, sigmas)]
  return -np.sum((np.asarray(members)[:, None, :] - TARGETS[None]) ** 2, axis=-1)


def _scorer(log: list, stored: dict = None):
  """A `search.run` scorer over the toy: sums on a slice, means on the whole set. With `stored`
  ({store name: {member: row}}), members a store holds are not scored again (`log` records
  what is)."""
  def score(ask: search.Ask) -> search.Scores:
    center = PARAMS if ask.center is None else ask.center
    held = {} if stored is None else stored.setdefault(ask.store, {})
    members = list(zip(ask.seeds.tolist(), ask.sigmas.tolist()))
    todo = [m for m in members if m not in held]
    if todo:
      log.append((ask.store, len(todo)))
      rows = _example_scores(center, *zip(*todo))
      held.update(zip(todo, rows))
    rows = np.asarray([held[m] for m in members])
    if ask.examples is None:
      return search.Scores.means(rows.mean(1))
    part = rows[:, slice(*ask.examples)]
    return search.Scores(part.sum(1), np.full(len(part), float(part.shape[1])))
  return score


def test_one_scorer_drives_randopt_halving_and_es():
  seeds, sigmas = population.draw_candidates(0, 16, [0.3, 0.6])
  table = _example_scores(PARAMS, seeds, sigmas)  # [16, 12]
  log = []

  method = search.run(randopt.RandOpt(seeds, sigmas), _scorer(log))
  np.testing.assert_allclose(method.scores, table.mean(1))
  assert list(method.order) == list(randopt.rank(table.mean(1)))
  assert log == [("candidates", 16)]

  rungs = halving.schedule(16, 12, eta=2, min_examples=3, keep=2)
  log.clear()
  out = search.run(halving.Halving(seeds, sigmas, rungs), _scorer(log)).result()
  assert log == [(f"rung{r.index}", r.members) for r in rungs]
  assert out["evaluations"] == sum(r.members * (r.stop - r.start) for r in rungs)
  last = out["order"]
  np.testing.assert_allclose(out["scores"][last], table[last].mean(1))
  assert set(last) <= set(randopt.rank(table[:, :3].mean(1))[:rungs[1].members])

  # ES through the same scorer equals es.train's bits with the score function it wraps.
  config = es.ESConfig(population=6, sigma=0.1, learning_rate=0.05, optimizer="adam")
  log.clear()
  method = search.run(es.ES(PARAMS, config, iterations=3, seed=2), _scorer(log))
  assert log == [(f"iteration_{t:04d}", 6) for t in range(3)]
  trained = es.train(PARAMS, lambda p, t, s, g: _example_scores(p, s, g).mean(1), config,
                     iterations=3, seed=2)
  np.testing.assert_array_equal(np.asarray(method.state["params"]["x"]),
                                np.asarray(trained["x"]))
  assert float(jnp.sum(trained["x"] ** 2)) > 0


@pytest.mark.parametrize("make", [
    lambda seeds, sigmas: halving.Halving(
        seeds, sigmas, halving.schedule(16, 12, eta=2, min_examples=3, keep=2)),
    lambda seeds, sigmas: es.ES(PARAMS, es.ESConfig(population=4, sigma=0.1,
                                                    learning_rate=0.05), iterations=3, seed=1)])
def test_a_killed_search_replays_its_stored_asks_and_scores_only_the_rest(make):
  seeds, sigmas = population.draw_candidates(1, 16, [0.3])
  whole = search.run(make(seeds, sigmas), _scorer([]))

  stored, log = {}, []
  scorer = _scorer(log, stored)

  def killed_on_the_third_ask(ask):
    if len(log) == 2:
      raise KeyboardInterrupt
    return scorer(ask)
  with pytest.raises(KeyboardInterrupt):
    search.run(make(seeds, sigmas), killed_on_the_third_ask)
  first_two = list(log)
  resumed = search.run(make(seeds, sigmas), scorer)
  assert log[:2] == first_two and all(name not in dict(first_two) for name, _ in log[2:])
  assert len(log) == sum(1 for _ in stored)  # every ask scored exactly once over both runs
  if isinstance(whole, halving.Halving):
    a, b = whole.result(), resumed.result()
    np.testing.assert_array_equal(a["order"], b["order"])
    np.testing.assert_array_equal(a["scores"], b["scores"])
  else:
    for x, y in zip(jax.tree.leaves(whole.state), jax.tree.leaves(resumed.state)):
      np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
