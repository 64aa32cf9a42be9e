"""RandOpt: rank scored candidates, keep the top K, ensemble them (docs/method.md §1).

`RandOpt` is the method behind the ask/tell interface (`thickets_jax.search`): one ask for all N
members. `search(params, score_fn, seed, N=, sigmas=, K=)` runs it for any JAX model whose score
is a function of its parameters; `member_outputs` runs the top K for an ensemble.
Scoring is resumable: a `storage.CandidateStore` appends each chunk of scored candidates to a
JSONL file as it finishes (flushed and fsynced), and `score_candidates` skips what the store
already holds.
"""

import collections
import dataclasses
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence

import jax
import numpy as np
from absl import logging
from jax.sharding import Mesh

from thickets_jax import population, search as search_api
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec
from thickets_jax.storage import CandidateStore, Progress

PyTree = Any


def validate_top_k(ks: Sequence[int], n: int) -> None:
  for k in ks:
    if k <= 0:
      raise InputError(f"K must be positive, got K={k}.")
    if k > n:
      raise InputError(f"K={k} is larger than the population N={n}; choose K <= N.")


def rank(scores: np.ndarray) -> np.ndarray:
  """Member indices by score, best (highest) first; ties keep sampling order. [N] -> [N]."""
  return np.argsort(-np.asarray(scores, np.float64), kind="stable")


def top_k(scores: np.ndarray, ks: Sequence[int]) -> dict[int, np.ndarray]:
  """{K: the indices of the K best members, best first} for several K at once."""
  validate_top_k(ks, len(scores))
  order = rank(scores)
  return {k: order[:k] for k in ks}


def majority_vote(votes: Sequence[Optional[Hashable]]) -> Optional[Hashable]:
  """The winning vote key among members listed best-ranked first.

  `None` casts no vote. The most frequent key wins; a tie goes to the key first cast by the
  better-ranked member. Returns None when nobody voted.
  """
  counts = collections.Counter(v for v in votes if v is not None)
  if not counts:
    return None
  best = max(counts.values())
  return next(v for v in votes if v is not None and counts[v] == best)


def vote_winners(member_votes: Sequence[Sequence[Optional[Hashable]]]) -> list[Optional[int]]:
  """Per test item, the best-ranked member that cast the winning vote (None: nobody voted).

  Args:
    member_votes: [K][T] vote keys, members best-ranked first.
  """
  winners = []
  for t in range(len(member_votes[0]) if member_votes else 0):
    votes = [m[t] for m in member_votes]
    key = majority_vote(votes)
    winners.append(None if key is None else votes.index(key))
  return winners


def ensemble_accuracy(member_votes: Sequence[Sequence[Optional[Hashable]]],
                      member_correct: Sequence[Sequence[bool]]) -> float:
  """Majority-vote accuracy: an item is right when the winning answer is right (judged on the
  completion of the best-ranked member that cast it); an item with no valid vote is wrong.

  Args:
    member_votes, member_correct: [K][T], members best-ranked first.
  """
  winners = vote_winners(member_votes)
  if not winners:
    raise ValueError("ensemble_accuracy needs at least one test item")
  return sum(w is not None and bool(member_correct[w][t]) for t, w in enumerate(winners)) / len(winners)


def mean_ensemble(predictions: np.ndarray) -> np.ndarray:
  """Regression ensemble: the element-wise mean of [K, ...] member predictions."""
  return np.mean(predictions, axis=0)


def score_candidates(score_chunk: Callable[[np.ndarray, np.ndarray], Iterable[tuple[slice, dict]]],
                     seeds: np.ndarray, sigmas: np.ndarray, store: CandidateStore) -> list[dict]:
  """Scores every candidate the store lacks, persisting each chunk as it finishes.

  Args:
    score_chunk: `(seeds [P], sigmas [P]) -> iterator of (slice, {field: [len(slice), ...]})`,
      e.g. `iter_population` over a score function; fields become the JSONL record's fields.
    seeds, sigmas: [N] candidates in sampling order.
    store: the run's store; candidates it already holds are not re-scored.

  Returns:
    [N] records in sampling order, each with `seed`, `sigma` and the score fields.
  """
  pending = [i for i, member in enumerate(zip(seeds.tolist(), sigmas.tolist()))
             if member not in store]
  if len(pending) < len(seeds):
    logging.info("resuming: %d of %d candidates already scored in %s",
                 len(seeds) - len(pending), len(seeds), store.path)
  progress = Progress(len(seeds), done=len(seeds) - len(pending))
  if pending:
    pending = np.asarray(pending)
    for part, outputs in score_chunk(seeds[pending], sigmas[pending]):
      chunk = pending[part]
      store.append({"seed": int(seeds[i]), "sigma": float(sigmas[i]),
                    **{k: np.asarray(v[j]).tolist() for k, v in outputs.items()}}
                   for j, i in enumerate(chunk))
      progress.update(len(chunk))
  return [store.records[(s, g)] for s, g in zip(seeds.tolist(), sigmas.tolist())]


