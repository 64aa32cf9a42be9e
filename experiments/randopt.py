r"""RandOpt on a language model: N perturbations, top K by train score, majority-vote ensemble.

  python -m experiments.randopt --model smollm2-135m-instruct --task countdown \
      --N 32 --K 1,4,8 --sigmas 5e-4,1e-3,2e-3 --train_size 16 --test_size 32 --workdir /tmp/ro
  python -m experiments.randopt --model qwen2.5-7b-instruct --task gsm8k --N 5000 --K 50 \
      --train_size 200 --test_size 0 --workdir /runs/ro7b      # test_size 0: the whole test split
  python -m experiments.randopt --resume_dir /tmp/ro --test_size 200 --seed 1 --workdir /tmp/ro_new

Writes `results.json` (base, top-1, ensemble per K and oracle pass@K accuracies, train
scores), `topk.json` (the post-trained model: model identity, perturbation settings and the
top-K `(seed, sigma)`, a few hundred bytes), `candidates.jsonl` / `test_members.jsonl` (each
scored member as it finishes; a rerun resumes), `log.txt`, `flags.json`.
`--resume_dir` re-evaluates a saved top-K on a new test set without scoring anything again.
"""

import os

import numpy as np
from absl import flags, logging

from experiments import common, llm_common
from thickets_jax import cli, randopt, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import scoring

flags.DEFINE_string("model", "smollm2-135m-instruct", "Registered model name.")
flags.DEFINE_string("task", "countdown", "Registered task name.")
flags.DEFINE_list("K", ["1", "4"], "Top-K sizes, e.g. 1,4,8.")
flags.DEFINE_integer("test_size", 32, "Test examples (0: all the test split has).")
flags.DEFINE_string("resume_dir", None, "A finished run whose top-K is re-evaluated on this test set.")
FLAGS = flags.FLAGS


def _post_trained(root: str, ks) -> dict:
  """The saved top-K of `--resume_dir`, checked to cover the largest K asked for."""
  path = os.path.join(root, "topk.json")
  if not os.path.exists(path):
    raise InputError(f"--resume_dir {root} holds no topk.json; finish a randopt run there first.")
  saved = workdir.read_json(path)
  if max(ks) > len(saved["members"]):
    raise InputError(f"--resume_dir holds a top-{len(saved['members'])}, fewer than K={max(ks)}.")
  return saved


def _evaluate_top(gen, task_set, members, root, ks):
  """Test completions of the ranked members (resumable) -> accuracies per K."""
  seeds = np.asarray([m["seed"] for m in members], np.int64)
  sigmas = np.asarray([m["sigma"] for m in members], np.float64)
  store = randopt.CandidateStore(os.path.join(root, "test_members.jsonl"))
  records = scoring.score_members(gen, [task_set], seeds, sigmas, store,
                                  members_per_batch=FLAGS.members_per_batch,
                                  mesh=llm_common.mesh(), keep_examples=True,
                                  keep_completions=FLAGS.keep_completions)
  votes = [r["votes"][0] for r in records]
  correct = [r["correct"][0] for r in records]
  return {
      "top1_accuracy": float(np.mean(correct[0])),
      "ensemble_accuracy": {str(k): randopt.ensemble_accuracy(votes[:k], correct[:k]) for k in ks},
      "oracle_pass_at_k": {str(k): float(np.mean(np.any(correct[:k], axis=0))) for k in ks},
      "member_test_accuracy": [float(np.mean(c)) for c in correct],
  }


def main(argv):
  del argv
  llm_common.setup_devices()
  ks = cli.ints(FLAGS.K, "K")
  if FLAGS.test_size < 0:
    raise InputError(f"--test_size must be >= 0, got {FLAGS.test_size}.")
  saved = _post_trained(os.path.abspath(FLAGS.resume_dir), ks) if FLAGS.resume_dir else None
  model = saved["model"] if saved else FLAGS.model
  task_name = saved["task"] if saved else FLAGS.task
  llm_common.validate([model], [task_name], ks if not saved else ())
  train, test = llm_common.splits(task_name, FLAGS.test_size)
  root = workdir.prepare(FLAGS.workdir)
  workdir.claim(root, llm_common.spec(experiment="randopt", model=model, task=task_name, K=list(ks),
                                      test_size=FLAGS.test_size, resume_dir=FLAGS.resume_dir))
  common.start(root, "randopt")
  loaded = llm_common.load(model)
  task = scoring.TaskSet(llm_common.TASKS.get(task_name), train)
  test_set = scoring.TaskSet(task.task, test)
  logging.info("%s on %s: %d train, %d test examples; weights %s", model, task_name, len(train),
               len(test), loaded.source.describe())
  if saved:
    gen = llm_common.generator(loaded)
    result = {"resumed_from": FLAGS.resume_dir, "members": saved["members"],
              **_evaluate_top(gen, test_set, saved["members"], root, ks)}
    workdir.write_json(os.path.join(root, "results.json"), result)
    print(_table(result, ks, None))
    return

  gen = llm_common.generator(loaded)
  base_test = lambda: scoring.score_base(gen, [test_set], keep_completions=FLAGS.keep_completions)
  base = {"test": workdir.cached_json(os.path.join(root, "base_test.json"), base_test)}
  base["train"], seeds, sigmas, records = llm_common.score_base_and_members(gen, [task], root)
  train_scores = np.asarray([r["reward"][0] for r in records])
  order = randopt.top_k(train_scores, [max(ks)])[max(ks)]
  members = [{"seed": int(seeds[i]), "sigma": float(sigmas[i]), "train_score": float(train_scores[i]),
              "train_accuracy": float(records[i]["accuracy"][0])} for i in order]
  workdir.write_json(os.path.join(root, "topk.json"), {
      "model": model, "weights": loaded.source.describe(), "task": task_name,
      "perturbation": {**llm_common.perturb_kwargs(), "stacked": "^layers/"},
      "dtype": FLAGS.dtype, "members": members})
  result = {
      "model": model, "task": task_name, "weights": loaded.source.describe(), "N": FLAGS.N,
      "sigmas": list(llm_common.sigmas()), "train_size": len(train), "test_size": len(test),
      "base": {"train_score": base["train"]["reward"][0], "train_accuracy": base["train"]["accuracy"][0],
               "test_accuracy": base["test"]["accuracy"][0]},
      "train_score_distribution": {"mean": float(train_scores.mean()),
                                   "max": float(train_scores.max()),
                                   "members_above_base": float(np.mean(train_scores > base["train"]["reward"][0]))},
      **_evaluate_top(gen, test_set, members, root, ks),
  }
  workdir.write_json(os.path.join(root, "results.json"), result)
  print(_table(result, ks, result["base"]["test_accuracy"]))


def _table(result, ks, base_accuracy) -> str:
  lines = [] if base_accuracy is None else [f"base test accuracy      {base_accuracy:.3f}"]
  lines.append(f"top-1 test accuracy     {result['top1_accuracy']:.3f}")
  for k in ks:
    lines.append(f"K={k:<4d} ensemble {result['ensemble_accuracy'][str(k)]:.3f}   "
                 f"oracle pass@K {result['oracle_pass_at_k'][str(k)]:.3f}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
