r"""Spectral discordance of N members over M tasks, per model (the paper's Figures 3b and 4).

  from thickets_jax.llm import discordance
  result = discordance.run_discordance(discordance.DiscordanceConfig(), "/tmp/discordance")
"""

import dataclasses
from typing import ClassVar

import numpy as np
from absl import logging
from scipy.cluster import vq

from thickets_jax import configs, metrics, plotting
from thickets_jax.errors import InputError
from thickets_jax.llm import scoring
from thickets_jax.llm.session import (TINY, TINY_MODEL, ModelsConfig, score_base_and_members,
                                      truncation)
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir


# Tasks on which both offline bases score between 0 and 1 and their members differ
# (docs/results.md). The reasoning-gym tasks are not among them: SmolLM2-135M never writes the
# <answer> tags they grade; on `subtraction` all its members score the same.
DISCORDANCE_TASKS = ("arithmetic", "addition", "multiplication")
# The paper's seven evaluation tasks in four domains (Figures 3b and 4): `--tasks paper`.
PAPER_TASKS = ("countdown", "gsm8k", "math500", "olympiadbench", "mbpp", "rocstories",
               "uspto50k")


@dataclasses.dataclass(frozen=True)
class DiscordanceConfig(ModelsConfig):
  """Spectral discordance of N members over M tasks, per model (the paper's Figure 4)."""
  tasks: tuple[str, ...] = configs.setting(
      DISCORDANCE_TASKS, "Registered task names, M >= 2, distinct; 'paper': the paper's seven "
      "(countdown, gsm8k, math500, olympiadbench, mbpp, rocstories, uspto50k).")
  clusters: int = configs.setting(3, "k of the k-means clustering of performance vectors.")
  spectra_shown: int = configs.setting(100, "Seeds drawn in spectra_<model>.png (>= 1).")
  N: int = 16
  sigmas: tuple[float, ...] = (1e-3,)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (16, 32)

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "DiscordanceConfig":
    return cls(**{**TINY, "weights": weights, "models": (TINY_MODEL,), "N": 6,
                  "tasks": ("countdown", "basic_arithmetic", "letter_counting"), "clusters": 2,
                  "sigmas": (0.05, 0.2), "members_per_batch": 3, **overrides})

  def __post_init__(self):
    if self.tasks == ("paper",):
      object.__setattr__(self, "tasks", PAPER_TASKS)
    super().__post_init__()

  def validate(self) -> None:
    super().validate()
    if len(self.tasks) < 2:
      raise InputError("--tasks needs at least two tasks for spectral discordance.")
    if len(set(self.tasks)) != len(self.tasks):
      raise InputError(f"--tasks names a task twice: {','.join(self.tasks)}.")
    if self.N < 2:
      raise InputError(f"--N must be at least 2, got {self.N}.")
    if not 1 <= self.clusters <= self.N:
      raise InputError(f"--clusters must be between 1 and N={self.N}, got {self.clusters}.")
    if self.spectra_shown < 1:
      raise InputError(f"--spectra_shown must be at least 1, got {self.spectra_shown}.")


def run_discordance(config: DiscordanceConfig, workdir: str) -> dict:
  """N members × M tasks per model -> D (with its bound M/(M−1)), PCA clusters, D vs size.

  Scores are mean rewards on each task's train examples. Writes per model
  `correlation_<model>.png`, `spectra_<model>.png`, `pca_<model>.png`, and
  `discordance_vs_size.png`.
  """
  config = config.planned()
  config.find_inputs()
  task_sets = [scoring.TaskSet(TASKS.get(name), config.splits(name, 1)[0])
               for name in config.tasks]
  run_dir = RunDir.prepare(workdir)
  run_dir.claim(config.identity())
  with run_dir.session("discordance", dataclasses.asdict(config)):
    logging.info("%s", config.plan["summary"])
    points = []
    for name in config.models:
      loaded = config.load(name)
      base, _, _, records = score_base_and_members(config, config.generator(loaded), task_sets,
                                                   run_dir.child(name))
      points.append({**_discordance_point(run_dir, config, name, loaded, base, records),
                     "truncated": truncation(config, base, records, name)})
      del loaded
    result = {**config.identity(), "execution_plan": config.plan, "points": points}
    run_dir.write("results", result)
    _plot_discordance(run_dir, config, points)
  return result