class RandOpt(search_api.Method):
  """One ask: every member on every train example (store "candidates"); then `scores` [N] and
  `order` [N] (best first) hold the result."""

  def __init__(self, seeds: np.ndarray, sigmas: np.ndarray, store: str = "candidates"):
    self.seeds, self.sigmas, self.store = seeds, sigmas, store
    self.scores: Optional[np.ndarray] = None
    self.records: Sequence[dict] = ()

  def ask(self) -> Optional[search_api.Ask]:
    return None if self.scores is not None else search_api.Ask(self.seeds, self.sigmas,
                                                               self.store)

  def tell(self, scores: search_api.Scores) -> None:
    self.scores, self.records = np.asarray(scores.mean, np.float64), scores.records

  @property
  def order(self) -> np.ndarray:
    return rank(self.scores)


@dataclasses.dataclass(frozen=True)
class SearchResult:
  """The scored population of `search` and its top K; a member is `(seed, sigma, spec)`.

  Attributes:
    seeds, sigmas, scores: [N], in sampling order. order: [N] member indices, best first.
    k: how many members `top` holds. spec: how members were perturbed.
  """
  seeds: np.ndarray
  sigmas: np.ndarray
  scores: np.ndarray
  order: np.ndarray
  k: int
  spec: PerturbSpec

  @property
  def top(self) -> list[tuple[int, float]]:
    """The K best members' `(seed, sigma)`, best first."""
    return [(int(self.seeds[i]), float(self.sigmas[i])) for i in self.order[:self.k]]

  @property
  def top_scores(self) -> np.ndarray:
    return self.scores[self.order[:self.k]]


def search(params: PyTree, score_fn: Callable[[PyTree], Any], seed: int, *, N: int,
           sigmas: Sequence[float], K: int, spec: PerturbSpec = PerturbSpec(),
           chunk_size: int = 8, mesh: Optional[Mesh] = None,
           store: Optional[CandidateStore] = None) -> SearchResult:
  """RandOpt around `params`: N Gaussian perturbations scored by `score_fn`, the top K kept.

  Args:
    params: the pretrained parameters θ, any pytree of arrays.
    score_fn: `params -> scalar`, higher is better; traced once and vmapped over members.
    seed: root seed of the members' seeds and sigmas (`population.draw_candidates`).
    N, K: population size and how many to keep. sigmas: each member draws one.
    spec: how members are perturbed. chunk_size: members per compiled call.
    mesh: optional mesh with a `population` axis to spread members over.
    store: optional `CandidateStore`: scores are persisted as they come and a rerun resumes.

  Returns:
    A `SearchResult`; rebuild a member with `perturb.rebuild_member(params, seed, sigma, spec)`.
  """
  validate_top_k([K], N)
  seeds, member_sigmas = population.draw_candidates(seed, N, sigmas)
  fn = population.population_fn(lambda p: {"score": score_fn(p)}, spec=spec)
  chunks = lambda s, g: population.iter_population(fn, params, s, g, chunk_size=chunk_size,
                                                   mesh=mesh)

  def score(ask: search_api.Ask) -> search_api.Scores:
    if store is None:
      return search_api.Scores.means(
          np.concatenate([out["score"] for _, out in chunks(ask.seeds, ask.sigmas)]))
    records = score_candidates(chunks, ask.seeds, ask.sigmas, store)
    return search_api.Scores.means([r["score"] for r in records], records)

  method = search_api.run(RandOpt(seeds, member_sigmas), score)
  return SearchResult(seeds, member_sigmas, method.scores, method.order, K, spec)


def member_outputs(params: PyTree, fn: Callable[..., PyTree], result: SearchResult, *args,
                   chunk_size: int = 8, mesh: Optional[Mesh] = None) -> PyTree:
  """`fn(member_params, *args)` for each of the top K members, stacked: [K, ...] per leaf,
  best member first. Members are rebuilt inside the compiled call, never stored.

  Feed the result to `mean_ensemble` (regression) or, per item, `majority_vote`.
  """
  members = np.asarray(result.order[:result.k])
  batched = population.population_fn(fn, spec=result.spec)
  return population.evaluate_population(batched, params, result.seeds[members],
                                        result.sigmas[members], chunk_size=chunk_size,
                                        mesh=mesh, args=tuple(jax.numpy.asarray(a) for a in args))
