"""Reading a task's records: a local JSONL or parquet file (`--data PATH`), or a dataset in the
`datasets` hub cache, offline."""

import contextlib
import json
import os
from typing import Iterator, Optional

from thickets_jax.errors import InputError


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
def offline() -> Iterator[None]:
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


def hub_split(repo: str, config: Optional[str], split: str) -> list[dict]:
  import datasets  # pylint: disable=g-import-not-at-top
  try:
    with offline():
      return list(datasets.load_dataset(repo, config, split=split,
                                        download_mode="reuse_cache_if_exists"))
  except Exception as e:  # pylint: disable=broad-except  # any miss means: not in the cache
    raise InputError(f"the task needs {repo} ({split}): pass --data PATH (JSONL or parquet) or "
                     f"put it in the datasets cache on a machine with internet "
                     f"(datasets.load_dataset({repo!r}{', ' + repr(config) if config else ''})); "
                     f"reading the cache failed: {type(e).__name__}.") from None


def check_fields(records: list[dict], fields: tuple[str, ...], source: str) -> None:
  for i, record in enumerate(records):
    missing = [f for f in fields if f not in record]
    if missing:
      raise InputError(f"record {i} of {source} lacks the field {missing[0]!r}.")


def file_splits(path, fields, train_size, test_size):
  records = read_records(path)
  check_fields(records, fields, path)
  if len(records) <= train_size:
    raise InputError(f"{path} has {len(records)} records: none left for a test split after "
                     f"{train_size} train records.")
  stop = len(records) if test_size <= 0 else train_size + test_size
  return records[:train_size], records[train_size:stop]
