r"""RandOpt vs ES vs GRPO against training FLOPs (the paper's Figure 1c), on an LLM or 1D signals.

  python -m experiments.compare --workdir /tmp/compare          # offline default, ~20 min
  python -m experiments.compare --model qwen2.5-7b-instruct --task countdown --N 5000 \
      --train_size 200 --test_size 2000 --max_new_tokens 1024 --vote_k 50 --es_population 30 \
      --es_iterations 300 --grpo_steps 200 --grpo_prompts 1024 --grpo_mini_batch 64 \
      --group_size 8 --grpo_learning_rate 1e-6 --workdir /runs/compare7b
  python -m experiments.compare --methods es --es_antithetic --es_fitness centered_rank ...
  python -m experiments.compare --domain signals --seeds 0-2 --workdir /tmp/compare1d  # minutes

Language models (`thickets_jax.llm.compare.run_compare`): base (greedy, and majority vote over
K samples), RandOpt (top-1, top-K vote), ES and GRPO (each iterate greedy and voted over K
samples) on the same split, reward and vote protocol. Writes `results.json` (per method: points
of training FLOPs, test accuracy ± SE, test FLOPs; wall time), `accuracy_vs_flops.png`,
`log.txt`, `config.json`, and per method `runs/<method>/` (scored members, ES iterations, GRPO
steps, orbax checkpoints); rerunning the same command resumes. `--methods` runs a subset (e.g.
ES or GRPO alone).

1D signals (`thickets_jax.signals.compare`): RandOpt, ES and gradient descent on the train MSE
of a pretrained MLP, test MSE against FLOPs, over `--seeds`.
"""

from absl import flags

from experiments import llm_common
from thickets_jax import cli, configs
from thickets_jax.errors import InputError
from thickets_jax.llm import compare
from thickets_jax.signals import compare as signals_compare

DOMAINS = ("llm", "signals")
flags.DEFINE_enum("domain", "llm", DOMAINS, "Compare on a language model or on the 1D signals.")
flags.adopt_module_key_flags(llm_common)
configs.define_flags(compare.CompareConfig)
flags.DEFINE_string("seeds", "0-2", "--domain signals: root seeds the comparison repeats over.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if FLAGS.domain == "signals":
    llm_set = configs.present(compare.CompareConfig)
    if llm_set:
      raise InputError(f"--{llm_set[0]} is a language-model flag; --domain signals takes --seeds.")
    result = signals_compare.run_compare(
        signals_compare.CompareSpec(), cli.int_ranges(FLAGS.seeds, "seeds"), FLAGS.workdir)
    print(signals_compare.table(result))
    return
  llm_common.setup_devices()
  config = llm_common.config(compare.CompareConfig)
  result = llm_common.run_or_plan(compare.run_compare, config, FLAGS.workdir)
  if result is not None:
    print(table(result))


def table(result: dict) -> str:
  lines = [f"{'method':<8} {'train FLOPs':>12} {'single':>13} {'vote':>13} {'test FLOPs':>11}"]
  for row in result["table"]:
    lines.append(f"{row['method']:<8} {row['train_flops']:>12.3g} "
                 f"{row['single_accuracy']:>6.3f} ±{row['single_se']:.3f} "
                 f"{row['vote_accuracy']:>6.3f} ±{row['vote_se']:.3f} {row['test_flops_vote']:>11.3g}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
