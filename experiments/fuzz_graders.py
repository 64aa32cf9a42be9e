r"""Fuzzes every task's grader: crashes, slow inputs and wrong accepts.

  python -m experiments.fuzz_graders --inputs 2000 --workdir /tmp/fuzz

For every registered task (dataset tasks get a synthetic gold) each input goes through
`reward`, `correct` and `vote_key`. Inputs are random text, tag soups, pathological repeats up
to `--max_chars` characters, and wrong answers: the gold perturbed so that its value changes
(sign flipped, a digit changed, an item added or dropped, text appended), wrapped the way the
task expects answers. Counted per task: calls, crashes (any exception), calls slower than
`--slow_s`, rewards outside [0, max_reward], and wrong answers marked correct. Writes
`results.json`; the last line printed is the total.
"""

from absl import flags

from thickets_jax import cli, configs
from thickets_jax.tasks import fuzz
from thickets_jax.workdir import RunDir

configs.define_flags(fuzz.FuzzConfig)
flags.DEFINE_string("workdir", None, "Where results.json goes.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  config = configs.from_flags(fuzz.FuzzConfig)
  run_dir = RunDir.prepare(FLAGS.workdir)
  run_dir.claim({"experiment": "fuzz_graders"})  # never another experiment's workdir
  result = fuzz.fuzz(config, on_task=_print)
  run_dir.write("results", {"inputs_per_task": config.inputs, "max_chars": config.max_chars,
                            "tasks": result["tasks"]})
  total = result["total"]
  print(f"fuzz: {total['calls']} grader calls over {len(result['tasks'])} tasks, "
        f"{total['crashes']} crashes, {total['slow']} over {config.slow_s:g} s, "
        f"{total['reward_out_of_range']} rewards out of range, {total['wrong_accepts']} wrong "
        "accepts")


def _print(name: str, c: dict) -> None:
  print(f"{name:28s} calls {c['calls']:6d}  crashes {c['crashes']}  slow {c['slow']}  "
        f"out of range {c['reward_out_of_range']}  wrong accepts {c['wrong_accepts']}  "
        f"slowest {1e3 * c['slowest_s']:.1f} ms", flush=True)


if __name__ == "__main__":
  cli.run(main)
