"""Fuzzes every task's grader: crashes, slow inputs and wrong accepts.

For every registered task (dataset tasks get a synthetic gold) each input goes through
`reward`, `correct` and `vote_key`. Inputs are random text, tag soups, pathological repeats up
to `max_chars` characters, and wrong answers: the gold perturbed so that its value changes
(sign flipped, a digit changed, an item added or dropped, text appended), wrapped the way the
task expects answers. Counted per task: calls, crashes (any exception), calls slower than
`slow_s` (or than the task's own `time_limit_s`: mbpp's sandbox), rewards outside [0, max_reward],
and wrong answers marked correct.
"""

import dataclasses
import random
import time

from thickets_jax import configs
from thickets_jax.errors import InputError
from thickets_jax.tasks import arithmetic, countdown, mbpp
from thickets_jax.tasks.base import TASKS


@dataclasses.dataclass(frozen=True)
class FuzzConfig(configs.Config):
  """The fuzzer's settings."""
  inputs: int = configs.setting(2000, "Fuzzed inputs per task.")
  max_chars: int = configs.setting(2**20, "Longest pathological input.")
  slow_s: float = configs.setting(1.0, "A grader call slower than this counts as a hang.")
  seed: int = configs.setting(0, "Seed of the input generator.")
  tasks: tuple[str, ...] = configs.setting((), "Tasks to fuzz (default: every registered task).")

  def validate(self) -> None:
    for name in ("inputs", "max_chars", "slow_s"):
      if not getattr(self, name) > 0:
        raise InputError(f"--{name} must be positive, got {getattr(self, name)}.")
    for name in self.tasks:
      TASKS.get(name)


TOTALS = ("calls", "crashes", "slow", "reward_out_of_range", "wrong_accepts")


def fuzz(config: FuzzConfig, on_task=lambda name, counts: None) -> dict:
  """Per task (`config.tasks`, else all), its `fuzz_task` counts; `on_task` sees each as it
  finishes. Returns {"tasks": {name: counts}, "total": {count: sum}}."""
  rng = random.Random(config.seed)
  results = {}
  for name in config.tasks or sorted(TASKS.names()):
    results[name] = fuzz_task(name, rng, config)
    on_task(name, results[name])
  return {"tasks": results, "total": {k: sum(r[k] for r in results.values()) for k in TOTALS}}


_PIECES = ["<answer>", "</answer>", "<think>", "</think>", "\n", "####", "\\boxed{", "}", "{",
           "(", ")", "[", "]", ",", "-", "+", "*", "/", "**", ".", "1", "7", "42", "-3", "1e9",
           "９", "__import__('os')", "'", '"', " or ", "NaN", "inf", " "]
SYNTHETIC_GOLDS = {"gsm8k": "42", "math500": r"\frac{1}{2}", "olympiadbench": r"\sqrt{3}",
                    "rocstories": "CAEBD", "uspto50k": "3",
                    "mbpp": mbpp.Problem(("assert double(2) == 4", "assert double(-3) == -6"))}
_MBPP_RIGHT = "def double(x):\n    return 2 * x"
_MBPP_WRONG = ("def double(x):\n    return 2 * x + 1", "def double(x):\n    return x",
               "def double(x):\n    return abs(2 * x)", "double = lambda x: 4",
               "def double(x):\n    while True:\n        pass",
               "import os\ndef double(x):\n    os.system('true')\n    return 2 * x",
               "def double(x):\n    return [2 * x]")


def _gold_answer(name: str, gold) -> str:
  """The text of a right answer to `gold`, as the task's grader reads it."""
  if isinstance(gold, countdown.Problem):
    return ""  # countdown's right answers are expressions; wrong ones are built separately
  if isinstance(gold, arithmetic.Problem):
    return str(gold.value)
  if isinstance(gold, mbpp.Problem):
    return _MBPP_RIGHT
  if isinstance(gold, tuple):
    return gold[1]["answer"]
  return gold


def _wrap(name: str, text: str) -> str:
  if name == "gsm8k":
    return f"#### {text}"
  if name in ("math500", "olympiadbench"):
    return f"\\boxed{{{text}}}"
  if name in ("arithmetic", "addition", "subtraction", "multiplication"):
    return text
  return f"<answer>{text}</answer>"


