"""Successive halving: the schedule, the selection on known scores, resume, both runners."""

import numpy as np
import pytest

from thickets_jax import halving, randopt, storage, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import randopt as llm_randopt
from thickets_jax.signals import runs as signal_runs


def test_schedule_keeps_a_fraction_on_more_examples_until_the_whole_set():
  rungs = halving.schedule(64, 64, eta=4, min_examples=4, keep=4)
  assert [(r.members, r.start, r.stop) for r in rungs] == [(64, 0, 4), (16, 4, 16), (4, 16, 64)]
  assert [(r.members, r.stop) for r in halving.schedule(10, 9, eta=3, min_examples=1, keep=5)] \
      == [(10, 1), (5, 3), (5, 9)]  # never fewer than keep
  assert len(halving.schedule(8, 5, eta=2, min_examples=5, keep=2)) == 1  # = full scoring


@pytest.mark.parametrize("eta, min_examples, sentence", [
    (1.0, 2, "greater than 1"), (2.0, 0, "between 1 and the 8 train"),
    (2.0, 9, "between 1 and the 8 train")])
def test_bad_settings_are_one_sentence(eta, min_examples, sentence):
  with pytest.raises(InputError, match=sentence):
    halving.schedule(16, 8, eta=eta, min_examples=min_examples, keep=2)


def _scores(n=32, examples=16, seed=0):
  rng = np.random.default_rng(seed)
  return rng.normal(size=(n, 1)) + 0.3 * rng.normal(size=(n, examples))  # [N, E]


def _score_slice(table, calls):
  def score_slice(rung):
    def chunk(seeds, sigmas):
      del sigmas
      calls.append((rung.index, len(seeds)))
      rows = table[seeds, rung.start:rung.stop]
      yield slice(0, len(seeds)), {"score_sum": rows.sum(1), "weight": [rows.shape[1]] * len(seeds)}
    return chunk
  return score_slice


def test_search_ranks_survivors_by_their_mean_over_all_examples(tmp_path):
  table = _scores()
  seeds, sigmas = np.arange(32), np.full(32, 0.1)
  rungs = halving.schedule(32, 16, eta=2, min_examples=2, keep=4)
  calls = []
  stores = [storage.CandidateStore(str(tmp_path / f"r{r.index}.jsonl")) for r in rungs]
  out = halving.search(_score_slice(table, calls), seeds, sigmas, rungs, stores)
  last = out["order"]
  assert len(last) == rungs[-1].members == 4
  np.testing.assert_allclose(out["scores"][last], table[last].mean(1))
  assert list(last) == list(last[np.argsort(-table[last].mean(1), kind="stable")])
  first = randopt.rank(table[:, :2].mean(1))[:16]  # rung 1 scores rung 0's best half
  assert sorted(calls) == [(0, 32), (1, 16), (2, 8), (3, 4)]
  assert set(np.flatnonzero(out["seen"] >= 4)) == set(first)
  assert halving.recall(last, randopt.rank(table.mean(1))[:4]) >= 0.5

  # Resumed: every rung is in its store, nothing is scored again, same answer.
  calls.clear()
  stores = [storage.CandidateStore(str(tmp_path / f"r{r.index}.jsonl")) for r in rungs]
  again = halving.search(_score_slice(table, calls), seeds, sigmas, rungs, stores)
  assert calls == [] and list(again["order"]) == list(last)


def test_one_rung_is_full_scoring(tmp_path):
  table = _scores(n=12, examples=6, seed=1)
  rungs = halving.schedule(12, 6, eta=3, min_examples=6, keep=3)
  out = halving.search(_score_slice(table, []), np.arange(12), np.full(12, 0.1), rungs,
                       [storage.CandidateStore(str(tmp_path / "r0.jsonl"))])
  assert list(out["order"]) == list(randopt.rank(table.mean(1)))


def test_llm_randopt_with_halving_resumes(tmp_path, tiny_weights):
  config = llm_randopt.RandOptConfig.tiny(tiny_weights, N=6, train_size=4, halving_eta=2,
                                       halving_min_examples=1)
  workdir_path = str(tmp_path / "ro")
  result = llm_randopt.run_randopt(config, workdir_path)
  rungs = result["selection"]["rungs"]
  assert [(r["members"], r["examples"]) for r in rungs] == [(6, [0, 1]), (3, [1, 2]),
                                                            (2, [2, 4])]
  assert result["selection"]["example_evaluations"] == 6 + 3 + 2 * 2
  assert result["selection"]["forward_flops"] > 0 and result["train_score_distribution"] is None
  assert llm_randopt.run_randopt(config, workdir_path) == result
  with open(tmp_path / "ro" / "log.txt") as f:
    assert f.read().count("already scored") >= 3  # every rung resumed from its store


def test_signals_run_with_halving_scores_a_fraction(tmp_path):
  spec = dict(pretrain="xavier", posttrain="sinusoid", test="sinusoid", n=16, ks=(2,),
              posttrain_size=16, test_size=8, fut=10)
  full = signal_runs.run(signal_runs.RunSpec(**spec), workdir.RunDir.prepare(str(tmp_path / "f")),
                         str(tmp_path / "bases"), plot=False)
  halved = signal_runs.run(signal_runs.RunSpec(**spec, halving_eta=4, halving_min_examples=1),
                           workdir.RunDir.prepare(str(tmp_path / "h")), str(tmp_path / "bases"),
                           plot=False)
  assert halved["selection"]["rows_scored"] == 16 * 1 + 4 * 3 + 2 * 12
  assert halved["selection"]["flops"] < full["selection"]["flops"] / 3
  assert halved["density"] is None and full["density"] is not None
  scored = storage.CandidateStore(str(tmp_path / "f" / "candidates.jsonl")).records
  for member in halved["top_members"]:  # fully scored: the MSE full scoring gave it
    assert member["train_mse"] == pytest.approx(
        scored[(member["seed"], member["sigma"])]["mse"], rel=1e-4)
