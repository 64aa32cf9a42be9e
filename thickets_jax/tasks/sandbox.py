"""Running untrusted Python (a model's MBPP program) in a separate, limited process.

Model text is never executed in our process. `run` starts a fresh interpreter (`python -I -S
-B`: no site-packages, no environment variables of ours, no bytecode written) in a new temporary
directory that is its working directory, HOME and TMPDIR, with an empty environment and a new
session. Before the program runs, the child's own runner (`_RUNNER`, ours) sets resource limits
and installs an audit hook (PEP 578; it cannot be removed from Python code):

- CPU seconds, address space, file size, open files and processes (`Limits`; the kernel ends
  the process when one is passed), and a wall-clock kill of the whole session from here;
- no network: creating a socket is refused;
- no new processes: fork, exec, spawn, system and subprocess are refused, and the modules that
  bypass the hooks (`ctypes`, `_posixsubprocess`, …) cannot be imported;
- files: reading is allowed inside the directory and the Python standard library, writing,
  listing, renaming and removing only inside the directory.

The directory is removed when the child has ended, so a run leaves nothing behind. What this
guards is the machine, not the grade: a program written to forge its own test results could
do so (the runner shares its process); graded models are not trained against the grader here.
The audit hook is Python's, so native code that Python itself does not audit is out of its
reach; the importable modules are the standard library's, without the ones listed above.
"""

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
from typing import Optional, Sequence

_BLOCKED_MODULES = ("ctypes", "_ctypes", "_posixsubprocess", "_xxsubinterpreters", "cffi",
                    "mmap", "_testcapi", "_testinternalcapi", "faulthandler", "resource")
_OUTPUT_CHARS = 4096  # the tail of stdout + stderr an Outcome keeps (outcomes are cached)


@dataclasses.dataclass(frozen=True)
class Limits:
  """What one program may use. wall_s: seconds until the session is killed from outside."""
  cpu_s: int = 4
  wall_s: float = 10.0
  memory_bytes: int = 1 << 30
  file_bytes: int = 1 << 20
  open_files: int = 64
  processes: int = 64


@dataclasses.dataclass(frozen=True)
class Outcome:
  """A run's end: `results` [tests] ({"passed": bool, "value": repr of the assert's left side
  or "error: <type>"}), or None when the runner did not report (killed, crashed, timed out);
  `status` the exit status (negative: the signal), `timed_out` when the wall clock killed it,
  `output` the last 4096 characters of its stdout and stderr."""
  results: Optional[list[dict]]
  status: int
  timed_out: bool
  output: str