# Tasks graded on a number found in free text (the last one; the one after "####"), or by
# mathematical equivalence: a hedge or wrapper around the right value is right by their protocol.
_FREE_TEXT_PROTOCOL = {"gsm8k", "math500", "olympiadbench", *arithmetic.ARITHMETIC_TASKS}


def _wrong_answers(rng: random.Random, name: str, answer: str) -> list[str]:
  """Texts whose value differs from `answer`'s under the task's protocol (GSM8K reads "4,2" as
  42 by its comma stripping, so digit lists are not wrong answers there)."""
  if name == "mbpp":
    return list(_MBPP_WRONG)
  wrong = [answer + "0"]
  if name not in _FREE_TEXT_PROTOCOL:
    wrong += [answer + " or 1", "[" + answer + "]", answer + " and more text"]
  if answer.lstrip("-").replace(".", "", 1).isdigit() and answer.strip("-0.") != "":
    wrong += [answer[1:] if answer.startswith("-") else "-" + answer,
              str(int(float(answer)) + rng.randint(1, 99))]
    if name != "gsm8k" and len(answer.lstrip("-")) > 1:
      wrong.append(",".join(answer))
  if name == "rocstories":  # another order of the same letters
    order = list(answer)
    while "".join(order) == answer:
      rng.shuffle(order)
    wrong += ["".join(order), " ".join(order)]
  if answer:
    i = rng.randrange(len(answer))
    changed = "#" if answer[i] != "#" else "%"
    wrong.append(answer[:i] + changed + answer[i + 1:])
  return [w for w in wrong if w != answer]


def _random_text(rng: random.Random, max_chars: int) -> str:
  if rng.random() < 0.1:  # pathological repeats
    piece = "".join(rng.choice(_PIECES) for _ in range(rng.randint(1, 3)))
    return piece * (rng.randint(1, max_chars) // max(len(piece), 1))
  return "".join(rng.choice(_PIECES) if rng.random() < 0.7 else chr(rng.randint(32, 0x2FFF))
                 for _ in range(rng.randint(0, 200)))


def fuzz_task(name: str, rng: random.Random, config: FuzzConfig) -> dict:
  """Counts of one task's grader calls, crashes, slow calls, rewards out of range and wrong
  answers accepted, over `config.inputs` inputs."""
  task = TASKS.get(name)
  if name in SYNTHETIC_GOLDS:
    golds = [SYNTHETIC_GOLDS[name]]
  else:
    golds = [e.gold for e in task.splits(8, 1, config.seed, None)[0]]
  counts = {"calls": 0, "crashes": 0, "slow": 0, "reward_out_of_range": 0, "wrong_accepts": 0,
            "slowest_s": 0.0}
  try:  # untimed warm-up: a grader's first call may import its library (math-verify: ~2 s)
    task.correct(_wrap(name, _gold_answer(name, golds[0])), golds[0])
  except Exception:  # pylint: disable=broad-except  # the counted calls below report it
    pass
  for i in range(config.inputs):
    gold = golds[i % len(golds)]
    answer = _gold_answer(name, gold)
    wrong = rng.random() < 0.5 and not isinstance(gold, countdown.Problem)
    if wrong:
      text = _wrap(name, rng.choice(_wrong_answers(rng, name, answer)))
    elif isinstance(gold, countdown.Problem) and rng.random() < 0.5:
      text = _wrap(name, "+".join(map(str, gold.numbers)) + "+1")  # uses a number not given
      wrong = True
    else:
      text = _random_text(rng, config.max_chars)
    for grade in (task.reward, task.correct, task.vote_key):
      counts["calls"] += 1
      start = time.perf_counter()
      try:
        value = grade(text, gold)
      except Exception:  # pylint: disable=broad-except  # counted, never raised
        counts["crashes"] += 1
        continue
      seconds = time.perf_counter() - start
      counts["slowest_s"] = max(counts["slowest_s"], seconds)
      counts["slow"] += seconds > max(config.slow_s, task.time_limit_s or 0.0)
      if grade is task.reward and not 0.0 <= value <= task.max_reward:
        counts["reward_out_of_range"] += 1
      if grade is task.correct and wrong and value:
        counts["wrong_accepts"] += 1
  return counts
