"""`RunDir`: the one layout every run writes under `--workdir`, and the one way it resumes.

A run directory holds:
  spec.json          what identifies the run's numbers; a directory holding another spec is
                     refused (`claim`), the same spec resumes
  config.json        one entry per invocation: experiment, start time, settings
  log.txt            the log
  results.json       the run's results (written last)
  base.json, base_test.json, topk.json, result.json
                     computed once, read back on resume (`cached_json`)
  candidates.jsonl, test_members.jsonl, <name>.jsonl
                     scored members (or training steps, evaluations), appended as they finish
                     (`store`); resuming skips them
  checkpoints/       orbax checkpoints of a training run's state (ES, GRPO)
  *.png              figures (`figure`)
  runs/<name>/       nested runs (`child`), each a RunDir of its own
  bases/             checkpoints of pretrained bases (orbax)
  .lock              held (flock) by the job writing here while its session lasts, and while
                     a spec is written: a second job on the same directory is refused before
                     it writes anything; a killed job's lock dies with it

Resuming is the same everywhere: claim the spec, then every part is either read back
(JSON, checkpoints, stored members) or computed and persisted as soon as it exists.
Only the writing process of a multi-host run writes (`distributed.is_writer`).
"""

import contextlib
import fcntl
import json
import logging as std_logging
import os
import tempfile
import time
from typing import Any, Callable, Hashable, Iterator

from absl import logging

from thickets_jax import distributed, scales, storage
from thickets_jax.errors import InputError

FILES = {
    "spec": "spec.json", "config": "config.json", "log": "log.txt", "results": "results.json",
    "result": "result.json", "base": "base.json", "base_test": "base_test.json",
    "topk": "topk.json", "candidates": "candidates.jsonl", "test_members": "test_members.jsonl",
}


# Settings added after run directories were first written, with the value every older run used:
# a held spec that lacks one of them holds the same run when the new spec has that value.
LATER_SETTINGS = {"noise": "full", "rank": 4, "vector_noise": True, "scale": "isotropic",
                  "masses": scales.DEFAULT_MASSES, "halving_eta": 0.0,
                  "halving_min_examples": 4, "average_probabilities": False,
                  "kv_cache_dtype": None,
                  # ES, GRPO and fine-tuning settings that became flags with their sub-configs
                  "es_divide_by_sigma": False, "es_weight_decay": 0.0, "grpo_weight_decay": 0.01,
                  "grpo_grad_clip": 1.0, "grpo_clip_eps": 0.2, "grpo_temperature": 1.0,
                  "lora_alpha": 16.0, "weight_decay": 0.0, "max_grad_norm": 1.0,
                  # the 1D comparison's ES before its settings became an ESConfig (σ: the run's)
                  "es_sigma": 0.002, "es_antithetic": False, "es_fitness": "zscore",
                  "es_optimizer": "sgd"}


def _changed(held: dict, spec: dict) -> list[str]:
  """Keys whose values differ (nested dicts compared key by key), `LATER_SETTINGS` aside."""
  changed = []
  for key in sorted(set(held) | set(spec)):
    if key not in held and key in LATER_SETTINGS and spec.get(key) == LATER_SETTINGS[key]:
      continue
    mine, theirs = held.get(key), spec.get(key)
    if isinstance(mine, dict) and isinstance(theirs, dict):
      changed += [f"{key}.{k}" for k in _changed(mine, theirs)]
    elif mine != theirs:
      changed.append(key)
  return changed


def check_new_path(path: str, flag: str, directory: bool) -> None:
  """One sentence, before any compute, unless `path` can be written as a file (or, with
  `directory`, a directory): not the other kind already, its parent creatable and writable."""
  if os.path.exists(path) and os.path.isdir(path) != directory:
    raise InputError(f"{flag} {path} is a {'file' if directory else 'directory'}; give the path "
                     f"of a {'directory' if directory else 'file'}.")
  _make_writable(os.path.dirname(os.path.abspath(path)), f"cannot write {flag} {path}")


def _make_writable(directory: str, failure: str) -> None:
  """Creates `directory` and writes a file there; on failure one sentence, `failure: why.`"""
  try:
    os.makedirs(directory, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=directory):
      pass
  except OSError as e:
    raise InputError(f"{failure}: {e.strerror or e}.") from None


def atomic_write(path: str, write: Callable[[str], None]) -> None:
  """`write(tmp_path)` then rename onto `path`, so a kill never leaves half a file; only the
  writing process of a multi-host run writes."""
  if not distributed.is_writer():
    return
  tmp = f"{path}.tmp{os.path.splitext(path)[1]}"
  write(tmp)
  os.replace(tmp, path)


def read_json(path: str) -> Any:
  try:
    with open(path) as f:
      return json.load(f)
  except json.JSONDecodeError as e:
    raise InputError(f"{path} is not valid JSON ({e.msg}); the file is corrupt.") from None