# The child's first code (ours): limits, the audit hook, then the program and its tests. Its
# inputs arrive as one JSON line on stdin; its report is one line "<nonce> <json>" on stdout.
_RUNNER = r'''
import ast, json, os, resource, sys
spec = json.loads(sys.stdin.readline())
for name, value in spec["limits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
root = os.path.realpath(os.getcwd())
readable = tuple(os.path.realpath(p) for p in spec["readable"]) + (root,)
blocked = frozenset(spec["blocked"])
refused = ("socket.", "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn",
           "os.system", "os.startfile", "subprocess.", "ctypes.", "os.kill", "os.killpg",
           "signal.pthread_kill", "sys._current_frames", "os.setuid", "os.chroot",
           "resource.setrlimit", "resource.prlimit", "sys.addaudithook")
path_events = ("os.listdir", "os.scandir", "os.remove", "os.rmdir", "os.rename", "os.mkdir",
               "os.chmod", "os.chown", "os.symlink", "os.link", "os.truncate", "os.utime",
               "os.chdir", "os.chflags", "os.mkfifo", "os.mknod", "os.removexattr",
               "os.setxattr", "shutil.rmtree", "shutil.copyfile", "shutil.move", "glob.glob")
WRITE = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC

def inside(path, roots):
    if isinstance(path, int):
        return True
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return any(real == r or real.startswith(r + os.sep) for r in roots)

def hook(event, args):
    if event.startswith(refused):
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "import" and args[0].split(".")[0] in blocked:
        raise ImportError(f"sandbox: importing {args[0]} is not allowed")
    if event == "open":
        path, mode, flags = args
        writes = any(c in (mode or "") for c in "wax+") or bool((flags or 0) & WRITE)
        if not inside(path, (root,) if writes else readable):
            raise PermissionError(f"sandbox: {path!r} is outside the sandbox")
    elif event in path_events:
        for path in args[:2] if event in ("os.rename", "os.link", "os.symlink") else args[:1]:
            if path is not None and not inside(path, (root,)):
                raise PermissionError(f"sandbox: {event} {path!r} is outside the sandbox")

sys.addaudithook(hook)
for name in list(sys.modules):  # a module imported above is imported again only through the hook
    if name.split(".")[0] in blocked:
        del sys.modules[name]
del resource
nonce, namespace, results = spec["nonce"], {"__name__": "__main__"}, []
program = "\n".join([spec["setup"], spec["program"]])
try:
    exec(compile(program, "program.py", "exec"), namespace)
    loaded = True
except BaseException as error:
    loaded = False
for test in spec["tests"] if loaded else ():
    value = None
    try:
        node = ast.parse(test).body[0]
        if isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare):
            left = eval(compile(ast.Expression(node.test.left), "test", "eval"), namespace)
            value = repr(left)[:200]
        exec(compile(test, "test", "exec"), namespace)
        results.append({"passed": True, "value": value})
    except BaseException as error:
        results.append({"passed": False, "value": value or f"error: {type(error).__name__}"})
sys.stdout.flush()
os.write(1, ("\n" + nonce + " " + json.dumps(results) + "\n").encode())
os._exit(0)
'''


def _limits(limits: Limits) -> dict:
  return {"RLIMIT_CPU": limits.cpu_s, "RLIMIT_AS": limits.memory_bytes,
          "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NOFILE": limits.open_files,
          "RLIMIT_NPROC": limits.processes, "RLIMIT_CORE": 0}


def _standard_library() -> list[str]:
  paths = sysconfig.get_paths()
  return sorted({paths["stdlib"], paths["platstdlib"]})


def run(program: str, tests: Sequence[str], setup: str = "", limits: Limits = Limits(),
        parent: Optional[str] = None) -> Outcome:
  """Runs `setup` + `program`, then each test statement (an `assert`), in a new sandboxed
  process (module docstring) whose directory is made in `parent` (default: the system's
  temporary directory); never raises for anything the program does."""
  nonce = secrets.token_hex(16)
  spec = {"program": program, "tests": list(tests), "setup": setup, "nonce": nonce,
          "limits": _limits(limits), "readable": _standard_library(),
          "blocked": list(_BLOCKED_MODULES)}
  directory = tempfile.mkdtemp(prefix="thickets_sandbox_", dir=parent)
  try:
    output_path = os.path.join(directory, ".output")
    with open(output_path, "wb") as output:
      child = subprocess.Popen(
          [sys.executable, "-I", "-S", "-B", "-c", _RUNNER], stdin=subprocess.PIPE,
          stdout=output, stderr=subprocess.STDOUT, cwd=directory, start_new_session=True,
          env={"HOME": directory, "TMPDIR": directory, "PYTHONHASHSEED": "0"})
      timed_out = False
      try:
        child.communicate((json.dumps(spec) + "\n").encode(), timeout=limits.wall_s)
      except subprocess.TimeoutExpired:
        timed_out = True
      finally:
        _kill_session(child)
    with open(output_path, "rb") as f:  # at most the file-size limit
      text = f.read(limits.file_bytes + 1).decode("utf-8", "replace")
  finally:
    shutil.rmtree(directory, ignore_errors=True)
  results = None
  for line in reversed(text.splitlines()):
    if line.startswith(nonce + " "):
      try:
        results = json.loads(line[len(nonce) + 1:])
      except ValueError:
        results = None
      break
  return Outcome(results, child.returncode, timed_out, text[-_OUTPUT_CHARS:])


def _kill_session(child: subprocess.Popen) -> None:
  """Ends the child's whole session (anything it started) and reaps it."""
  try:
    os.killpg(child.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    pass
  child.wait()
