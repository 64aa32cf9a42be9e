"""What a run persists as it goes: scored candidates, appended one chunk at a time, and
progress with rate and ETA.

Below every search method (`randopt`, `halving`, `landscape`) and the run directories
(`workdir`): they all keep their partial scores here, so a killed run resumes without
re-scoring anything.
"""

import json
import os
import time
from typing import Callable, Hashable, Iterable

from absl import logging

from thickets_jax import distributed
from thickets_jax.errors import InputError

# What a line that is not a candidate record raises (JSON and UTF-8 errors are ValueErrors).
_BAD_RECORD = (KeyError, TypeError, ValueError)


def member_key(record: dict) -> tuple[int, float]:
  return int(record["seed"]), float(record["sigma"])


class CandidateStore:
  """Append-only JSONL record of scored candidates, keyed by (seed, sigma) (or by `key`, e.g.
  a training step, for other append-only logs of a run).

  Opening the store repairs what a kill mid-append leaves: a last line cut short is truncated
  away (its candidates are scored again), and a last record that lost only its newline gets it
  back, so the next append starts on a line of its own. Appends are flushed and fsynced. A bad
  line anywhere else means the file was edited or corrupted: it is refused, naming the line.
  """

  def __init__(self, path: str, key: Callable[[dict], Hashable] = member_key):
    self.path, self._key = path, key
    self.records: dict[Hashable, dict] = {}
    if os.path.exists(path):
      self._load()

  def _load(self) -> None:
    with open(self.path, "rb") as f:
      data = f.read()
    lines = data.split(b"\n")  # the last item is what follows the last newline
    for number, line in enumerate(lines[:-1], 1):
      if not line.strip():
        continue
      try:
        self._add(json.loads(line))
      except _BAD_RECORD as e:
        raise InputError(f"{self.path} line {number} is not a candidate record ({e}); the file "
                         "is corrupt, move it away to re-score.") from None
    tail = lines[-1]
    if not tail.strip():
      return
    try:
      self._add(json.loads(tail))
      repair = lambda f: f.write(b"\n")  # a whole record that lost its newline
    except _BAD_RECORD:
      logging.warning("%s: dropping a last line cut short by a kill (%d bytes); its candidates "
                      "are scored again", self.path, len(tail))
      repair = lambda f: f.truncate(len(data) - len(tail))
    if distributed.is_writer():
      with open(self.path, "r+b") as f:
        f.seek(0, os.SEEK_END)
        repair(f)
        f.flush()
        os.fsync(f.fileno())

  def _add(self, record: dict) -> None:
    self.records[self._key(record)] = record

  def __contains__(self, key: Hashable) -> bool:
    return key in self.records

  def append(self, records: Iterable[dict]) -> None:
    lines = []
    for record in records:
      self._add(record)
      lines.append(json.dumps(record) + "\n")
    if not distributed.is_writer():  # multi-host: process 0 keeps the file
      return
    with open(self.path, "a") as f:
      f.writelines(lines)
      f.flush()
      os.fsync(f.fileno())


class Progress:
  """Logs done/total, rate and ETA at most every `every_s` seconds."""

  def __init__(self, total: int, done: int = 0, what: str = "candidates", every_s: float = 10.0):
    self.total, self.done, self.what, self.every_s = total, done, what, every_s
    self._start_done, self._start = done, time.perf_counter()
    self._last_log = -float("inf")

  def update(self, n: int) -> None:
    self.done += n
    now = time.perf_counter()
    if now - self._last_log >= self.every_s or self.done >= self.total:
      self._last_log = now
      rate = (self.done - self._start_done) / max(now - self._start, 1e-9)
      eta = (self.total - self.done) / rate if rate > 0 else float("inf")
      logging.info("scored %d/%d %s (%.0f%%), %.2f/s, ETA %.0f s", self.done, self.total,
                   self.what, 100 * self.done / self.total, rate, eta)
