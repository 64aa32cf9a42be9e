"""Countdown (docs/method.md §4): reach a target from 3–4 numbers with + − × ÷ and parentheses.

Problems come from our own seeded generator: the target is the value of a random expression
over the drawn numbers, so every problem is solvable. Answers are checked by parsing them with
`ast` and evaluating a whitelisted tree with exact fractions — model text is never `eval`-ed.
"""

import ast
import dataclasses
import fractions
import random
import re
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks.base import (REFERENCE_PROTOCOL, TASKS, Example, Task, field, integers,
                                     last_block, procedural_splits)

MAX_ANSWER_CHARS = 200
MAX_LITERAL = 10**6
_ALLOWED_CHARS = re.compile(r"^[0-9+\-*/() ]*$")  # ASCII only: \d would admit any Unicode digit


@dataclasses.dataclass(frozen=True)
class Problem:
  numbers: tuple[int, ...]
  target: int


def generate(seed: int, count: int, *, min_numbers: int = 3, max_numbers: int = 4,
             max_number: int = 99, max_target: int = 999) -> list[Problem]:
  """`count` solvable problems, the same for the same seed (TinyZero-style ranges)."""
  rng = random.Random(seed)
  problems = []
  while len(problems) < count:
    numbers = [rng.randint(1, max_number) for _ in range(rng.randint(min_numbers, max_numbers))]
    value = _random_expression_value(rng, numbers)
    if value is not None and value.denominator == 1 and 1 <= value <= max_target:
      problems.append(Problem(tuple(numbers), int(value)))
  return problems


def _random_expression_value(rng: random.Random, numbers: list[int]) -> Optional[fractions.Fraction]:
  """Combines the numbers in random order with random operators, as a random binary tree."""
  values = [fractions.Fraction(n) for n in rng.sample(numbers, len(numbers))]
  while len(values) > 1:
    i = rng.randrange(len(values) - 1)
    a, b = values[i], values[i + 1]
    op = rng.choice("+-*/")
    if op == "/" and b == 0:
      return None
    values[i:i + 2] = [{"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None}[op]]
  return values[0]


def prompt(problem: Problem) -> str:
  numbers = ", ".join(str(n) for n in problem.numbers)
  return (f"Using the numbers [{numbers}], create an equation that equals {problem.target}. "
          "You can use basic arithmetic operations (+, -, *, /) and each number can only be used "
          "once. Show your work in <think> </think> tags. And return the final answer in "
          "<answer> </answer> tags, for example <answer> (1 + 2) / 3 </answer>.")


def _evaluate(node: ast.AST, literals: list[int]) -> fractions.Fraction:
  """Exact value of a whitelisted expression tree; raises ValueError on anything else."""
  if isinstance(node, ast.Expression):
    return _evaluate(node.body, literals)
  if isinstance(node, ast.Constant) and type(node.value) is int:
    if node.value > MAX_LITERAL:
      raise ValueError("literal too large")
    literals.append(node.value)
    return fractions.Fraction(node.value)
  if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.Div)):
    left, right = _evaluate(node.left, literals), _evaluate(node.right, literals)
    if isinstance(node.op, ast.Add):
      return left + right
    if isinstance(node.op, ast.Sub):
      return left - right
    if isinstance(node.op, ast.Mult):
      return left * right
    if right == 0:
      raise ValueError("division by zero")
    return left / right
  if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
    return -_evaluate(node.operand, literals)
  raise ValueError(f"{type(node).__name__} is not allowed")


def answer_value(answer: str, numbers: tuple[int, ...]) -> Optional[fractions.Fraction]:
  """The exact value of a valid answer expression, else None.

  Valid: only digits, + − * / ( ) and spaces; each given number used exactly once (as a
  multiset); no `**`; no division by zero; bounded size.
  """
  answer = answer.strip()
  if not answer or len(answer) > MAX_ANSWER_CHARS or not _ALLOWED_CHARS.match(answer):
    return None
  if "**" in answer:
    return None
  try:
    tree = ast.parse(answer, mode="eval")
    literals: list[int] = []
    value = _evaluate(tree, literals)
  except (SyntaxError, ValueError, RecursionError, MemoryError, OverflowError):
    return None
  if sorted(literals) != sorted(numbers):
    return None
  return value


