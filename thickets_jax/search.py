"""The interface every search method shares: ask/tell over `(seed, σ)` members.

A method asks for members to be scored (an `Ask`: seeds and sigmas perturbing a centre, on a
slice of the train examples, under a store name) and is told their scores (a `Scores`), until
it asks for nothing more. RandOpt asks once for all N members; successive halving asks once
per rung for its survivors on that rung's examples; ES asks once per iteration for members
around its current iterate. `run` drives any of them with any scorer, so one scorer (a model,
a task, a `CandidateStore` per store name) serves every method.

Resumption is the scorer's: it persists each ask's scores under `Ask.store` and skips what that
store holds, so a rerun replays the asks whose scores are on disk without computing them.
Methods that move weights (ES) may also restore their state from a checkpoint and ask only for
what is left. A method is deterministic given its scores, so replay gives the same asks.

Why not evosax's functional `ask(state, key) -> (x, state)`: our members are not arrays of
candidate parameters but `(seed, σ)` names of perturbations that the scorer rebuilds inside its
compiled call, and their scores come from generated text graded on the host, so a method's
state lives on the host and a stateful object is the plainer contract.
"""

import abc
import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Ask:
  """Members a method wants scored next.

  Attributes:
    seeds: [P] int64 and sigmas: [P] float64, the members `(seed, σ)`.
    store: the name their scores are persisted under (e.g. "candidates", "rung1",
      "iteration_0003"); one name per ask of a run.
    examples: the train examples to score on, [start, stop); None: all of them.
    center: the parameters the members perturb; None: the pretrained ones.
  """
  seeds: np.ndarray
  sigmas: np.ndarray
  store: str
  examples: Optional[tuple[int, int]] = None
  center: Optional[PyTree] = None


@dataclasses.dataclass(frozen=True)
class Scores:
  """An ask's scores, members in its order: a member's score is `sums / weights`.

  Attributes:
    sums: [P] summed score over the ask's examples (or the mean, with weights 1).
    weights: [P] the examples' total weight (their count or multiplicity; 1 for a mean).
    records: the scorer's records of the members (what its store holds), for the caller.
  """
  sums: np.ndarray
  weights: np.ndarray
  records: Sequence[dict] = ()

  @classmethod
  def means(cls, scores: Sequence[float], records: Sequence[dict] = ()) -> "Scores":
    """Scores that are already means: weights 1."""
    scores = np.asarray(scores, np.float64)
    return cls(scores, np.ones_like(scores), records)

  @property
  def mean(self) -> np.ndarray:
    return self.sums / self.weights


class Method(abc.ABC):
  """A search method: `ask` until it returns None, `tell` each ask's scores in between."""

  @abc.abstractmethod
  def ask(self) -> Optional[Ask]:
    """The members to score next, or None when the search is done."""

  @abc.abstractmethod
  def tell(self, scores: Scores) -> None:
    """The scores of the last ask's members, in its order."""


def run(method: Method, score: Callable[[Ask], Scores],
        after_tell: Callable[[Ask, Scores], None] = lambda ask, scores: None) -> Method:
  """Drives `method` to the end: `score` each ask, tell the method, then `after_tell` (e.g. a
  checkpoint or a test evaluation). Returns the method, whose attributes hold its result."""
  while (ask := method.ask()) is not None:
    scores = score(ask)
    method.tell(scores)
    after_tell(ask, scores)
  return method
