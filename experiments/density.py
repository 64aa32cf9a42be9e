r"""Solution density δ(m) around pretrained weights, per model and sigma (the paper's Figure 3a).

  python -m experiments.density --workdir /tmp/density          # offline default, ~15 min on 2 CPU cores
  python -m experiments.density --model qwen2.5-7b-instruct --task gsm8k --N 1000 \
      --sigmas 5e-4,1e-3,2e-3 --train_size 200 --workdir /runs/density7b

With no --model it runs the registry's offline models (GGUF-dequantised SmolLM2-135M and
Qwen2.5-Coder-0.5B) on Countdown with a small N. Each perturbation is scored on the first
`train_size` examples; δ(m) = fraction whose score ≥ base + m (absolute margins), with Wilson
95% intervals, for the shaped reward (the RandOpt score) and for accuracy. Writes
`results.json`, `density_vs_size.png`, `scores_<model>.png`, resumable `runs/<model>/`.
"""

import os

import numpy as np
from absl import flags, logging

from experiments import common, llm_common
from thickets_jax import cli, metrics, plotting, workdir
from thickets_jax.llm import registry, scoring

flags.DEFINE_list("model", list(registry.OFFLINE_MODELS), "Registered model names.")
flags.DEFINE_string("task", "countdown", "Registered task name.")
flags.DEFINE_list("margins", ["0", "0.01", "0.02", "0.05", "0.1"], "Absolute margins m.")
FLAGS = flags.FLAGS
# The offline default finishes in about 15 minutes on 2 CPU cores; real studies raise all three.
for _flag, _value in (("N", 12), ("train_size", 8), ("max_new_tokens", 96)):
  FLAGS.set_default(_flag, _value)


def main(argv):
  del argv
  llm_common.setup_devices()
  margins = cli.floats(FLAGS.margins, "margins")
  llm_common.validate(FLAGS.model, [FLAGS.task])
  train, _ = llm_common.splits(FLAGS.task, 1)  # density scores the train examples only
  root = workdir.prepare(FLAGS.workdir)
  workdir.claim(root, llm_common.spec(experiment="density", models=list(FLAGS.model),
                                      task=FLAGS.task, margins=list(margins)))
  common.start(root, "density")
  task_set = scoring.TaskSet(llm_common.TASKS.get(FLAGS.task), train)
  points = []
  for name in FLAGS.model:
    run_dir = os.path.join(root, "runs", name)
    os.makedirs(run_dir, exist_ok=True)
    loaded = llm_common.load(name)
    gen = llm_common.generator(loaded)
    base, seeds, sigmas, records = llm_common.score_base_and_members(gen, [task_set], run_dir)
    rewards = np.asarray([r["reward"][0] for r in records])
    accuracy = np.asarray([r["accuracy"][0] for r in records])
    point = {
        "model": name, "params": loaded.config.num_params, "weights": loaded.source.describe(),
        "base_reward": base["reward"][0], "base_accuracy": base["accuracy"][0],
        "density_reward": metrics.solution_density(rewards, base["reward"][0], margins, sigmas=sigmas),
        "density_accuracy": metrics.solution_density(accuracy, base["accuracy"][0], margins, sigmas=sigmas),
        "reward_quantiles": np.quantile(rewards, [0, 0.25, 0.5, 0.75, 1]).tolist(),
        "members_above_base_reward": float(np.mean(rewards > base["reward"][0])),
    }
    points.append(point)
    plotting.score_histogram(
        os.path.join(root, f"scores_{name}.png"),
        {f"σ={s:g}": rewards[sigmas == s] for s in sorted(set(sigmas.tolist()))},
        base["reward"][0], "mean shaped reward on the train examples",
        f"{name}: perturbation scores vs base")
    logging.info("%s: base reward %.3f accuracy %.3f; δ(reward, m=0) %s", name, point["base_reward"],
                 point["base_accuracy"], [(r["sigma"], round(r["density"], 3))
                                          for r in point["density_reward"] if r["margin"] == 0])
  workdir.write_json(os.path.join(root, "results.json"),
                     {"experiment": "density", "task": FLAGS.task, "N": FLAGS.N, "points": points})
  _plot_density(root, points, margins)
  print(_table(points))


def _plot_density(root, points, margins):
  ordered = sorted(points, key=lambda p: p["params"])
  curves = {}
  for sigma in llm_common.sigmas():
    for margin in (margins[0], margins[-1]):
      rows = [next(r for r in p["density_reward"] if r["sigma"] == sigma and r["margin"] == margin)
              for p in ordered]
      curves[f"σ={sigma:g}, m={margin:g}"] = tuple(
          np.asarray([r[k] for r in rows]) for k in ("density", "ci_low", "ci_high"))
  plotting.curves_vs_scale(os.path.join(root, "density_vs_size.png"),
                           [p["params"] for p in ordered], curves, "parameters",
                           "δ(m): P[score ≥ base + m]", f"solution density on {FLAGS.task}, N={FLAGS.N}")


def _table(points) -> str:
  lines = [f"{'model':32s} {'params':>12s} {'base':>6s} {'above':>6s}  δ(m) per sigma (reward)"]
  for p in points:
    by_sigma = {}
    for r in p["density_reward"]:
      by_sigma.setdefault(r["sigma"], []).append(f"{r['margin']:g}:{r['density']:.2f}")
    densities = "; ".join(f"σ={s:g} " + " ".join(v) for s, v in by_sigma.items())
    lines.append(f"{p['model']:32s} {p['params']:12d} {p['base_reward']:6.3f} "
                 f"{p['members_above_base_reward']:6.2f}  {densities}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
