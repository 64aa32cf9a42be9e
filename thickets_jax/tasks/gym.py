"""Procedural reasoning tasks from `reasoning-gym`, several domains, fully offline.

Only tasks whose scorers treat the answer as data are exposed: reasoning-gym scores
string_insertion, spiral_matrix, binary_matrix and n_queens by `eval`-ing the model's text,
so they are left out. The answer is the last <answer>...</answer> block, cut to
`MAX_ANSWER_CHARS`.

Correctness is ours and exact: the answer, normalised for its task (one number; a list of
numbers; a comma-separated word list; one word, case-folded), must equal the gold normalised
the same way. Several upstream scorers are lenient — gsm_symbolic reads the first number and
drops its sign, number_sorting accepts every value within ±1, spell_backward accepts the gold
followed by extra text when a float sum rounds up — so their score is kept only as partial
credit for answers it does not call right: reward = 1 for a correct answer, else the upstream
score when it is below 1, else 0.
"""

import decimal
from typing import Callable, Optional

from thickets_jax.tasks.base import (NUMBER, TASKS, Example, Task, field, last_block,
                                     procedural_splits)

MAX_ANSWER_CHARS = 2000
INSTRUCTION = "\nGive only the final answer inside <answer></answer> tags."


def _number(text: str) -> Optional[str]:
  """'-1,234.50' -> '-1234.5'; None unless the whole text is one number."""
  text = text.strip()
  if not NUMBER.fullmatch(text):
    return None
  value = decimal.Decimal(text.replace(",", ""))
  return format(value.normalize(), "f") if value else "0"


def _number_list(text: str) -> Optional[str]:
  """"['-2.8', '0.9']" or "[-2.8, 0.9]" -> '-2.8,0.9'; None unless every item is a number."""
  text = text.strip()
  if not (text.startswith("[") and text.endswith("]")):
    return None
  items = [item.strip().strip("'\"") for item in text[1:-1].split(",")]
  numbers = [_number(item) for item in items]
  return None if not items or None in numbers else ",".join(numbers)


def _word_list(text: str) -> Optional[str]:
  words = [w.strip() for w in text.split(",")]
  return None if not all(words) else ", ".join(words)


def _word(text: str) -> Optional[str]:
  text = text.strip()
  return text.casefold() if text and not any(c.isspace() for c in text) else None


NORMALISERS: dict[str, Callable[[str], Optional[str]]] = {
    "basic_arithmetic": _number, "chain_sum": _number, "gsm_symbolic": _number,
    "leg_counting": _number, "letter_counting": _number, "number_sorting": _number_list,
    "word_sorting": _word_list, "spell_backward": _word,
}


def extract(completion: str) -> Optional[str]:
  answer = last_block(completion, "<answer>", "</answer>")
  return None if answer is None else answer.strip()[:MAX_ANSWER_CHARS]


def _make(name: str):
  def examples(seed: int, count: int) -> list[Example]:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
    dataset = reasoning_gym.create_dataset(name, size=count, seed=seed)
    return [Example(entry["question"] + INSTRUCTION, (dataset, entry)) for entry in dataset]
  return examples


def _grader(name: str):
  normalise = NORMALISERS[name]

  def vote_key(completion: str, gold) -> Optional[str]:
    del gold
    answer = extract(completion)
    return None if answer is None else normalise(answer)

  def correct(completion: str, gold) -> bool:
    key = vote_key(completion, gold)
    return key is not None and key == normalise(gold[1]["answer"])

  def reward(completion: str, gold) -> float:
    if correct(completion, gold):
      return 1.0
    dataset, entry = gold
    answer = extract(completion)
    if answer is None:
      return 0.0
    try:
      upstream = float(dataset.score_answer(answer=answer, entry=entry))
    except Exception:  # pylint: disable=broad-except  # a scorer choking on hostile text scores 0
      return 0.0
    return upstream if 0.0 <= upstream < 1.0 else 0.0

  return reward, correct, vote_key


def to_record(example: Example) -> dict:
  return {"prompt": example.prompt, "answer": str(example.gold[1]["answer"])}


def from_record(record: dict) -> Example:
  """{"prompt": ..., "answer": optional}; a record's gold serves correctness, not the reward
  (which needs the reasoning-gym dataset that generated the entry)."""
  answer = field(record, "answer", str, None)
  return Example(field(record, "prompt", str), None if answer is None else (None, {"answer": answer}))


for _name in NORMALISERS:
  _reward, _correct, _vote_key = _grader(_name)
  TASKS.register(_name)(Task(name=_name, splits=procedural_splits(_make(_name)), reward=_reward,
                             correct=_correct, vote_key=_vote_key, to_record=to_record,
                             from_record=from_record))
