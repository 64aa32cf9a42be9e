"""Procedural reasoning tasks from `reasoning-gym`, several domains, fully offline.

Only tasks whose scorers treat the answer as data are exposed: reasoning-gym scores
string_insertion, spiral_matrix, binary_matrix and n_queens by `eval`-ing the model's text,
so they are left out. Answers are read from the last <answer>...</answer> block and cut to
`MAX_ANSWER_CHARS` before the scorer sees them.
"""

import re
from typing import Optional

from thickets_jax.tasks.base import TASKS, Example, Task, procedural_splits

MAX_ANSWER_CHARS = 2000
INSTRUCTION = "\nGive only the final answer inside <answer></answer> tags."
GYM_TASKS = {  # name -> domain
    "basic_arithmetic": "arithmetic",
    "chain_sum": "arithmetic",
    "gsm_symbolic": "math word problems",
    "leg_counting": "commonsense counting",
    "letter_counting": "strings",
    "number_sorting": "algorithms",
    "word_sorting": "language",
    "spell_backward": "language",
}
_ANSWER = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)


def extract(completion: str) -> Optional[str]:
  matches = _ANSWER.findall(completion)
  return matches[-1].strip()[:MAX_ANSWER_CHARS] if matches else None


def _make(name: str):
  def examples(seed: int, count: int) -> list[Example]:
    import reasoning_gym  # pylint: disable=g-import-not-at-top
    dataset = reasoning_gym.create_dataset(name, size=count, seed=seed)
    return [Example(entry["question"] + INSTRUCTION, (dataset, entry)) for entry in dataset]
  return examples


def score(completion: str, gold) -> float:
  dataset, entry = gold
  answer = extract(completion)
  if answer is None:
    return 0.0
  try:
    value = float(dataset.score_answer(answer=answer, entry=entry))
  except Exception:  # pylint: disable=broad-except  # a scorer choking on hostile text scores 0
    return 0.0
  return min(max(value, 0.0), 1.0)


def vote_key(completion: str, gold) -> Optional[str]:
  del gold
  answer = extract(completion)
  return None if not answer else re.sub(r"\s+", " ", answer)


for _name, _domain in GYM_TASKS.items():
  TASKS.register(_name)(Task(
      name=_name, domain=_domain, splits=procedural_splits(_make(_name)), reward=score,
      correct=lambda c, g: score(c, g) == 1.0, vote_key=vote_key))
