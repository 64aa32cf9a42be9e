"""Task types and the task registry (see `thickets_jax.tasks`)."""

import dataclasses
import re
from typing import Any, Callable, Optional, Sequence

from thickets_jax.errors import InputError
from thickets_jax.registry import Registry


@dataclasses.dataclass(frozen=True)
class Example:
  prompt: str  # the user message, before any chat template
  gold: Any    # what the scorer needs: a Countdown problem, an answer string, ...


@dataclasses.dataclass(frozen=True)
class Protocol:
  """The reference code's scoring protocol for a task: examples each member is scored on and
  the generation limit (its reasoning completions run to hundreds of tokens)."""
  train_size: int
  max_new_tokens: int


REFERENCE_PROTOCOL = Protocol(train_size=200, max_new_tokens=1024)


@dataclasses.dataclass(frozen=True)
class Task:
  """A task: `splits(train_size, test_size, seed, data)` -> (train, test) examples."""
  name: str
  splits: Callable[[int, int, int, Optional[str]], tuple[list[Example], list[Example]]]
  reward: Callable[[str, Any], float]
  correct: Callable[[str, Any], bool]
  vote_key: Callable[[str, Any], Optional[str]]
  max_reward: float = 1.0
  needs_data: bool = False  # a dataset: --data PATH or the `datasets` hub cache
  protocol: Optional[Protocol] = None  # the reference's, for the paper's tasks
  # A prompts file's JSON record <-> Example, for answering new prompts (experiments.predict).
  # `from_record` gives gold None when the record carries no answer and the vote key needs none.
  to_record: Callable[[Example], dict] = lambda example: {"prompt": example.prompt}
  from_record: Callable[[dict], Example] = lambda record: Example(field(record, "prompt", str),
                                                                  None)
  # Optional: (completions, golds) -> None, called before a batch is graded, e.g. to run the
  # batch's programs in parallel sandboxes (mbpp).
  prepare: Optional[Callable[[Sequence[str], Sequence[Any]], None]] = None
  # The bound of one grader call where grading may run that long (mbpp: the sandbox's wall
  # clock); None: graders are linear-time and fast.
  time_limit_s: Optional[float] = None


TASKS: Registry[Task] = Registry("task")
MAX_TEXT = 20_000  # completions are cut to this before parsing (bounded work on hostile text)
# A decimal number ("-1,234.5", "+7", "12"); no optional prefix before a digit, so scanning a
# text with it takes linear time.
NUMBER = re.compile(r"[+-]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")


def last_block(text: str, open_tag: str, close_tag: str) -> Optional[str]:
  """The content of the last `open_tag…close_tag` block, or None. Linear time: a regex like
  `<answer>(.*?)</answer>` rescans the rest of the text from every opening tag."""
  end = text.rfind(close_tag)
  if end < 0:
    return None
  start = text.rfind(open_tag, 0, end)
  return None if start < 0 else text[start + len(open_tag):end]


def procedural_splits(make: Callable[[int, int], list[Example]]):
  """Train = the first `train_size` examples of one seeded stream, test = the next ones."""
  def splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
    del data
    examples = make(seed, train_size + test_size)
    return examples[:train_size], examples[train_size:]
  return splits


def field(record: dict, name: str, kind: type, default: Any = InputError) -> Any:
  """`record[name]` checked to be a `kind` (a JSON value), or `default` when absent; one
  sentence for a missing or mistyped field."""
  if name not in record:
    if default is InputError:
      raise InputError(f"the record lacks the field {name!r}.")
    return default
  value = record[name]
  if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
    raise InputError(f"the field {name!r} must be a {kind.__name__}, got {value!r}.")
  return value


def integers(record: dict, name: str) -> tuple[int, ...]:
  values = field(record, name, list)
  if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
    raise InputError(f"the field {name!r} must be a non-empty list of integers, got {values!r}.")
  return tuple(values)
