r"""RandOpt on a language model: N perturbations, top K by train score, majority-vote ensemble.

  python -m experiments.randopt --model smollm2-135m-instruct --task arithmetic \
      --N 32 --K 1,4,8 --sigmas 5e-4,1e-3,2e-3 --train_size 32 --test_size 64 --workdir /tmp/ro
  python -m experiments.randopt --model qwen2.5-7b-instruct --task gsm8k --N 5000 --K 50 \
      --train_size 200 --test_size 0 --workdir /runs/ro7b      # test_size 0: the whole test split
  python -m experiments.randopt --resume_dir /tmp/ro --test_size 200 --seed 1 --workdir /tmp/ro_new
  python -m experiments.randopt --N 256 --train_size 64 --halving_eta 4 --halving_min_examples 4 \
      --workdir /tmp/ro_halving     # successive halving: the top K at a fraction of the FLOPs

Writes `results.json` (base, top-1, ensemble per K and oracle pass@K accuracies, train
scores), `topk.json` (the post-trained model: model identity, `PerturbSpec` and the top-K
`(seed, sigma)`, a few hundred bytes), `candidates.jsonl` / `test_members.jsonl` (each scored
member as it finishes; a rerun resumes), `log.txt`, `config.json`. `--resume_dir` re-evaluates
a saved top-K on a new test set without scoring anything on train. `--halving_eta` selects by
successive halving (`thickets_jax.halving`; each rung's scores in `rung<i>.jsonl`); results then
list the rungs and the selection's example evaluations and forward FLOPs. The run itself is
`thickets_jax.llm.randopt.run_randopt`.
"""

from absl import flags

from experiments import llm_common
from thickets_jax import cli, configs
from thickets_jax.llm import randopt

flags.adopt_module_key_flags(llm_common)
configs.define_flags(randopt.RandOptConfig)
flags.DEFINE_string("resume_dir", None, "A finished run whose top-K is re-evaluated on this test set.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  llm_common.setup_devices()
  if FLAGS.resume_dir:  # the saved run's settings, but the flags given
    _, saved = randopt.saved_config(FLAGS.resume_dir)
    config = configs.from_flags(randopt.RandOptConfig, base=saved)
    overridden = configs.present(randopt.RandOptConfig)
    run = lambda c, workdir: randopt.reevaluate_randopt(c, FLAGS.resume_dir, workdir, overridden)
  else:
    config = llm_common.config(randopt.RandOptConfig)
    run = randopt.run_randopt
  result = llm_common.run_or_plan(run, config, FLAGS.workdir)
  if result is not None:
    print(_table(result, config.ks))


def _table(result, ks) -> str:
  lines = [f"base test accuracy      {result['base']['test_accuracy']:.3f}"] if "base" in result else []
  if "selection" in result:
    lines.append(f"selection               {result['selection']['example_evaluations']} example "
                 f"evaluations, {result['selection']['forward_flops']:.3g} FLOPs")
  lines.append(f"top-1 test accuracy     {result['top1_accuracy']:.3f}")
  for k in ks:
    others = "".join(
        f"{label} {result[name][str(k)]:.3f}   "
        for name, label in (("averaged_weights_accuracy", "averaged weights"),
                            ("probability_average_accuracy", "probability average"))
        if str(k) in result.get(name, {}))
    lines.append(f"K={k:<4d} vote {result['ensemble_accuracy'][str(k)]:.3f}   {others}"
                 f"oracle pass@K {result['oracle_pass_at_k'][str(k)]:.3f}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