def last_answer(completion: str) -> Optional[str]:
  return last_block(completion, "<answer>", "</answer>")


def _has_block(text: str, open_tag: str, close_tag: str) -> bool:
  start = text.find(open_tag)
  return start >= 0 and text.find(close_tag, start + len(open_tag)) >= 0


def format_score(completion: str, *, inside_think: bool = True) -> float:
  """1.0 for the full `<think>…</think>\n<answer>…</answer>` shape; else 0.1 for a think block
  plus 0.5 for an answer block.

  With `inside_think` (the reference's scoring, the default) the model is taken to start inside
  its think block: the shape of "<think>" + completion is scored, so a completion that only
  closes </think> gets the full shape. Without it, the completion itself is scored.
  """
  text = ("<think>" + completion if inside_think else completion).strip()
  middle = text.find("</think>\n<answer>", len("<think>"))
  if (text.startswith("<think>") and text.endswith("</answer>") and middle >= 0
      and middle + len("</think>\n<answer>") <= len(text) - len("</answer>")):
    return 1.0
  score = 0.0
  if _has_block(text, "<think>", "</think>"):
    score += 0.1
  if _has_block(text, "<answer>", "</answer>"):
    score += 0.5
  return score


def vote_key(completion: str, problem: Problem) -> Optional[str]:
  """The canonical vote: the exact value of a valid answer, e.g. '22' or '7/3'; None if invalid."""
  answer = last_answer(completion)
  value = None if answer is None else answer_value(answer, problem.numbers)
  return None if value is None else str(value)


def correct(completion: str, problem: Problem) -> bool:
  answer = last_answer(completion)
  value = None if answer is None else answer_value(answer, problem.numbers)
  return value is not None and abs(value - problem.target) < 1e-5


def reward(completion: str, problem: Problem, *, inside_think: bool = True) -> float:
  """0.1·format + answer, in [0, 1.1] (`format_score` for `inside_think`)."""
  return (0.1 * format_score(completion, inside_think=inside_think)
          + float(correct(completion, problem)))


def _examples(seed: int, count: int) -> list[Example]:
  return [Example(prompt(p), p) for p in generate(seed, count)]


def to_record(example: Example) -> dict:
  problem = example.gold
  return {"prompt": example.prompt, "numbers": list(problem.numbers), "target": problem.target}


def from_record(record: dict) -> Example:
  """{"numbers": [...], "target": T} (the vote checks the numbers); "prompt" defaults to ours."""
  problem = Problem(integers(record, "numbers"), field(record, "target", int))
  if not 1 <= len(problem.numbers) <= 8:
    raise InputError(f"a Countdown problem takes 1 to 8 numbers, got {len(problem.numbers)}.")
  return Example(field(record, "prompt", str, prompt(problem)), problem)


_CODEC = dict(to_record=to_record, from_record=from_record)


TASKS.register("countdown")(Task(
    name="countdown", splits=procedural_splits(_examples),
    reward=reward, correct=correct, vote_key=vote_key, max_reward=1.1,
    protocol=REFERENCE_PROTOCOL, **_CODEC))
# The same task with the format scored on the completion alone (this project's earlier shaping;
# it gives `</think>\n<answer>…` 0.05 where the reference gives 0.1).
TASKS.register("countdown_completion_format")(Task(
    name="countdown_completion_format", splits=procedural_splits(_examples),
    reward=lambda c, p: reward(c, p, inside_think=False), correct=correct, vote_key=vote_key,
    max_reward=1.1, protocol=REFERENCE_PROTOCOL, **_CODEC))
