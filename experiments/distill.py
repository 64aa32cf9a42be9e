r"""Distillation, or iterative RandOpt: each round searches around the current base, the top-K
vote's correct train completions become fine-tuning targets, and the fine-tuned model is the
next round's base.

  python -m experiments.distill --workdir /tmp/distill                 # offline default
  python -m experiments.distill --finetune lora --lora_rank 16 --rounds 3 --workdir /tmp/d_lora
  python -m experiments.distill --model qwen2.5-7b-instruct --task countdown --N 500 --K 50 \
      --train_size 200 --test_size 500 --max_new_tokens 1024 --workdir /runs/distill7b

Per round (`thickets_jax.llm.distill`): training FLOPs (search, teacher, fine-tuning), the
number of targets, the top-K vote's train and test accuracy, and the distilled model's greedy
train and test accuracy. Writes `results.json`, `accuracy_by_round.png`, `log.txt` and per
round `runs/round<r>/` (scored members, teacher targets, orbax checkpoints, evaluations);
rerunning the same command resumes.
"""

from absl import flags

from experiments import llm_common
from thickets_jax import cli, configs
from thickets_jax.llm import distill

flags.adopt_module_key_flags(llm_common)
configs.define_flags(distill.DistillConfig)
FLAGS = llm_common.FLAGS


def main(argv):
  del argv
  llm_common.setup_devices()
  config = llm_common.config(distill.DistillConfig)
  result = llm_common.run_or_plan(distill.run_distill, config, FLAGS.workdir)
  if result is not None:
    print(table(result))


def table(result: dict) -> str:
  lines = [f"{'round':>5} {'train FLOPs':>12} {'targets':>7} {'vote train':>10} {'vote test':>9} "
           f"{'train acc':>9} {'test acc ± SE':>14}"]
  for r in result["rounds"]:
    vote = (f"{r['teacher_train_vote_accuracy']:>10.3f} {r['teacher_test_vote_accuracy']:>9.3f}"
            if r["round"] else f"{'':>10} {'':>9}")
    lines.append(f"{r['round']:>5} {r['training_flops']:>12.3g} {r.get('targets', ''):>7} "
                 f"{vote} {r['train_accuracy']:>9.3f} {r['test_accuracy']:>7.3f} ±{r['test_se']:.3f}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
