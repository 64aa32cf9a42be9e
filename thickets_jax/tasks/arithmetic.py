"""Arithmetic tasks: short integer expressions, graded on the last number of the answer.

Our own seeded generator (usual precedence), so the tasks are offline and sized for small
models: on them the two offline models score between 0 and 1 with answers of a few tokens
(docs/results.md), which is what density and discordance need. `ARITHMETIC_TASKS` holds the
variants (`arithmetic`: 2–3 terms in 1–20 over + − ×; `addition`, `subtraction`,
`multiplication`). The answer is the last number in the completion (the usual protocol for
free-form numeric answers, as GSM8K's fallback); nothing executes model text, and the gold
value is computed by our own evaluator.
"""

import dataclasses
import fractions
import random
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks.base import (NUMBER, TASKS, Example, Task, field, integers,
                                     procedural_splits)

TAIL_CHARS = 2000  # the answer is the last number: only the tail of a completion is read


@dataclasses.dataclass(frozen=True)
class Problem:
  numbers: tuple[int, ...]
  operators: tuple[str, ...]

  @property
  def expression(self) -> str:
    return str(self.numbers[0]) + "".join(f" {o} {n}" for o, n in zip(self.operators,
                                                                       self.numbers[1:]))

  @property
  def value(self) -> int:
    """× before + and −, left to right."""
    terms, signs = [self.numbers[0]], []
    for op, n in zip(self.operators, self.numbers[1:]):
      if op == "*":
        terms[-1] *= n
      else:
        terms.append(n)
        signs.append(op)
    total = terms[0]
    for sign, term in zip(signs, terms[1:]):
      total = total + term if sign == "+" else total - term
    return total


@dataclasses.dataclass(frozen=True)
class Shape:
  """What problems of one task look like."""
  min_terms: int = 2
  max_terms: int = 3
  max_number: int = 20
  operators: str = "+-*"


ARITHMETIC_TASKS = {
    "arithmetic": Shape(),
    "addition": Shape(min_terms=2, max_terms=2, max_number=20, operators="+"),
    "subtraction": Shape(min_terms=2, max_terms=2, max_number=20, operators="-"),
    "multiplication": Shape(min_terms=2, max_terms=2, max_number=25, operators="*"),
}


def generate(seed: int, count: int, shape: Shape = Shape()) -> list[Problem]:
  """`count` problems of `shape`, the same for the same seed."""
  rng = random.Random(seed)
  problems = []
  for _ in range(count):
    terms = rng.randint(shape.min_terms, shape.max_terms)
    problems.append(Problem(tuple(rng.randint(1, shape.max_number) for _ in range(terms)),
                            tuple(rng.choice(shape.operators) for _ in range(terms - 1))))
  return problems


def prompt(problem: Problem) -> str:
  return f"What is {problem.expression}? Answer with a single number."


def extract(completion: str) -> Optional[fractions.Fraction]:
  """The last number in the completion ("1,234" and "12.0" read as numbers), or None."""
  last = None
  for last in NUMBER.finditer(completion[-TAIL_CHARS:]):
    pass
  return None if last is None else fractions.Fraction(last.group().replace(",", ""))


def correct(completion: str, problem: Problem) -> bool:
  return extract(completion) == problem.value


def vote_key(completion: str, problem: Problem) -> Optional[str]:
  del problem
  value = extract(completion)
  return None if value is None else str(value)


def to_record(example: Example) -> dict:
  problem = example.gold
  return {"prompt": example.prompt, "numbers": list(problem.numbers),
          "operators": list(problem.operators)}


def from_record(record: dict) -> Example:
  """{"numbers": [...], "operators": [...]} (gold known), or {"prompt": "What is ...?"} alone."""
  if "numbers" not in record:
    return Example(field(record, "prompt", str), None)
  numbers, operators = integers(record, "numbers"), tuple(field(record, "operators", list))
  if len(operators) != len(numbers) - 1 or not set(operators) <= set("+-*"):
    raise InputError(f"'operators' must be {len(numbers) - 1} of +, -, *; got {operators!r}.")
  problem = Problem(numbers, operators)
  return Example(field(record, "prompt", str, prompt(problem)), problem)


def _examples(shape: Shape):
  return lambda seed, count: [Example(prompt(p), p) for p in generate(seed, count, shape)]


for _name, _shape in ARITHMETIC_TASKS.items():
  TASKS.register(_name)(Task(
      name=_name, splits=procedural_splits(_examples(_shape)),
      reward=lambda c, p: float(correct(c, p)), correct=correct, vote_key=vote_key,
      to_record=to_record, from_record=from_record))
