"""GSM8K, MATH-500 and OlympiadBench (docs/method.md §4), from a local JSONL/parquet file or
the `datasets` cache.

With `--data PATH` (one file): train = its first `train_size` records, test = the next
`test_size` (0: all the rest). Without it, the `datasets` hub cache is read offline:
GSM8K train from its train split and test from its test split (1319); MATH-500 and
OlympiadBench, which have one split, train = the first `train_size`, test = the rest. Test never
falls back to train.
"""

import decimal
import re
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks import data as records
from thickets_jax.tasks.base import (MAX_TEXT, REFERENCE_PROTOCOL, TASKS, Example, Protocol, Task,
                                     field)

GSM8K_SUFFIX = ' Let\'s think step by step and output the final answer after "####".'
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")  # linear: no optional prefix before \d


# ---------------------------------------------------------------- GSM8K

def canonical_number(text: str) -> Optional[str]:
  """'1,234.50' -> '1234.5'; None when the text is no number."""
  text = text.replace(",", "").replace("$", "").strip().rstrip(".")
  try:
    value = decimal.Decimal(text)
  except decimal.InvalidOperation:
    return None
  if not value.is_finite() or abs(value.adjusted()) > 100:
    return None
  return format(value.normalize(), "f")  # '18.00' -> '18', '1E+2' -> '100'


def gsm8k_extract(completion: str) -> Optional[str]:
  """The number after the last '####', else the last number in the text (its tail is read)."""
  completion = completion[-MAX_TEXT:]
  if "####" in completion:
    match = _NUMBER.search(completion.rsplit("####", 1)[1])
    if match:
      return canonical_number(match.group())
  numbers = _NUMBER.findall(completion)
  return canonical_number(numbers[-1]) if numbers else None


def _gsm8k_example(record: dict) -> Example:
  gold = canonical_number(str(record["answer"]).rsplit("####", 1)[-1])
  if gold is None:
    raise InputError(f"a GSM8K answer has no number after '####': {str(record['answer'])[-60:]!r}.")
  return Example(record["question"] + GSM8K_SUFFIX, gold)


def gsm8k_splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  if data:
    train, test = records.file_splits(data, ("question", "answer"), train_size, test_size)
  else:
    train = records.hub_split("openai/gsm8k", "main", "train")[:train_size]
    test = records.hub_split("openai/gsm8k", "main", "test")
    test = test if test_size <= 0 else test[:test_size]
  return [_gsm8k_example(r) for r in train], [_gsm8k_example(r) for r in test]


def gsm8k_correct(completion: str, gold: str) -> bool:
  return gsm8k_extract(completion) == gold


def _answer_codec(question_field: str, suffix: str, canonical=str):
  """Records {"prompt": ...} or {question_field: ...} (our suffix appended), "answer" optional."""
  def to_record(example: Example) -> dict:
    return {"prompt": example.prompt, "answer": example.gold}

  def from_record(record: dict) -> Example:
    if "prompt" in record:
      text = field(record, "prompt", str)
    else:
      text = field(record, question_field, str) + suffix
    answer = record.get("answer")
    gold = None if answer is None else canonical(str(answer).rsplit("####", 1)[-1])
    if answer is not None and gold is None:
      raise InputError(f"the answer {str(answer)[-60:]!r} holds no number.")
    return Example(text, gold)
  return dict(to_record=to_record, from_record=from_record)


TASKS.register("gsm8k")(Task(
    name="gsm8k", splits=gsm8k_splits,
    reward=lambda c, g: float(gsm8k_correct(c, g)), correct=gsm8k_correct,
    vote_key=lambda c, g: gsm8k_extract(c), needs_data=True, protocol=REFERENCE_PROTOCOL,
    **_answer_codec("question", GSM8K_SUFFIX, canonical_number)))


# ---------------------------------------------------------------- MATH-500

MAX_BOXED_CHARS = 1000  # a longer "final answer" is no answer (and math-verify time grows with it)


