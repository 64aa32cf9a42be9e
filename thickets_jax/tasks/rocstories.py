"""ROCStories sentence ordering: the five sentences of a short story, shuffled and labelled A–E;
the answer is their original order, e.g. `<answer>C A E B D</answer>`.

Records carry the ROCStories corpus's own fields, `sentence1` … `sentence5` (its CSV columns;
`storytitle` is not shown). A story's shuffle is drawn from its text and the run's seed, so it
does not depend on where the story sits in the file. The data come from `--data PATH` (JSONL or
parquet): we know of no copy of the corpus on the Hugging Face hub whose fields and licence we
could name as the reference's, so none is read from the `datasets` cache.

Scores (the reference's shaping): reward = 0.6 × position accuracy (the fraction of the five
positions holding the right sentence) + 0.4 × adjacent-pair order (the fraction of the story's
four consecutive pairs that the answer also puts next to each other, in that order); correct =
the exact order; vote key = the order. An answer that is not a permutation of A–E scores 0 and
casts no vote.
"""

import hashlib
import random
import re
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks import data as records
from thickets_jax.tasks.base import (MAX_TEXT, REFERENCE_PROTOCOL, TASKS, Example, Task, field,
                                     last_block)

LABELS = "ABCDE"
SENTENCE_FIELDS = tuple(f"sentence{i}" for i in range(1, 6))
_MAX_ANSWER = 200  # a longer answer block is no order
_SEPARATORS = re.compile(r"[\s,;>\-→.]+")


def shuffle(sentences: tuple[str, ...], seed: int) -> tuple[list[str], str]:
  """(the sentences in shown order, labelled A–E; the gold: the labels in story order)."""
  digest = hashlib.sha256("\n".join(sentences).encode()).digest()
  rng = random.Random(int.from_bytes(digest[:8], "little") ^ seed)
  shown = list(range(5))
  while shown == list(range(5)):  # never the story's own order
    rng.shuffle(shown)
  label_of = {story_index: LABELS[position] for position, story_index in enumerate(shown)}
  return [sentences[i] for i in shown], "".join(label_of[i] for i in range(5))


def prompt(shown: list[str]) -> str:
  lines = "\n".join(f"{label}. {sentence}" for label, sentence in zip(LABELS, shown))
  return ("The five sentences of a short story are shuffled below. Put them back in the order "
          "that tells the story.\n" + lines + "\nShow your work in <think> </think> tags and "
          "return the order as the five letters in <answer> </answer> tags, for example "
          "<answer>C A E B D</answer>.")


def parse_order(completion: str) -> Optional[str]:
  """The last answer block as an order "CAEBD" (letters in any case, separated by spaces,
  commas, arrows or nothing); None unless it is a permutation of A–E."""
  block = last_block(completion[-MAX_TEXT:], "<answer>", "</answer>")
  if block is None or len(block) > _MAX_ANSWER:
    return None
  order = _SEPARATORS.sub("", block).upper()
  return order if sorted(order) == list(LABELS) else None


def reward(completion: str, gold: str) -> float:
  order = parse_order(completion)
  if order is None:
    return 0.0
  positions = sum(a == b for a, b in zip(order, gold)) / 5
  pairs = sum(gold[i:i + 2] in order for i in range(4)) / 4
  return 0.6 * positions + 0.4 * pairs


def correct(completion: str, gold: str) -> bool:
  return parse_order(completion) == gold


def example(record: dict, seed: int) -> Example:
  sentences = tuple(field(record, name, str) for name in SENTENCE_FIELDS)
  shown, gold = shuffle(sentences, seed)
  return Example(prompt(shown), gold)


def splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  if not data:
    raise InputError("the rocstories task reads --data PATH: a JSONL or parquet file of "
                     "ROCStories records with the fields sentence1 … sentence5.")
  train, test = records.file_splits(data, SENTENCE_FIELDS, train_size, test_size)
  return [example(r, seed) for r in train], [example(r, seed) for r in test]


def _from_record(record: dict) -> Example:
  """{"prompt", "answer"?} (an order such as "CAEBD"), or a story's sentence1 … sentence5."""
  if "prompt" not in record:
    return example(record, seed=0)
  answer = record.get("answer")
  gold = None if answer is None else parse_order(f"<answer>{answer}</answer>")
  if answer is not None and gold is None:
    raise InputError(f"the answer {str(answer)[:40]!r} is not an order of the letters A–E.")
  return Example(field(record, "prompt", str), gold)


TASKS.register("rocstories")(Task(
    name="rocstories", splits=splits, reward=reward, correct=correct,
    vote_key=lambda completion, gold: parse_order(completion), needs_data=True,
    protocol=REFERENCE_PROTOCOL,
    to_record=lambda e: {"prompt": e.prompt, "answer": e.gold}, from_record=_from_record))
