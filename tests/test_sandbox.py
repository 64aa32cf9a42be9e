"""Model-written programs run only in the sandbox: hostile ones score 0, stop within their
limits and leave nothing behind; MBPP grading, extraction, votes and records."""

import json
import os
import tempfile
import time

import pytest

from thickets_jax.errors import InputError
from thickets_jax.tasks import TASKS, mbpp, sandbox

TESTS = ("assert double(2) == 4", "assert double(-3) == -6")
PROBLEM = mbpp.Problem(TESTS)
LIMITS = sandbox.Limits(cpu_s=1, wall_s=3.0)
OURS = os.path.abspath(__file__)
OUTSIDE = os.path.join(tempfile.gettempdir(), "thickets_sandbox_escape_marker")
RIGHT = "def double(x):\n    return 2 * x"

# Each program defines a correct `double` only if its hostile action succeeds (or never ends),
# so "scored 0" means the action was stopped.
HOSTILE = {
    "loops forever": "while True:\n    pass\n" + RIGHT,
    "loops in the function": "def double(x):\n    while True:\n        pass",
    "sleeps past the wall clock": "import time\ntime.sleep(60)\n" + RIGHT,
    "allocates 10 GB": "block = bytearray(10 * 2**30)\n" + RIGHT,
    "grows a list without end": "cells = []\nwhile True:\n    cells.append([0] * 10**6)\n" + RIGHT,
    "forks without end": "import os\nwhile True:\n    os.fork()\n" + RIGHT,
    "starts a process": "import subprocess\nsubprocess.run(['true'], check=True)\n" + RIGHT,
    "calls os.system": "import os\nassert os.system('true') == 0\n" + RIGHT,
    "uses multiprocessing": ("import multiprocessing\nmultiprocessing.Process(target=print)"
                             ".start()\n" + RIGHT),
    "loads ctypes": "import ctypes\nctypes.CDLL(None)\n" + RIGHT,
    "writes outside its directory": f"open({OUTSIDE!r}, 'w').write('x')\n" + RIGHT,
    "writes through os.open": (f"import os\nos.close(os.open({OUTSIDE!r}, os.O_WRONLY | "
                               f"os.O_CREAT))\n" + RIGHT),
    "reads a file of ours": f"assert 'HOSTILE' in open({OURS!r}).read()\n" + RIGHT,
    "reads /etc/passwd": "open('/etc/passwd').read()\n" + RIGHT,
    "lists our directory": f"import os\nos.listdir({os.path.dirname(OURS)!r})\n" + RIGHT,
    "removes a file of ours": f"import os\nos.remove({OURS!r})\n" + RIGHT,
    "opens a socket": "import socket\nsocket.socket()\n" + RIGHT,
    "connects out": ("import socket\nsocket.create_connection(('127.0.0.1', 9), timeout=1)\n"
                     + RIGHT),
    "writes a 100 MB file": "open('big', 'w').write('x' * 100 * 2**20)\n" + RIGHT,
    "floods its output": "print('x' * 200 * 2**20)\n" + RIGHT,
    "raises its own limits": ("import resource\nresource.setrlimit(resource.RLIMIT_CPU, "
                              "(10**6, 10**6))\n" + RIGHT),
    "kills its parent": "import os\nos.kill(os.getppid(), 9)\n" + RIGHT,
    "exits before the tests": "import sys\nsys.exit(0)\n" + RIGHT,
    "recurses without end": "def r():\n    return r()\nr()\n" + RIGHT,
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_a_hostile_program_scores_0_stops_within_its_limits_and_leaves_nothing(name, tmp_path):
  with open(OURS, "rb") as f:
    ours = f.read()
  start = time.perf_counter()
  outcome = sandbox.run(HOSTILE[name], TESTS, limits=LIMITS, parent=str(tmp_path))
  seconds = time.perf_counter() - start
  assert not (outcome.results and all(r["passed"] for r in outcome.results)), outcome
  assert seconds < LIMITS.wall_s + 2
  assert not os.path.exists(OUTSIDE)
  assert not os.listdir(tmp_path)  # its directory, and all it wrote there, is gone
  with open(OURS, "rb") as f:
    assert f.read() == ours
  assert len(outcome.output) <= 4096  # what a cached outcome keeps


def test_the_same_program_done_right_passes_and_reports_its_values():
  outcome = sandbox.run(RIGHT, TESTS, limits=LIMITS)
  assert outcome.results == [{"passed": True, "value": "4"}, {"passed": True, "value": "-6"}]
  uses_its_directory = ("import os, tempfile\nopen('notes.txt', 'w').write('ok')\n"
                        "assert os.listdir('.') and tempfile.mkdtemp()\n" + RIGHT)
  assert all(r["passed"] for r in sandbox.run(uses_its_directory, TESTS, limits=LIMITS).results)
  setup = sandbox.run("def double(x):\n    return TWO * x", TESTS, setup="TWO = 2")
  assert all(r["passed"] for r in setup.results)


def test_mbpp_takes_the_reference_answer_block_and_votes_on_behaviour():
  assert mbpp.extract_program(f"<think>x</think><answer>\n{RIGHT}\n</answer>") == RIGHT
  assert mbpp.extract_program(f"<answer>```python\n{RIGHT}\n```</answer>") == RIGHT
  assert mbpp.extract_program(f"Here:\n```python\n{RIGHT}\n```\nand more") == RIGHT
  assert mbpp.extract_program("no code at all") is None
  task = TASKS.get("mbpp")
  right, other = f"<answer>{RIGHT}</answer>", "<answer>double = lambda x: x + x</answer>"
  wrong = "<answer>def double(x):\n    return x * x</answer>"
  assert task.correct(right, PROBLEM) and task.reward(other, PROBLEM) == 1.0
  assert not task.correct(wrong, PROBLEM) and task.reward(wrong, PROBLEM) == 0.0
  assert task.vote_key(right, PROBLEM) == task.vote_key(other, PROBLEM)  # same outputs
  assert task.vote_key(wrong, PROBLEM) != task.vote_key(right, PROBLEM)
  assert task.vote_key("<answer>syntax error (</answer>", PROBLEM) is None
  assert task.vote_key(right, None) is None  # a prompt without tests has nothing to run


def test_a_batch_is_graded_in_parallel_sandboxes_once_per_program():
  completions = [f"<answer>def double(x):\n    return 2 * x + {i} - {i}</answer>"
                 for i in range(8)] * 2
  mbpp.outcome.cache_clear()
  start = time.perf_counter()
  mbpp.prepare(completions, [PROBLEM] * len(completions))
  assert mbpp.outcome.cache_info().currsize == 8
  assert all(TASKS.get("mbpp").correct(c, PROBLEM) for c in completions)
  assert mbpp.outcome.cache_info().misses == 8  # grading ran nothing again
  assert time.perf_counter() - start < 30


def test_mbpp_splits_and_records_use_the_dataset_fields(tmp_path):
  records = [{"task_id": i, "text": f"Write double_{i}.", "code": "", "test_setup_code": "",
              "test_list": [f"assert double({i}) == {2 * i}"]} for i in range(5)]
  path = tmp_path / "mbpp.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in records))
  task = TASKS.get("mbpp")
  train, test = task.splits(2, 0, 0, str(path))
  assert len(train) == 2 and len(test) == 3
  assert train[1].gold == mbpp.Problem(("assert double(1) == 2",))
  assert "Your code should pass these tests:\nassert double(0) == 0" in train[0].prompt
  assert task.from_record(task.to_record(test[0])) == test[0]
  assert task.from_record({"prompt": "p"}).gold is None
  with pytest.raises(InputError, match="'test_list' must be a non-empty list"):
    task.from_record({"prompt": "p", "test_list": []})