def last_boxed(text: str) -> Optional[str]:
  """Content of the last \\boxed{...} (or \\fbox{...}), braces balanced; None if there is none
  or it is longer than `MAX_BOXED_CHARS`."""
  text = text[-MAX_TEXT:]
  start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
  if start < 0:
    return None
  i = text.index("{", start) + 1
  depth, begin = 1, i
  while i < len(text):
    depth += {"{": 1, "}": -1}.get(text[i], 0)
    if depth == 0:
      return text[begin:i]
    if i - begin > MAX_BOXED_CHARS:
      return None
    i += 1
  return None


def _parse(latex: str):
  from math_verify import parse  # pylint: disable=g-import-not-at-top
  try:
    return parse(f"\\boxed{{{latex}}}", parsing_timeout=2)
  except Exception:  # pylint: disable=broad-except  # hostile text must never raise
    return []


def math_vote_key(completion: str, gold: str) -> Optional[str]:
  del gold
  answer = last_boxed(completion)
  if answer is None:
    return None
  parsed = _parse(answer)
  return str(parsed[0]) if parsed else re.sub(r"\s+", "", answer)


def math_correct(completion: str, gold: str) -> bool:
  """math-verify equivalence of the last boxed answer with the gold answer."""
  from math_verify import verify  # pylint: disable=g-import-not-at-top
  answer = last_boxed(completion)
  if answer is None:
    return False
  gold_parsed, answer_parsed = _parse(gold), _parse(answer)
  if not gold_parsed or not answer_parsed:
    return False
  try:
    return bool(verify(gold_parsed, answer_parsed, timeout_seconds=2))
  except Exception:  # pylint: disable=broad-except
    return False


def math500_splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  if data:
    train, test = records.file_splits(data, ("problem", "answer"), train_size, test_size)
  else:
    rows = records.hub_split("HuggingFaceH4/MATH-500", None, "test")
    train = rows[:train_size]
    test = rows[train_size:] if test_size <= 0 else rows[train_size:train_size + test_size]
  make = lambda r: Example(r["problem"] + MATH_SUFFIX, str(r["answer"]))
  return [make(r) for r in train], [make(r) for r in test]


TASKS.register("math500")(Task(
    name="math500", splits=math500_splits,
    reward=lambda c, g: float(math_correct(c, g)), correct=math_correct,
    vote_key=math_vote_key, needs_data=True, protocol=REFERENCE_PROTOCOL,
    **_answer_codec("problem", MATH_SUFFIX)))


# ---------------------------------------------------------------- OlympiadBench

# The reference's source: `Hothan/OlympiadBench`, its open-ended, text-only, English maths
# problems with a final answer (configuration OE_TO_maths_en_COMP, 674 problems); 2048 new
# tokens, the reference handler's.
OLYMPIAD_SOURCE = ("Hothan/OlympiadBench", "OE_TO_maths_en_COMP", "train")
OLYMPIAD_PROTOCOL = Protocol(train_size=200, max_new_tokens=2048)


def olympiad_answer(final_answer) -> str:
  """The gold LaTeX of a record's `final_answer` (a list of strings, or one string): its first
  answer, as the reference takes it, the dollar signs that delimit it taken off."""
  answers = list(final_answer) if not isinstance(final_answer, str) else [final_answer]
  if not answers or not all(isinstance(a, str) for a in answers):
    raise InputError(f"an OlympiadBench final_answer must be a string or a list of strings, got "
                     f"{str(final_answer)[:60]!r}.")
  return answers[0].strip().strip("$").strip()


def olympiad_splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  if data:
    train, test = records.file_splits(data, ("question", "final_answer"), train_size, test_size)
  else:
    rows = records.hub_split(*OLYMPIAD_SOURCE)
    train = rows[:train_size]
    test = rows[train_size:] if test_size <= 0 else rows[train_size:train_size + test_size]
  make = lambda r: Example(str(r["question"]) + MATH_SUFFIX, olympiad_answer(r["final_answer"]))
  return [make(r) for r in train], [make(r) for r in test]


TASKS.register("olympiadbench")(Task(
    name="olympiadbench", splits=olympiad_splits,
    reward=lambda c, g: float(math_correct(c, g)), correct=math_correct,
    vote_key=math_vote_key, needs_data=True, protocol=OLYMPIAD_PROTOCOL,
    **_answer_codec("question", MATH_SUFFIX)))
