"""The layout every experiment writes under `--workdir`: flags, results, plots, logs, run dirs."""

import json
import logging as std_logging
import os
import tempfile
from typing import Any, Callable

from absl import logging

from thickets_jax import distributed
from thickets_jax.errors import InputError


def prepare(workdir: str) -> str:
  """Creates `workdir` and checks that it can be written; returns its absolute path."""
  if not workdir:
    raise InputError("--workdir is required: results, plots and logs are written there.")
  path = os.path.abspath(os.path.expanduser(workdir))
  try:
    os.makedirs(path, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path):
      pass
  except OSError as e:
    raise InputError(f"cannot write to --workdir {path}: {e.strerror or e}.") from None
  return path


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temp file + rename), so a kill never leaves half a file.

  Only the writing process of a multi-host run writes (`distributed.is_writer`).
  """
  if not distributed.is_writer():
    return
  tmp = f"{path}.tmp"
  with open(tmp, "w") as f:
    json.dump(obj, f, indent=2, sort_keys=True)
    f.write("\n")
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(f"{path} is not valid JSON ({e.msg}); the file is corrupt.") from None


def cached_json(path: str, compute: Callable[[], Any]) -> Any:
  """What `path` holds if it exists, else `compute()`, written there (resuming skips the work).
  The computed value is returned as is, so no process reads back a file another one writes."""
  if os.path.exists(path):
    return read_json(path)
  value = compute()
  write_json(path, value)
  return value


def claim(run_dir: str, spec: dict) -> None:
  """Makes `run_dir` hold the run `spec`; a directory holding a different run is refused."""
  os.makedirs(run_dir, exist_ok=True)
  spec_path = os.path.join(run_dir, "spec.json")
  spec = json.loads(json.dumps(spec))  # as it reads back: tuples become lists
  if os.path.exists(spec_path):
    held = read_json(spec_path)
    if held != spec:
      changed = sorted(k for k in set(held) | set(spec) if held.get(k) != spec.get(k))
      raise InputError(f"{run_dir} holds a run with other settings ({', '.join(changed)}); "
                       "use a new --workdir or the original flags to resume.")
  else:
    write_json(spec_path, spec)  # process 0 of a multi-host run; the others only check


def _not_orbax_chatter(record: std_logging.LogRecord) -> bool:
  """orbax logs every checkpoint step at INFO; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname


def log_to_file(workdir: str, name: str = "log.txt") -> None:
  """Mirrors absl logging into `workdir/name` (stderr keeps its copy), without orbax chatter.
  Only the writing process of a multi-host run has the file."""
  logging.set_verbosity(logging.INFO)
  if not distributed.is_writer():
    return
  handler = std_logging.FileHandler(os.path.join(workdir, name))
  handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
  logger = logging.get_absl_logger()
  logger.addHandler(handler)
  for each in (handler, logging.get_absl_handler()):
    each.addFilter(_not_orbax_chatter)
