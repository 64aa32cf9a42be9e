"""MBPP: write a Python function from its description so that the problem's asserts pass.

Records carry the dataset's own fields: `text` (the description), `test_list` (assert
statements) and `test_setup_code` (may be empty). The reference's source is the `datasets` copy
of MBPP (`google-research-datasets/mbpp`, configuration `full`), its train, validation and test
splits in that order (374 + 90 + 500 problems): train = the first `train_size`, test = the rest,
as the reference slices them; `--data PATH` (JSONL or parquet) gives them from one file
instead. Protocol: 200 train problems, 2048 new tokens (the reference handler's).

The program is the last `<answer>…</answer>` block, else the last fenced Python block, as the
reference takes it. It runs only in `sandbox.run` (a separate limited process; never here),
with the problem's setup code and asserts. Reward = correct = every assert passes. Vote key: the
program's observable behaviour, the values of each assert's left-hand side (e.g. `f(3)` in
`assert f(3) == 6`) on the test inputs, so two programs that compute the same outputs vote
together whatever their text (docs/method.md). A program that does not run casts no vote.

Grading a batch (`prepare`) runs its distinct programs in a pool of processes, one per core;
each (program, problem) runs once and its outcome is remembered for the reward, correctness and
vote of the same completion.
"""

import concurrent.futures
import dataclasses
import functools
import os
import re
from typing import Optional, Sequence

from thickets_jax.errors import InputError
from thickets_jax.tasks import data as records
from thickets_jax.tasks import sandbox
from thickets_jax.tasks.base import MAX_TEXT, TASKS, Example, Protocol, Task, field, last_block

SOURCE = ("google-research-datasets/mbpp", "full")
PROTOCOL = Protocol(train_size=200, max_new_tokens=2048)
_FENCE = re.compile(r"```(?:python|py)?[ \t]*\n")
MAX_PROGRAM_CHARS = 20_000


@dataclasses.dataclass(frozen=True)
class Problem:
  """What grading needs: the asserts and the setup code they run after."""
  tests: tuple[str, ...]
  setup: str = ""


def prompt(text: str, tests: Sequence[str]) -> str:
  return (f"{text}\nYour code should pass these tests:\n" + "\n".join(tests) +
          "\nShow your work in <think> </think> tags and return the complete Python code, "
          "without the tests, in <answer> </answer> tags.")


def _last_fenced(text: str) -> Optional[str]:
  """The content of the last fenced code block (an unclosed last one runs to the end), fences
  paired left to right in one pass."""
  block, position = None, 0
  while (opening := _FENCE.search(text, position)) is not None:
    end = text.find("```", opening.end())
    if end < 0:
      return text[opening.end():]
    block, position = text[opening.end():end], end + 3
  return block


def extract_program(completion: str) -> Optional[str]:
  """The last `<answer>` block (a fence inside it taken off), else the last fenced Python
  block; None if neither, or if longer than `MAX_PROGRAM_CHARS`."""
  text = completion[-MAX_TEXT:]
  program = last_block(text, "<answer>", "</answer>")
  if program is None:
    program = _last_fenced(text)
  elif _FENCE.search(program):
    program = _last_fenced(program)
  if program is None:
    return None
  program = program.strip("\n")
  return program if program.strip() and len(program) <= MAX_PROGRAM_CHARS else None


@functools.lru_cache(maxsize=4096)
def outcome(program: str, problem: Problem) -> sandbox.Outcome:
  """The sandboxed run of `program` on `problem`, once per pair."""
  return sandbox.run(program, problem.tests, problem.setup)


def _outcome(completion: str, problem: Optional[Problem]) -> Optional[sandbox.Outcome]:
  program = None if problem is None else extract_program(completion)
  return None if program is None else outcome(program, problem)


def correct(completion: str, problem: Problem) -> bool:
  result = _outcome(completion, problem)
  return bool(result and result.results and len(result.results) == len(problem.tests)
              and all(r["passed"] for r in result.results))


def vote_key(completion: str, problem: Problem) -> Optional[str]:
  result = _outcome(completion, problem)
  if not result or not result.results:
    return None
  return "\x1f".join(str(r["value"]) for r in result.results)


def prepare(completions: Sequence[str], problems: Sequence[Problem]) -> None:
  """Runs the distinct programs of a batch in parallel sandboxes (one per core), so the
  per-completion calls that follow find their outcomes."""
  pairs = {(p, g) for p, g in ((extract_program(c), g) for c, g in zip(completions, problems))
           if p is not None and g is not None}
  with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
    list(pool.map(lambda pair: outcome(*pair), pairs))


def problem_of(record: dict) -> Problem:
  tests = field(record, "test_list", list)
  if not tests or not all(isinstance(t, str) for t in tests):
    raise InputError(f"the field 'test_list' must be a non-empty list of assert statements, got "
                     f"{str(tests)[:60]!r}.")
  return Problem(tuple(tests), field(record, "test_setup_code", str, ""))


def example(record: dict) -> Example:
  problem = problem_of(record)
  return Example(prompt(field(record, "text", str), problem.tests), problem)


def splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  if data:
    train, test = records.file_splits(data, ("text", "test_list"), train_size, test_size)
  else:
    rows = [row for split in ("train", "validation", "test")
            for row in records.hub_split(*SOURCE, split)]
    train = rows[:train_size]
    test = rows[train_size:] if test_size <= 0 else rows[train_size:train_size + test_size]
  return [example(r) for r in train], [example(r) for r in test]


def _to_record(example_: Example) -> dict:
  return {"prompt": example_.prompt, "test_list": list(example_.gold.tests),
          "test_setup_code": example_.gold.setup}


def _from_record(record: dict) -> Example:
  """{"prompt", "test_list", "test_setup_code"?}, or an MBPP record ({"text", "test_list"});
  a prompt without tests has no gold and casts no vote."""
  if "prompt" not in record:
    return example(record)
  problem = problem_of(record) if "test_list" in record else None
  return Example(field(record, "prompt", str), problem)


TASKS.register("mbpp")(Task(
    name="mbpp", splits=splits, reward=lambda c, g: float(correct(c, g)), correct=correct,
    vote_key=vote_key, needs_data=True, protocol=PROTOCOL, prepare=prepare,
    time_limit_s=sandbox.Limits().wall_s,
    to_record=_to_record, from_record=_from_record))