def _discordance_point(run_dir, config, name, loaded, base, records) -> dict:
  rewards = np.asarray([r["reward"] for r in records])  # [N, M]
  accuracy = np.asarray([r["accuracy"] for r in records])
  by_reward = metrics.spectral_discordance(rewards)
  by_reward["interval_95"] = metrics.discordance_interval(rewards, seed=config.seed)
  gains = rewards - np.asarray(base["reward"])[None]  # performance vectors relative to the base
  projected, explained = metrics.pca(gains)
  _, labels = vq.kmeans2(projected, config.clusters, seed=config.seed, minit="++")
  point = {"model": name, "params": loaded.config.num_params,
           "weights_source": loaded.source.describe(), "base_reward": base["reward"],
           "base_accuracy": base["accuracy"], "discordance_reward": by_reward,
           "discordance_accuracy": metrics.spectral_discordance(accuracy),
           "base_at_bound": {t: metrics.versus_base(rewards[:, j], base["reward"][j],
                                                    ceiling=TASKS.get(t).max_reward)["base_at"]
                             for j, t in enumerate(config.tasks)},
           "percentile_ranks_reward": metrics.percentile_ranks(rewards).tolist(),  # [N, M]
           "pca_explained_variance": explained, "clusters": labels.tolist(),
           "mean_gain_per_cluster": [gains[labels == c].mean(0).tolist() if np.any(labels == c)
                                     else None for c in range(config.clusters)]}
  if by_reward["correlation"] is not None:
    plotting.correlation_heatmap(run_dir.figure(f"correlation_{name}"),
                                 np.asarray(by_reward["correlation"]), config.tasks,
                                 f"{name}: rank correlation, D = {by_reward['discordance']:.3f}")
  shown = slice(0, config.spectra_shown)
  plotting.spectra(run_dir.figure(f"spectra_{name}"), gains[shown], labels[shown], config.tasks,
                   f"{name}: performance spectra of perturbations (by cluster)")
  plotting.clusters_2d(run_dir.figure(f"pca_{name}"), projected, labels,
                       f"{name}: PCA of performance vectors, k-means clusters")
  logging.info("%s: D (reward) = %s of bound %.3f", name, by_reward["discordance"],
               by_reward["upper_bound"])
  return point


def _plot_discordance(run_dir: RunDir, config: DiscordanceConfig, points: list[dict]) -> None:
  ordered = [p for p in sorted(points, key=lambda p: p["params"])
             if p["discordance_reward"]["discordance"] is not None]
  undefined = [p["model"] for p in points if p["discordance_reward"]["discordance"] is None]
  values = np.asarray([p["discordance_reward"]["discordance"] for p in ordered])
  intervals = [p["discordance_reward"]["interval_95"] or (np.nan, np.nan) for p in ordered]
  bound = len(config.tasks) / (len(config.tasks) - 1)
  plotting.curves_vs_scale(
      run_dir.figure("discordance_vs_size"), [p["params"] for p in ordered],
      {"D (reward ranks), bootstrap 95%": (values, np.asarray([i[0] for i in intervals]),
                                           np.asarray([i[1] for i in intervals]))},
      "parameters", "spectral discordance D", f"{len(config.tasks)} tasks, N={config.N} per model",
      hline=(bound, "bound M/(M−1)"), ylim=(0.0, 1.05 * bound),
      note="" if not undefined else f"undefined (a constant task): {', '.join(undefined)}")
