"""Scoring the base model and perturbed members on tasks: the runner every LLM experiment shares.

Rewards are computed from generated text on the host (`Task.reward`, never executing model
output); all prompts of all tasks go through one `Generator` call per chunk of members, and each
chunk's scores are appended to the run's `CandidateStore` as soon as it finishes.
"""

import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np
from jax.sharding import Mesh

from thickets_jax import randopt
from thickets_jax.llm.generate import Generator
from thickets_jax.tasks import Example, Task


@dataclasses.dataclass(frozen=True)
class TaskSet:
  task: Task
  examples: list[Example]


def grade(completions: Sequence[str], task_set: TaskSet) -> dict:
  """Per-example reward, correctness and vote key of one model's completions on one task."""
  examples = task_set.examples
  return {
      "reward": [task_set.task.reward(c, e.gold) for c, e in zip(completions, examples)],
      "correct": [bool(task_set.task.correct(c, e.gold)) for c, e in zip(completions, examples)],
      "votes": [task_set.task.vote_key(c, e.gold) for c, e in zip(completions, examples)],
  }


def _split(completions: Sequence[str], task_sets: Sequence[TaskSet]) -> list[list[str]]:
  parts, start = [], 0
  for task_set in task_sets:
    parts.append(list(completions[start:start + len(task_set.examples)]))
    start += len(task_set.examples)
  return parts


def _prompts(task_sets: Sequence[TaskSet]) -> list[str]:
  return [e.prompt for s in task_sets for e in s.examples]


def summarize(completions: Sequence[Sequence[str]], task_sets: Sequence[TaskSet], *,
              keep_examples: bool = False, keep_completions: int = 0) -> dict:
  """Mean reward and accuracy per task ([M] lists) of one model's completions (one list per task).

  With `keep_examples`, also the per-example correctness and vote keys; with `keep_completions`
  k, the first k completions of each task (to read what a member actually wrote).
  """
  grades = [grade(c, s) for c, s in zip(completions, task_sets)]
  summary = {"reward": [float(np.mean(g["reward"])) for g in grades],
             "accuracy": [float(np.mean(g["correct"])) for g in grades]}
  if keep_examples:
    summary.update(correct=[g["correct"] for g in grades], votes=[g["votes"] for g in grades])
  if keep_completions:
    summary["completions"] = [list(c[:keep_completions]) for c in completions]
  return summary


def score_base(generator: Generator, task_sets: Sequence[TaskSet], **summary_kwargs) -> dict:
  """`summarize` of the base model's completions; keyword arguments as `summarize`."""
  completions = generator.generate(_prompts(task_sets))
  return summarize(_split(completions, task_sets), task_sets, **summary_kwargs)


def member_chunks(generator: Generator, task_sets: Sequence[TaskSet], *, members_per_batch: int,
                  mesh: Optional[Mesh] = None, **summary_kwargs):
  """A `score_chunk` for `randopt.score_candidates`: members -> per-task scores, chunk by chunk.

  `summary_kwargs` go to `summarize`.
  """
  prompts = _prompts(task_sets)

  def score_chunk(seeds: np.ndarray, sigmas: np.ndarray) -> Iterator[tuple[slice, dict]]:
    for part, texts in generator.generate_population(seeds, sigmas, prompts,
                                                     members_per_batch=members_per_batch, mesh=mesh):
      summaries = [summarize(_split(member, task_sets), task_sets, **summary_kwargs)
                   for member in texts]
      yield part, {key: [s[key] for s in summaries] for key in summaries[0]}
  return score_chunk


def score_members(generator: Generator, task_sets: Sequence[TaskSet], seeds: np.ndarray,
                  sigmas: np.ndarray, store: randopt.CandidateStore, *, members_per_batch: int,
                  mesh: Optional[Mesh] = None, **summary_kwargs) -> list[dict]:
  """Scores (or resumes scoring) every member; records in member order."""
  return randopt.score_candidates(
      member_chunks(generator, task_sets, members_per_batch=members_per_batch, mesh=mesh,
                    **summary_kwargs), seeds, sigmas, store)
