"""USPTO-50K reaction classification: the class (1–10) of a reaction given as reaction SMILES.

Records carry the fields of the USPTO-50K parquet files the reference reads (Schneider et al.
2016's 50k reactions, classes 1–10): `rxn_smiles` (atom-mapped reaction SMILES; the mapping
numbers are taken off for the prompt, as the reference does) and `class`. The reference names no
hub copy (it reads local `train.parquet` / `test.parquet`), so the data come from `--data PATH`
(JSONL or parquet) only. The answer is the class number in the last `<answer>` block
(optionally "class 3"); reward = correct = the class matches; vote key = the class. Protocol:
the reference handler's, 200 train reactions and 64 new tokens (a brief reasoning, then the
class).
"""

import re
from typing import Optional

from thickets_jax.errors import InputError
from thickets_jax.tasks import data as records
from thickets_jax.tasks.base import MAX_TEXT, TASKS, Example, Protocol, Task, field, last_block

REACTION_FIELD = "rxn_smiles"
PROTOCOL = Protocol(train_size=200, max_new_tokens=64)
_ATOM_MAP = re.compile(r":\d+\]")
CLASSES = ("heteroatom alkylation and arylation", "acylation and related processes",
           "C–C bond formation", "heterocycle formation", "protections", "deprotections",
           "reductions", "oxidations", "functional group interconversion",
           "functional group addition")
_ANSWER = re.compile(r"\s*(?:class\s*)?(\d{1,2})\s*\.?\s*", re.IGNORECASE)


def prompt(reaction: str) -> str:
  classes = "\n".join(f"{i}. {name}" for i, name in enumerate(CLASSES, 1))
  return ("Classify the chemical reaction below (reaction SMILES, reactants >> product) into "
          f"one of the ten USPTO-50K reaction classes:\n{classes}\nReaction: "
          f"{_ATOM_MAP.sub(']', reaction)}\nName the key transformation briefly, then give the "
          "class number in <answer> </answer> tags, for example <answer>3</answer>.")


def parse_class(completion: str) -> Optional[str]:
  """The class in the last answer block, "1" … "10"; None for anything else."""
  block = last_block(completion[-MAX_TEXT:], "<answer>", "</answer>")
  match = None if block is None or len(block) > 40 else _ANSWER.fullmatch(block)
  if match is None or not 1 <= int(match.group(1)) <= len(CLASSES):
    return None
  return str(int(match.group(1)))


def correct(completion: str, gold: str) -> bool:
  return parse_class(completion) == gold


def gold_class(value) -> str:
  """A record's `class` (an integer 1–10, or its text) as the vote key "1" … "10"."""
  text = str(value).strip()
  if not text.isdigit() or not 1 <= int(text) <= len(CLASSES):
    raise InputError(f"a USPTO-50K class must be an integer from 1 to 10, got {str(value)[:20]!r}.")
  return str(int(text))


def example(record: dict) -> Example:
  """A USPTO-50K record's prompt and class (None when the record has no `class`)."""
  reaction = field(record, REACTION_FIELD, str)
  if ">" not in reaction:
    raise InputError(f"{REACTION_FIELD!r} must be reaction SMILES with '>', got "
                     f"{reaction[:40]!r}.")
  return Example(prompt(reaction), gold_class(record["class"]) if "class" in record else None)


def splits(train_size: int, test_size: int, seed: int, data: Optional[str]):
  del seed
  if not data:
    raise InputError(f"the uspto50k task reads --data PATH: a JSONL or parquet file of "
                     f"USPTO-50K records with the fields {REACTION_FIELD!r} and 'class'.")
  train, test = records.file_splits(data, (REACTION_FIELD, "class"), train_size, test_size)
  return [example(r) for r in train], [example(r) for r in test]


def _from_record(record: dict) -> Example:
  """{"prompt", "answer"?} (a class), or a USPTO-50K record (its reaction and class)."""
  if "prompt" not in record:
    return example(record)
  answer = record.get("answer")
  return Example(field(record, "prompt", str), None if answer is None else gold_class(answer))


TASKS.register("uspto50k")(Task(
    name="uspto50k", splits=splits, reward=lambda c, g: float(correct(c, g)), correct=correct,
    vote_key=lambda completion, gold: parse_class(completion), needs_data=True,
    protocol=PROTOCOL,
    to_record=lambda e: {"prompt": e.prompt, "answer": e.gold}, from_record=_from_record))
