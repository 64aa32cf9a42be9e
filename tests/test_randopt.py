"""Ranking, top-K, the voting tie rule, mean ensembles and resumable scoring."""

import json

import numpy as np
import pytest

from thickets_jax import randopt, storage
from thickets_jax.errors import InputError


def test_rank_is_descending_and_ties_keep_sampling_order():
  np.testing.assert_array_equal(randopt.rank([0.5, 0.9, 0.5, 0.9, 0.1]), [1, 3, 0, 2, 4])


def test_top_k_for_several_k_and_k_larger_than_n_refused():
  best = randopt.top_k(np.array([3.0, 1.0, 2.0, 5.0]), [1, 3])
  np.testing.assert_array_equal(best[1], [3])
  np.testing.assert_array_equal(best[3], [3, 0, 2])
  with pytest.raises(InputError, match="larger than the population"):
    randopt.top_k(np.zeros(4), [5])
  with pytest.raises(InputError, match="positive"):
    randopt.top_k(np.zeros(4), [0])


@pytest.mark.parametrize("votes, winner", [
    (["a", "b", "b"], "b"),                 # plain majority
    (["a", "b", "b", "a"], "a"),            # 2-2 tie: first cast by the better-ranked member
    (["b", "a", "a", "b"], "b"),
    ([None, "b", "a", None, "a"], "a"),     # invalid answers cast no vote
    ([None, "c", "a"], "c"),                # 1-1 tie among valid votes: better-ranked wins
    ([None, None], None),                   # nobody voted
    ([], None),
])
def test_majority_vote_tie_rule(votes, winner):
  assert randopt.majority_vote(votes) == winner


def test_ensemble_accuracy_judges_the_winning_answer_and_counts_no_vote_as_wrong():
  votes = [["4", None, "7"], ["4", None, "8"], ["5", None, "8"]]
  correct = [[True, False, False], [True, False, True], [False, False, True]]
  assert randopt.vote_winners(votes) == [0, None, 1]
  assert randopt.ensemble_accuracy(votes, correct) == pytest.approx(2 / 3)


def test_mean_ensemble():
  np.testing.assert_allclose(randopt.mean_ensemble(np.array([[1.0, 2.0], [3.0, 6.0]])), [2.0, 4.0])


def _chunks(calls):
  """A score_chunk that scores seed -> 0.5·seed in chunks of 3, logging every call."""
  def score_chunk(seeds, sigmas):
    for start in range(0, len(seeds), 3):
      part = slice(start, min(start + 3, len(seeds)))
      calls.extend(seeds[part].tolist())
      yield part, {"score": 0.5 * seeds[part] + sigmas[part]}
  return score_chunk


def test_scoring_resumes_without_rescoring(tmp_path):
  seeds, sigmas = np.arange(10), np.full(10, 0.25)
  path = str(tmp_path / "candidates.jsonl")
  calls = []
  interrupted = _chunks(calls)

  def killed_after_two_chunks(s, g):
    for i, item in enumerate(interrupted(s, g)):
      if i == 2:
        raise KeyboardInterrupt
      yield item

  with pytest.raises(KeyboardInterrupt):
    randopt.score_candidates(killed_after_two_chunks, seeds, sigmas, storage.CandidateStore(path))
  assert calls == list(range(9))  # the third chunk was scored but never persisted
  with open(path) as f:
    assert len(f.readlines()) == 6
  calls.clear()
  records = randopt.score_candidates(_chunks(calls), seeds, sigmas, storage.CandidateStore(path))
  assert calls == [6, 7, 8, 9]
  assert [r["score"] for r in records] == [0.5 * s + 0.25 for s in range(10)]
  calls.clear()
  randopt.score_candidates(_chunks(calls), seeds, sigmas, storage.CandidateStore(path))
  assert calls == []


def test_store_drops_a_cut_last_line_and_refuses_a_corrupt_file(tmp_path):
  path = tmp_path / "candidates.jsonl"
  good = json.dumps({"seed": 1, "sigma": 0.1, "score": 2.0})
  path.write_text(good + "\n" + '{"seed": 2, "sig')
  assert list(storage.CandidateStore(str(path)).records) == [(1, 0.1)]
  path.write_text('{"seed": 2, "sig\n' + good + "\n")
  with pytest.raises(InputError, match="candidates.jsonl line 1"):
    storage.CandidateStore(str(path))


@pytest.mark.parametrize("damage", ["torn", "lost newline"])
def test_a_damaged_last_record_is_repaired_and_resumes_twice_identically(tmp_path, damage):
  seeds, sigmas = np.arange(10), np.full(10, 0.25)
  path = tmp_path / "candidates.jsonl"
  calls = []
  full = randopt.score_candidates(_chunks(calls), seeds, sigmas, storage.CandidateStore(str(path)))
  lines = path.read_text().splitlines(keepends=True)
  kept = "".join(lines[:6])
  path.write_text(kept + (lines[6][:17] if damage == "torn" else lines[6].rstrip("\n")))
  calls.clear()
  again = randopt.score_candidates(_chunks(calls), seeds, sigmas, storage.CandidateStore(str(path)))
  assert calls == ([6, 7, 8, 9] if damage == "torn" else [7, 8, 9])  # each scored once more
  assert again == full
  calls.clear()
  third = randopt.score_candidates(_chunks(calls), seeds, sigmas, storage.CandidateStore(str(path)))
  assert calls == [] and third == full  # the file stays readable: nothing re-scored twice
  records = [json.loads(line) for line in path.read_text().splitlines()]
  assert sorted(r["seed"] for r in records) == list(range(10))


def _toy():
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  x = jnp.linspace(-1, 1, 32)
  params = {"w": jnp.asarray(0.5), "b": jnp.asarray(0.0)}
  predict = lambda p, x: p["w"] * x + p["b"]
  score = lambda p: -jnp.mean((predict(p, x) - (0.8 * x + 0.1)) ** 2)
  return x, params, predict, score


def test_search_ranks_members_and_resumes_from_its_store(tmp_path):
  from thickets_jax.perturb import PerturbSpec, rebuild_member  # pylint: disable=g-import-not-at-top
  x, params, predict, score = _toy()
  path = str(tmp_path / "candidates.jsonl")
  result = randopt.search(params, score, 3, N=40, sigmas=[0.1, 0.2], K=5,
                          store=storage.CandidateStore(path))
  best_seed, best_sigma = result.top[0]
  member = rebuild_member(params, best_seed, best_sigma, PerturbSpec())
  assert float(score(member)) == pytest.approx(result.top_scores[0], rel=1e-5)
  assert list(result.top_scores) == sorted(result.scores, reverse=True)[:5]
  with open(path) as f:
    assert len(f.read().splitlines()) == 40
  again = randopt.search(params, lambda p: 1 / 0, 3, N=40, sigmas=[0.1, 0.2], K=5,
                         store=storage.CandidateStore(path))  # nothing is scored again
  np.testing.assert_array_equal(again.scores, result.scores)
  outputs = randopt.member_outputs(params, predict, result, x)
  assert outputs.shape == (5, 32)
  np.testing.assert_allclose(outputs[0], predict(member, x), rtol=1e-5, atol=1e-6)


def test_search_refuses_k_above_n():
  _, params, _, score = _toy()
  with pytest.raises(InputError, match="K=9 is larger than the population N=8"):
    randopt.search(params, score, 0, N=8, sigmas=[0.1], K=9)
