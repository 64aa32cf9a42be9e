r"""Ensemble inference: the top-K members of a finished RandOpt run answer new prompts by
majority vote (the task's vote key, the search's tie rule).

  python -m experiments.predict --run_dir /tmp/ro --prompts prompts.jsonl --K 4 --out answers.jsonl

`--prompts` is JSONL in the run task's record format, e.g. `{"numbers": [3, 5, 7],
"target": 22}` (countdown) or `{"prompt": "What is 3 + 4?"}` (arithmetic); records that carry
the answer are graded. Each output line holds the record, the voted answer, the completion that
cast it, the vote counts and every member's answer (`thickets_jax.llm.predict`).
"""

from thickets_jax import cli, configs
from thickets_jax.llm import predict

configs.define_flags(predict.PredictConfig)


def main(argv):
  del argv
  summary = predict.predict(configs.from_flags(predict.PredictConfig))
  accuracy = "" if summary["accuracy"] is None else (
      f"; voted accuracy {summary['accuracy']:.3f} on {summary['graded']} graded")
  print(f"wrote {summary['out']}: {summary['prompts']} prompts, top-{summary['K']} vote, "
        f"{summary['answered']} answered{accuracy}")


if __name__ == "__main__":
  cli.run(main)
