"""Successive halving: the selection of RandOpt's top K at a fraction of the scoring cost.

Rung 0 scores all N members on the first `min_examples` train examples; each later rung keeps
the best ⌈m/η⌉ of the m members the previous rung scored (never fewer than `keep`) and scores
them on η times as many examples, until the last rung reaches the whole train set. A member's
score at a rung is its mean over every example it has seen, so a rung only scores the examples
its survivors have not seen yet ([start, stop)); the top K come from the members the last rung
scored in full. Ranking ties go to the earlier-sampled member (`randopt.rank`), as in full
scoring.

`Halving` is the method behind the ask/tell interface (`thickets_jax.search`): one ask per rung,
its survivors on the rung's examples, under the store name `rung<index>`. Scoring is resumable
per rung: each rung's partial scores go to their own `CandidateStore` as chunks finish, so a
killed search re-scores nothing.
"""

import dataclasses
import math
from typing import Callable, Iterable, Optional, Sequence

import numpy as np
from absl import logging

from thickets_jax import randopt, search as search_api, storage
from thickets_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Rung:
  """Rung `index` scores its `members` best survivors on train examples [start, stop)."""
  index: int
  members: int
  start: int
  stop: int


def validate(eta: float, min_examples: int, num_examples: int, keep: int, n: int) -> None:
  if eta <= 1:
    raise InputError(f"--halving_eta must be greater than 1, got {eta}.")
  if not 1 <= min_examples <= num_examples:
    raise InputError(f"--halving_min_examples must be between 1 and the {num_examples} train "
                     f"examples, got {min_examples}.")
  randopt.validate_top_k([keep], n)


def schedule(n: int, num_examples: int, *, eta: float, min_examples: int,
             keep: int) -> list[Rung]:
  """The rungs for N members over `num_examples` train examples (module docstring)."""
  validate(eta, min_examples, num_examples, keep, n)
  rungs, members, stop = [Rung(0, n, 0, min_examples)], n, min_examples
  while stop < num_examples:
    members = max(keep, math.ceil(members / eta))
    start, stop = stop, min(num_examples, math.ceil(stop * eta))
    rungs.append(Rung(len(rungs), members, start, stop))
  return rungs


class Halving(search_api.Method):
  """Successive halving over `rungs` (module docstring); `result()` after the last rung."""

  def __init__(self, seeds: np.ndarray, sigmas: np.ndarray, rungs: Sequence[Rung]):
    self.seeds, self.sigmas, self.rungs = seeds, sigmas, list(rungs)
    self.totals, self.seen = np.zeros(len(seeds)), np.zeros(len(seeds))
    self.alive = np.arange(len(seeds))
    self.summary: list[dict] = []
    self.records: list[Sequence[dict]] = []

  @property
  def rung(self) -> Optional[Rung]:
    """The rung the next (or the outstanding) ask belongs to; None when all are scored."""
    done = len(self.summary)
    return self.rungs[done] if done < len(self.rungs) else None

  def ask(self) -> Optional[search_api.Ask]:
    rung = self.rung
    if rung is None:
      return None
    if rung.index:
      means = self.totals[self.alive] / self.seen[self.alive]
      self.alive = self.alive[randopt.rank(means)[:rung.members]]
      self.alive.sort()  # scoring order stays sampling order
    logging.info("halving rung %d: %d members on examples [%d, %d)", rung.index,
                 len(self.alive), rung.start, rung.stop)
    return search_api.Ask(self.seeds[self.alive], self.sigmas[self.alive], f"rung{rung.index}",
                          (rung.start, rung.stop))

  def tell(self, scores: search_api.Scores) -> None:
    rung = self.rung
    self.totals[self.alive] += scores.sums
    self.seen[self.alive] += scores.weights
    self.summary.append({"index": rung.index, "members": len(self.alive),
                         "examples": [rung.start, rung.stop]})
    self.records.append(scores.records)

  def result(self) -> dict:
    """{"order": [members of the last rung], best first, as indices into seeds;
        "scores": [N] mean score over the examples each member saw (NaN: none);
        "seen": [N] weight of the examples each member was scored on;
        "rungs": per rung {index, members, examples: [start, stop)};
        "records": per rung, the scorer's records of the members it scored;
        "evaluations": member × example evaluations over all rungs}."""
    with np.errstate(invalid="ignore"):
      scores = np.where(self.seen > 0, self.totals / np.maximum(self.seen, 1), np.nan)
    return {"order": self.alive[randopt.rank(scores[self.alive])], "scores": scores,
            "seen": self.seen, "rungs": self.summary, "records": self.records,
            "evaluations": sum(r["members"] * (r["examples"][1] - r["examples"][0])
                               for r in self.summary)}


def search(score_slice: Callable[[Rung], Callable], seeds: np.ndarray, sigmas: np.ndarray,
           rungs: Sequence[Rung], stores: Sequence[storage.CandidateStore]) -> dict:
  """Runs (or resumes) the rungs of `Halving` with per-rung scorers.

  Args:
    score_slice: rung -> a `score_chunk` for `randopt.score_candidates` over that rung's
      examples: (seeds [P], sigmas [P]) -> iterator of (slice, {"score_sum": [P'],
      "weight": [P'], ...}): a member's summed score over the rung's examples and their total
      weight (their count, or the multiplicity of repeated examples); other fields, e.g.
      `forward_flops`, are kept in the store.
    seeds, sigmas: [N] members in sampling order.
    rungs: from `schedule`. stores: one per rung.

  Returns:
    `Halving.result()`, "records" holding the stores' records.
  """
  method = Halving(seeds, sigmas, rungs)

  def score(ask: search_api.Ask) -> search_api.Scores:
    rung = method.rung
    records = randopt.score_candidates(score_slice(rung), ask.seeds, ask.sigmas,
                                       stores[rung.index])
    return search_api.Scores(np.asarray([r["score_sum"] for r in records], np.float64),
                             np.asarray([r["weight"] for r in records], np.float64), records)

  return search_api.run(method, score).result()


def recall(chosen: Iterable[int], reference: Iterable[int]) -> float:
  """|chosen ∩ reference| / |reference|: how much of the full-scoring top-K halving kept."""
  reference = set(reference)
  return len(set(chosen) & reference) / len(reference)