def write_json(path: str, obj: Any) -> None:
  def write(tmp):
    with open(tmp, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
  atomic_write(path, write)


class RunDir:
  """One run's directory: file names, claim, resume."""

  def __init__(self, path: str):
    self.path = path

  @classmethod
  def prepare(cls, workdir: str) -> "RunDir":
    """Creates `workdir` and checks that it can be written."""
    if not workdir:
      raise InputError("--workdir is required: results, plots and logs are written there.")
    path = os.path.abspath(os.path.expanduser(workdir))
    _make_writable(path, f"cannot write to --workdir {path}")
    return cls(path)

  def file(self, name: str) -> str:
    """The path of the run file `name`: a key of `FILES`, else `<name>.json`."""
    return os.path.join(self.path, FILES.get(name, f"{name}.json"))

  def figure(self, stem: str) -> str:
    return os.path.join(self.path, f"{stem}.png")

  def child(self, name: str) -> "RunDir":
    """The nested run `runs/<name>`, created."""
    path = os.path.join(self.path, "runs", name)
    os.makedirs(path, exist_ok=True)
    return RunDir(path)

  @property
  def bases(self) -> str:
    return os.path.join(self.path, "bases")

  def exists(self, name: str) -> bool:
    return os.path.exists(self.file(name))

  def read(self, name: str) -> Any:
    return read_json(self.file(name))

  def write(self, name: str, obj: Any) -> None:
    write_json(self.file(name), obj)

  def cached_json(self, name: str, compute: Callable[[], Any]) -> Any:
    """What file `name` holds if it exists, else `compute()`, written there (resuming skips the
    work). The computed value is returned as is, so no process reads back another's file."""
    if self.exists(name):
      return self.read(name)
    value = compute()
    self.write(name, value)
    return value

  def store(self, name: str = "candidates",
            key: Callable[[dict], Hashable] = storage.member_key) -> storage.CandidateStore:
    """The append-only JSONL `name` (a key of `FILES`, else `<name>.jsonl`), keyed by `key`."""
    path = self.file(name) if name in FILES else os.path.join(self.path, f"{name}.jsonl")
    return storage.CandidateStore(path, key)

  @property
  def checkpoints(self) -> str:
    return os.path.join(self.path, "checkpoints")

  def claim(self, spec: dict) -> None:
    """Makes this directory hold the run `spec`; a directory holding another run is refused,
    and one in use by another job is refused before `spec` is written (the write happens
    under the directory's lock, after checking again)."""
    os.makedirs(self.path, exist_ok=True)
    spec = json.loads(json.dumps(spec))  # as it reads back: tuples become lists
    if self._needs_writing(spec):
      with _locked(self.path):
        if self._needs_writing(spec):
          self.write("spec", spec)  # process 0 of a multi-host run; the others only check

  def _needs_writing(self, spec: dict) -> bool:
    """Whether `spec` is new here (or the held one predates some of LATER_SETTINGS); one
    sentence if the directory holds another run."""
    if not self.exists("spec"):
      return True
    held = self.read("spec")
    if "experiment" in held and "experiment" in spec and held["experiment"] != spec["experiment"]:
      raise InputError(f"{self.path} holds a {held['experiment']} run, not a "
                       f"{spec['experiment']} run; use a new --workdir.")
    changed = _changed(held, spec)
    if changed:
      raise InputError(f"{self.path} holds a run with other settings ({', '.join(changed)}); "
                       "use a new --workdir or the original settings to resume.")
    return held != spec

  @contextlib.contextmanager
  def session(self, experiment: str, settings: dict) -> Iterator[None]:
    """Locks the directory for this job, appends this invocation's settings to config.json and
    mirrors the log into log.txt (stderr keeps its copy) while the run lasts."""
    with _locked(self.path):
      with self._logged(experiment, settings):
        yield

  @contextlib.contextmanager
  def _logged(self, experiment: str, settings: dict) -> Iterator[None]:
    history = self.read("config") if self.exists("config") else []
    history.append({"experiment": experiment, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                    "settings": json.loads(json.dumps(settings, default=str))})
    self.write("config", history)
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_not_orbax_chatter)
    handler = None
    if distributed.is_writer():
      handler = std_logging.FileHandler(self.file("log"))
      handler.setFormatter(std_logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
      handler.addFilter(_not_orbax_chatter)
      logging.get_absl_logger().addHandler(handler)
    logging.info("%s: writing to %s", experiment, self.path)
    try:
      yield
    finally:
      if handler is not None:
        logging.get_absl_logger().removeHandler(handler)
        handler.close()


_HELD: dict[str, list] = {}  # path -> [open lock file, depth]: this process's locks


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
  """An exclusive `flock` on `path/.lock` for as long as the block runs (re-entrant within one
  process); only the writing process of a multi-host run takes it. The kernel drops the lock
  when its holder dies, so a killed job never leaves a stale one."""
  if not distributed.is_writer():
    yield
    return
  if path in _HELD:
    _HELD[path][1] += 1
  else:
    handle = open(os.path.join(path, ".lock"), "a+")
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
      handle.seek(0)
      holder = handle.read().strip() or "another process"
      handle.close()
      raise InputError(f"{path} is in use by another running job ({holder}); wait for it to end "
                       "or use another --workdir.") from None
    handle.truncate(0)
    handle.write(f"pid {os.getpid()} on {os.uname().nodename}")
    handle.flush()
    _HELD[path] = [handle, 1]
  try:
    yield
  finally:
    _HELD[path][1] -= 1
    if not _HELD[path][1]:
      handle = _HELD.pop(path)[0]
      fcntl.flock(handle, fcntl.LOCK_UN)
      handle.close()


def _not_orbax_chatter(record: std_logging.LogRecord) -> bool:
  """orbax logs every checkpoint step at INFO; keep its warnings only."""
  return record.levelno >= std_logging.WARNING or "orbax" not in record.pathname
