r"""Ensemble inference: the top-K members of a finished RandOpt run answer new prompts by
majority vote (the task's vote key, the search's tie rule).

  python -m experiments.predict --run_dir /tmp/ro --prompts prompts.jsonl --K 4 --out answers.jsonl

`--prompts` is JSONL in the run task's record format, e.g. `{"numbers": [3, 5, 7],
"target": 22}` (countdown) or `{"prompt": "What is 3 + 4?"}` (arithmetic); records that carry
the answer are graded. Each output line holds the record, the voted answer, the completion that
cast it, the vote counts and every member's answer (`thickets_jax.llm.predict`).
"""

from absl import flags

from thickets_jax import cli, population
from thickets_jax.errors import InputError
from thickets_jax.llm import predict

flags.DEFINE_string("run_dir", None, "A finished randopt run (holding topk.json).")
flags.DEFINE_string("prompts", None, "JSONL prompts in the run task's record format.")
flags.DEFINE_string("out", None, "JSONL answers, one line per prompt.")
flags.DEFINE_integer("K", None, "Members voting, the K best saved (default: all saved).")
flags.DEFINE_integer("max_new_tokens", None, "Generation limit (default: the run's).")
flags.DEFINE_integer("batch_size", 16, "Prompts per generation batch.")
flags.DEFINE_integer("members_per_batch", 1, "Members per compiled generation call.")
flags.DEFINE_enum("member_axis", "map", population.MEMBER_AXES, "How members share a call.")
flags.DEFINE_bool("keep_completions", True, "Write each member's completion.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.run_dir or not FLAGS.prompts or not FLAGS.out:
    raise InputError("--run_dir, --prompts and --out are required.")
  summary = predict.predict(predict.PredictConfig(
      run_dir=FLAGS.run_dir, prompts=FLAGS.prompts, out=FLAGS.out, K=FLAGS.K,
      max_new_tokens=FLAGS.max_new_tokens, batch_size=FLAGS.batch_size,
      members_per_batch=FLAGS.members_per_batch, member_axis=FLAGS.member_axis,
      keep_completions=FLAGS.keep_completions))
  accuracy = "" if summary["accuracy"] is None else (
      f"; voted accuracy {summary['accuracy']:.3f} on {summary['graded']} graded")
  print(f"wrote {summary['out']}: {summary['prompts']} prompts, top-{summary['K']} vote, "
        f"{summary['answered']} answered{accuracy}")


if __name__ == "__main__":
  cli.run(main)
