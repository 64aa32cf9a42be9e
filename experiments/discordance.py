r"""Spectral discordance: do the perturbations that help one task help the others? (Figure 4)

  python -m experiments.discordance --workdir /tmp/discordance       # SmolLM2, 7 offline tasks
  python -m experiments.discordance --model qwen2.5-1.5b-instruct --N 100 --train_size 32 \
      --workdir /runs/disc15

Scores N perturbations on M tasks (default 7 offline tasks over several domains: Countdown
and six reasoning-gym tasks), then: the [N, M] percentile-rank matrix, the M×M Pearson
correlation of its columns (`correlation.png`), D = 1 − mean off-diagonal correlation with its
bound M/(M−1), the performance spectra of the seeds (`spectra.png`: gain over the base on each
task) and a 2-D PCA of the performance vectors with k-means clusters (`pca.png`). Scores are the
mean shaped rewards (finer than accuracy on small train sets); D on accuracy is reported too.
"""

import os

import numpy as np
from absl import flags, logging
from scipy.cluster import vq

from experiments import common, llm_common
from thickets_jax import cli, metrics, plotting, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import scoring

DEFAULT_TASKS = ["countdown", "basic_arithmetic", "gsm_symbolic", "leg_counting",
                 "letter_counting", "number_sorting", "word_sorting"]
flags.DEFINE_string("model", "smollm2-135m-instruct", "Registered model name.")
flags.DEFINE_list("tasks", DEFAULT_TASKS, "Registered task names (M >= 2).")
flags.DEFINE_integer("clusters", 3, "k of the k-means clustering of performance vectors.")
flags.DEFINE_integer("spectra_shown", 100, "Seeds drawn in spectra.png.")
FLAGS = flags.FLAGS
for _flag, _value in (("N", 16), ("train_size", 4), ("max_new_tokens", 96)):
  FLAGS.set_default(_flag, _value)


def main(argv):
  del argv
  llm_common.setup_devices()
  if len(FLAGS.tasks) < 2:
    raise InputError("--tasks needs at least two tasks for spectral discordance.")
  if FLAGS.N < 2:
    raise InputError(f"--N must be at least 2, got {FLAGS.N}.")
  if not 1 <= FLAGS.clusters <= FLAGS.N:
    raise InputError(f"--clusters must be between 1 and N={FLAGS.N}, got {FLAGS.clusters}.")
  llm_common.validate([FLAGS.model], FLAGS.tasks)
  task_sets = [scoring.TaskSet(llm_common.TASKS.get(name), llm_common.splits(name, 1)[0])
               for name in FLAGS.tasks]
  root = workdir.prepare(FLAGS.workdir)
  workdir.claim(root, llm_common.spec(experiment="discordance", model=FLAGS.model,
                                      tasks=list(FLAGS.tasks)))
  common.start(root, "discordance")
  loaded = llm_common.load(FLAGS.model)
  gen = llm_common.generator(loaded)
  base, _, _, records = llm_common.score_base_and_members(gen, task_sets, root)
  rewards = np.asarray([r["reward"] for r in records])  # [N, M]
  accuracy = np.asarray([r["accuracy"] for r in records])
  by_reward = metrics.spectral_discordance(rewards)
  by_accuracy = metrics.spectral_discordance(accuracy)
  gains = rewards - np.asarray(base["reward"])[None]  # performance vectors relative to the base
  projected, explained = _pca(gains)
  _, labels = vq.kmeans2(projected, FLAGS.clusters, seed=FLAGS.seed, minit="++")
  result = {"model": FLAGS.model, "weights": loaded.source.describe(), "tasks": list(FLAGS.tasks),
            "N": FLAGS.N, "base_reward": base["reward"], "base_accuracy": base["accuracy"],
            "discordance_reward": by_reward, "discordance_accuracy": by_accuracy,
            "percentile_ranks_reward": metrics.percentile_ranks(rewards).tolist(),  # [N, M]
            "pca_explained_variance": explained, "clusters": labels.tolist(),
            "mean_gain_per_cluster": [gains[labels == c].mean(0).tolist() if np.any(labels == c)
                                      else None for c in range(FLAGS.clusters)]}
  workdir.write_json(os.path.join(root, "results.json"), result)
  _plots(root, by_reward, gains, projected, labels)
  logging.info("D (reward) = %s of bound %.3f; D (accuracy) = %s", by_reward["discordance"],
               by_reward["upper_bound"], by_accuracy["discordance"])
  print(f"spectral discordance over {len(FLAGS.tasks)} tasks, N={FLAGS.N}: "
        f"D(reward) = {_fmt(by_reward['discordance'])}, D(accuracy) = {_fmt(by_accuracy['discordance'])} "
        f"(bound {by_reward['upper_bound']:.3f})")


def _fmt(d):
  return "undefined (a task's scores are constant)" if d is None else f"{d:.3f}"


def _pca(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
  """2-D principal components of the rows of x [N, M]; explained variance ratios."""
  centered = x - x.mean(0)
  _, s, vt = np.linalg.svd(centered, full_matrices=False)
  total = float((s**2).sum()) or 1.0
  return centered @ vt[:2].T, [float(v**2 / total) for v in s[:2]]


def _plots(root, discordance, gains, projected, labels):
  tasks = FLAGS.tasks
  if discordance["correlation"] is not None:
    plotting.correlation_heatmap(os.path.join(root, "correlation.png"),
                                 np.asarray(discordance["correlation"]), tasks,
                                 f"rank correlation across tasks, D = {discordance['discordance']:.3f}")
  shown = slice(0, FLAGS.spectra_shown)
  plotting.spectra(os.path.join(root, "spectra.png"), gains[shown], labels[shown], tasks,
                   "performance spectra of perturbations (coloured by cluster)")
  plotting.clusters_2d(os.path.join(root, "pca.png"), projected, labels,
                       "PCA of performance vectors, k-means clusters")


if __name__ == "__main__":
  cli.run(main)
