"""ROCStories sentence ordering: a story's five sentences, shuffled and labelled A–E; the answer
is their original order, e.g. `<answer>B,A,D,E,C</answer>`.

Records carry the fields of the reference's source, `shawon/rocstories-combined` on the Hugging
Face hub: `shuffled_sentences` (five strings), `gold_order` (`gold_order[i]` is the index in
`shuffled_sentences` of the story's i-th sentence) and `title`. They come from `--data PATH`
(JSONL or parquet) or the `datasets` cache (its train split: train = the first `train_size`
stories, test = the ones after them).

Scores, as the reference's: reward = 0.6 × position accuracy (the fraction of the five
positions holding the right sentence) + 0.4 × relative order (the fraction of the story's four
consecutive pairs whose first sentence the answer puts anywhere before the second); correct =
the exact order; vote key = the order. The answer is the last `<answer>` block, else the last
line that is an order; one that is not a permutation of A–E scores 0 and casts no vote. Its
protocol is the reference handler's: 200 train stories, 64 new tokens (the prompt asks for the
order alone).
"""

import re
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks import data as records
from thickets_jax.tasks.base import MAX_TEXT, TASKS, Example, Protocol, Task, field, last_block

LABELS = "ABCDE"
SOURCE = ("shawon/rocstories-combined", None, "train")
PROTOCOL = Protocol(train_size=200, max_new_tokens=64)
_MAX_ANSWER = 200  # a longer answer is no order
_SEPARATORS = re.compile(r"[\s,;>\-→.]+")


def prompt(title: str, shuffled: list[str]) -> str:
  lines = "\n".join(f"{label}. {sentence}" for label, sentence in zip(LABELS, shuffled))
  heading = f"Title: {title}\n" if title else ""
  return ("The five sentences of a short story below are in the wrong order. Put them in the "
          f"order that tells the story.\n{heading}{lines}\nReturn only the order as five "
          "comma-separated letters in <answer> </answer> tags, for example "
          "<answer>B,A,D,E,C</answer>.")


def parse_order(completion: str) -> Optional[str]:
  """The order "BADEC" of the last answer block, else of the last line that is one (letters
  in any case, separated by commas, spaces, arrows or nothing); None unless it is a
  permutation of A–E."""
  text = completion[-MAX_TEXT:]
  block = last_block(text, "<answer>", "</answer>")
  candidates = [block] if block is not None else reversed(text.splitlines()[-50:])
  for candidate in candidates:
    order = _SEPARATORS.sub("", candidate[:_MAX_ANSWER + 1]).upper()
    if len(candidate) <= _MAX_ANSWER and sorted(order) == list(LABELS):
      return order
  return None


def reward(completion: str, gold: str) -> float:
  order = parse_order(completion)
  if order is None:
    return 0.0
  positions = sum(a == b for a, b in zip(order, gold)) / 5
  relative = sum(order.index(gold[i]) < order.index(gold[i + 1]) for i in range(4)) / 4
  return 0.6 * positions + 0.4 * relative


def correct(completion: str, gold: str) -> bool:
  return parse_order(completion) == gold


def example(record: dict) -> Example:
  shuffled = field(record, "shuffled_sentences", list)
  order = field(record, "gold_order", list)
  if len(shuffled) != 5 or not all(isinstance(s, str) for s in shuffled):
    raise InputError(f"'shuffled_sentences' must be five strings, got {str(shuffled)[:60]!r}.")
  if sorted(order) != list(range(5)):
    raise InputError(f"'gold_order' must be a permutation of 0–4, got {order!r}.")
  title = record.get("title") or ""
  return Example(prompt(str(title), shuffled), "".join(LABELS[i] for i in order))


def splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  fields = ("shuffled_sentences", "gold_order")
  if data:
    train, test = records.file_splits(data, fields, train_size, test_size)
  else:
    rows = records.hub_split(*SOURCE)
    train = rows[:train_size]
    test = rows[train_size:] if test_size <= 0 else rows[train_size:train_size + test_size]
  return [example(dict(r)) for r in train], [example(dict(r)) for r in test]


def _from_record(record: dict) -> Example:
  """{"prompt", "answer"?} (an order such as "B,A,D,E,C"), or a dataset record."""
  if "prompt" not in record:
    return example(record)
  answer = record.get("answer")
  gold = None if answer is None else parse_order(f"<answer>{answer}</answer>")
  if answer is not None and gold is None:
    raise InputError(f"the answer {str(answer)[:40]!r} is not an order of the letters A–E.")
  return Example(field(record, "prompt", str), gold)


TASKS.register("rocstories")(Task(
    name="rocstories", splits=splits, reward=reward, correct=correct,
    vote_key=lambda completion, gold: parse_order(completion), needs_data=True,
    protocol=PROTOCOL,
    to_record=lambda e: {"prompt": e.prompt, "answer": e.gold}, from_record=_from_record))
