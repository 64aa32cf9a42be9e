"""GSM8K and MATH-500 (docs/method.md §4), from a local JSONL/parquet file or the `datasets` cache.

With `--data PATH` (one file): train = its first `train_size` records, test = the next
`test_size` (0: all the rest). Without it, the `datasets` hub cache is read offline:
GSM8K train from its train split and test from its test split (1319); MATH-500, which has one
split of 500, train = the first `train_size`, test = the rest. Test never falls back to train.
"""

import contextlib
import decimal
import json
import os
import re
from typing import Iterator, Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks.base import REFERENCE_PROTOCOL, TASKS, Example, Task, field

GSM8K_SUFFIX = ' Let\'s think step by step and output the final answer after "####".'
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")  # linear: no optional prefix before \d
_MAX_TEXT = 20_000  # completions are cut to this before parsing (bounded work on hostile text)


def read_records(path: str) -> list[dict]:
  """Records of a JSONL or parquet file, in file order."""
  if not os.path.isfile(path):
    raise InputError(f"--data {path} is not a file.")
  try:
    if path.endswith(".parquet"):
      import pyarrow.parquet as pq  # pylint: disable=g-import-not-at-top
      return pq.read_table(path).to_pylist()
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except (OSError, ValueError) as e:
    raise InputError(f"cannot read {path} as JSONL or parquet ({e}).") from None
  records = []
  for number, line in enumerate(lines, 1):
    if line.strip():
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise InputError(f"{path} line {number} is not JSON ({e.msg}).") from None
      if not isinstance(record, dict):
        raise InputError(f"{path} line {number} is not a JSON object.")
      records.append(record)
  return records


@contextlib.contextmanager
def _offline() -> Iterator[None]:
  """The Hugging Face libraries in offline mode while the block runs: the hub cache is read,
  the network never (else a machine without it spends half a minute on retries). `datasets`
  and `huggingface_hub` read HF_HUB_OFFLINE once, at import, hence the attributes."""
  import datasets  # pylint: disable=g-import-not-at-top
  import huggingface_hub  # pylint: disable=g-import-not-at-top
  modules = (datasets.config, huggingface_hub.constants)
  before = [m.HF_HUB_OFFLINE for m in modules]
  for m in modules:
    m.HF_HUB_OFFLINE = True
  try:
    yield
  finally:
    for m, value in zip(modules, before):
      m.HF_HUB_OFFLINE = value


def _hub_split(repo: str, config: Optional[str], split: str) -> list[dict]:
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    with _offline():
      return list(datasets.load_dataset(repo, config, split=split,
                                        download_mode="reuse_cache_if_exists"))
  except Exception as e:  # pylint: disable=broad-except  # any miss means: not in the cache
    raise InputError(f"the task needs {repo} ({split}): pass --data PATH (JSONL or parquet) or "
                     f"put it in the datasets cache on a machine with internet "
                     f"(datasets.load_dataset({repo!r}{', ' + repr(config) if config else ''})); "
                     f"reading the cache failed: {type(e).__name__}.") from None


def _check_fields(records: list[dict], fields: tuple[str, ...], source: str) -> None:
  for i, record in enumerate(records):
    missing = [f for f in fields if f not in record]
    if missing:
      raise InputError(f"record {i} of {source} lacks the field {missing[0]!r}.")


def _file_splits(path, fields, train_size, test_size):
  records = read_records(path)
  _check_fields(records, fields, path)
  if len(records) <= train_size:
    raise InputError(f"{path} has {len(records)} records: none left for a test split after "
                     f"{train_size} train records.")
  stop = len(records) if test_size <= 0 else train_size + test_size
  return records[:train_size], records[train_size:stop]


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
  completion = completion[-_MAX_TEXT:]
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
    train, test = _file_splits(data, ("question", "answer"), train_size, test_size)
  else:
    train = _hub_split("openai/gsm8k", "main", "train")[:train_size]
    test = _hub_split("openai/gsm8k", "main", "test")
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
  text = text[-_MAX_TEXT:]
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
    train, test = _file_splits(data, ("problem", "answer"), train_size, test_size)
  else:
    records = _hub_split("HuggingFaceH4/MATH-500", None, "test")
    train = records[:train_size]
    test = records[train_size:] if test_size <= 0 else records[train_size:train_size + test_size]
  make = lambda r: Example(r["problem"] + MATH_SUFFIX, str(r["answer"]))
  return [make(r) for r in train], [make(r) for r in test]


TASKS.register("math500")(Task(
    name="math500", splits=math500_splits,
    reward=lambda c, g: float(math_correct(c, g)), correct=math_correct,
    vote_key=math_vote_key, needs_data=True, protocol=REFERENCE_PROTOCOL,
    **_answer_codec("problem", MATH_SUFFIX)))
