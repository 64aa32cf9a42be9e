"""Scoring the base model and perturbed members on tasks: the runner every LLM experiment shares.

Rewards are computed from generated text on the host (`Task.reward`, never executing model
output); all prompts of all tasks go through one `Generator` call per chunk of members, and each
chunk's scores are appended to the run's `CandidateStore` as soon as it finishes.
"""

import concurrent.futures
import dataclasses
from typing import Iterator, Optional, Sequence

import numpy as np
from jax.sharding import Mesh

from thickets_jax import flops, randopt, storage
from thickets_jax.llm.generate import completion_mask
from thickets_jax.llm.generator import Generator
from thickets_jax.tasks import Example, Task


@dataclasses.dataclass(frozen=True)
class TaskSet:
  task: Task
  examples: list[Example]


def grade(completions: Sequence[str], task_set: TaskSet) -> dict:
  """Per-example reward, correctness and vote key of one model's completions on one task."""
  examples = task_set.examples
  if task_set.task.prepare is not None:
    task_set.task.prepare(completions, [e.gold for e in examples])
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


def forward_flops(generator: Generator, prompt_lengths: np.ndarray, ids: np.ndarray) -> float:
  """Model FLOPs of generating `ids` [prompts, new] after prompts of `prompt_lengths` tokens
  (`flops.sequence_flops` over the real tokens: prompt + generated, the stop token included)."""
  generated = completion_mask(ids, generator.codec.stop_ids).sum(-1)
  return flops.sequence_flops(generator.config, prompt_lengths + generated)


def truncated(generator: Generator, ids: np.ndarray) -> float:
  """The fraction of rows of `ids` [prompts, new] cut at `max_new_tokens` (no stop token)."""
  return float(np.mean(~np.any(np.isin(ids, generator.codec.stop_ids), axis=-1)))


def _prompt_lengths(generator: Generator, prompts: Sequence[str]) -> np.ndarray:
  return np.asarray([len(x) for x in generator.codec.token_ids(prompts)])


def score_base(generator: Generator, task_sets: Sequence[TaskSet], params=None,
               **summary_kwargs) -> dict:
  """`summarize` of the base model's (or `params`') greedy completions, with their
  `forward_flops` and the fraction `truncated` at max_new_tokens; keyword arguments as
  `summarize`."""
  prompts = _prompts(task_sets)
  return _summarize_ids(generator, task_sets, prompts,
                        generator.base_token_ids(prompts, params=params), 1, summary_kwargs)


def score_averaged(generator: Generator, task_sets: Sequence[TaskSet], seeds: np.ndarray,
                   sigmas: np.ndarray, **summary_kwargs) -> dict:
  """`score_base` of the probability-averaging ensemble of the members `(seeds, sigmas)`
  (`Generator.averaged_token_ids`); its forward FLOPs are the K members'."""
  prompts = _prompts(task_sets)
  ids = generator.averaged_token_ids(seeds, sigmas, prompts)
  return _summarize_ids(generator, task_sets, prompts, ids, len(seeds), summary_kwargs)


def _summarize_ids(generator, task_sets, prompts, ids, members: int, summary_kwargs) -> dict:
  completions = [generator.codec.decode(row) for row in ids]
  return {**summarize(_split(completions, task_sets), task_sets, **summary_kwargs),
          "forward_flops": members * forward_flops(generator, _prompt_lengths(generator, prompts),
                                                   ids),
          "truncated": truncated(generator, ids)}


def member_chunks(generator: Generator, task_sets: Sequence[TaskSet], *, members_per_batch: int,
                  mesh: Optional[Mesh] = None, params=None, **summary_kwargs):
  """A `score_chunk` for `randopt.score_candidates`: members -> per-task scores, the member's
  `forward_flops` and its fraction of completions `truncated` at max_new_tokens, chunk by
  chunk. Members perturb `params` (default: the generator's).

  Grading overlaps generation: chunk i is graded on a host thread while the device generates
  chunk i + 1 (the compiled call releases the GIL), so a chunk's scores are yielded, and
  persisted by the caller, one chunk's generation later. `summary_kwargs` go to `summarize`.
  """
  prompts = _prompts(task_sets)
  prompt_lengths = _prompt_lengths(generator, prompts)

  def grade_chunk(ids: np.ndarray) -> dict:
    summaries = []
    for member in ids:
      texts = [generator.codec.decode(row) for row in member]
      summaries.append({**summarize(_split(texts, task_sets), task_sets, **summary_kwargs),
                        "forward_flops": forward_flops(generator, prompt_lengths, member),
                        "truncated": truncated(generator, member)})
    return {key: [s[key] for s in summaries] for key in summaries[0]}

  def score_chunk(seeds: np.ndarray, sigmas: np.ndarray) -> Iterator[tuple[slice, dict]]:
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as grader:
      pending = None
      for part, ids in generator.population_token_ids(seeds, sigmas, prompts, params=params,
                                                      members_per_batch=members_per_batch,
                                                      mesh=mesh):
        graded = (part, grader.submit(grade_chunk, ids))
        if pending is not None:
          yield pending[0], pending[1].result()
        pending = graded
      if pending is not None:
        yield pending[0], pending[1].result()
  return score_chunk


def score_members(generator: Generator, task_sets: Sequence[TaskSet], seeds: np.ndarray,
                  sigmas: np.ndarray, store: storage.CandidateStore, *, members_per_batch: int,
                  mesh: Optional[Mesh] = None, params=None, **summary_kwargs) -> list[dict]:
  """Scores (or resumes scoring) every member of `params` (default: the generator's); records
  in member order."""
  return randopt.score_candidates(
      member_chunks(generator, task_sets, members_per_batch=members_per_batch, mesh=mesh,
                    params=params, **summary_kwargs), seeds, sigmas, store)
