r"""Solution density δ(m) per model and sigma on one task (the paper's Figure 3a).

  from thickets_jax.llm import density
  result = density.run_density(density.DensityConfig(), "/tmp/density")   # the offline main job
"""

import dataclasses
import math
from typing import ClassVar, Optional

import numpy as np
from absl import logging

from thickets_jax import configs, metrics, plotting
from thickets_jax.errors import InputError
from thickets_jax.llm import scoring
from thickets_jax.llm.session import (TINY, TINY_MODEL, ModelsConfig, score_base_and_members,
                                      truncation)
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir


@dataclasses.dataclass(frozen=True)
class DensityConfig(ModelsConfig):
  """Solution density δ(m) per model and sigma on one task (the paper's Figure 3a).

  The defaults are the offline main job (docs/results.md): both offline models on our
  `arithmetic` task, where both bases score between 0 and 1 with short answers.
  """
  task: str = configs.setting("arithmetic", "Registered task name.")
  margins: tuple[float, ...] = configs.setting((0.0, 0.05, 0.1), "Absolute margins m of δ(m).")
  N: int = 32
  sigmas: tuple[float, ...] = (5e-4, 1e-3)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (32, 32)

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "DensityConfig":
    return cls(**{**TINY, "weights": weights, "models": (TINY_MODEL,), "task": "countdown",
                  **overrides})

  def validate(self) -> None:
    super().validate()
    for margin in self.margins:
      if not math.isfinite(margin):
        raise InputError(f"--margins must be finite numbers, got {margin}.")
    if not self.margins:
      raise InputError("--margins needs at least one margin.")


def run_density(config: DensityConfig, workdir: str) -> dict:
  """δ(m) per model × sigma on the train examples, against the base, with intervals.

  Returns (and writes to results.json) one point per model: parameters, base reward and
  accuracy, δ(m) per sigma and margin (reward and accuracy, Wilson 95%), the fractions of
  members strictly above / tied with / below the base, and whether the base is at the floor or
  ceiling (where δ(0) says nothing). Writes `scores_<model>.png` and `density_vs_size.png`.
  """
  config = config.planned()
  config.find_inputs()
  train, _ = config.splits(config.task, 1)  # density scores the train examples only
  run_dir = RunDir.prepare(workdir)
  run_dir.claim(config.identity())
  with run_dir.session("density", dataclasses.asdict(config)):
    logging.info("%s", config.plan["summary"])
    task = TASKS.get(config.task)
    task_set = scoring.TaskSet(task, train)
    points = []
    for name in config.models:
      loaded = config.load(name)
      member_dir = run_dir.child(name)
      base, _, sigmas, records = score_base_and_members(config, config.generator(loaded),
                                                        [task_set], member_dir)
      rewards = np.asarray([r["reward"][0] for r in records])  # [N]
      accuracy = np.asarray([r["accuracy"][0] for r in records])  # [N]
      points.append({**_density_point(config, name, loaded, base, sigmas, rewards, accuracy,
                                      task.max_reward),
                     "truncated": truncation(config, base, records, name)})
      _plot_scores(run_dir, config, points[-1], sigmas, rewards)
      del loaded
    result = {**config.identity(), "execution_plan": config.plan, "points": points}
    run_dir.write("results", result)
    _plot_density(run_dir, config, points)
  return result


def _density_point(config, name, loaded, base, sigmas, rewards, accuracy, max_reward) -> dict:
  point = {"model": name, "params": loaded.config.num_params,
           "weights_source": loaded.source.describe(),
           "base_reward": base["reward"][0], "base_accuracy": base["accuracy"][0],
           "reward_quantiles": np.quantile(rewards, [0, 0.25, 0.5, 0.75, 1]).tolist(),
           "member_accuracy_mean": float(accuracy.mean())}
  for score, values, ceiling in (("reward", rewards, max_reward), ("accuracy", accuracy, 1.0)):
    point[f"density_{score}"] = metrics.solution_density(values, point[f"base_{score}"],
                                                         config.margins, sigmas=sigmas)
    point[f"density_{score}_all_sigmas"] = metrics.solution_density(
        values, point[f"base_{score}"], config.margins)
    point[f"versus_base_{score}"] = metrics.versus_base(values, point[f"base_{score}"],
                                                         ceiling=ceiling)
  logging.info("%s: base reward %.3f accuracy %.3f; members above base %.2f, tied %.2f%s", name,
               point["base_reward"], point["base_accuracy"],
               point["versus_base_reward"]["above"]["fraction"],
               point["versus_base_reward"]["tied"]["fraction"],
               _at_bound_note(point["versus_base_reward"]["base_at"]))
  return point


def _at_bound_note(base_at: Optional[str]) -> str:
  return "" if base_at is None else f" (the base is at the {base_at}: δ(0) counts ties)"


def _plot_scores(run_dir: RunDir, config: DensityConfig, point: dict, sigmas, rewards) -> None:
  plotting.score_histogram(
      run_dir.figure(f"scores_{point['model']}"),
      {f"σ={s:g}": rewards[sigmas == s] for s in sorted(set(sigmas.tolist()))},
      point["base_reward"], f"mean reward on {config.train_size} {config.task} examples",
      f"{point['model']}: perturbations vs base{_at_bound_note(point['versus_base_reward']['base_at'])}")


def _plot_density(run_dir: RunDir, config: DensityConfig, points: list[dict]) -> None:
  """Against parameters, over all of a model's members: δ(0) (at least the base: above or
  tied), the fraction strictly above, and δ at the largest margin; per-sigma values are in
  results.json."""
  ordered = sorted(points, key=lambda p: p["params"])
  at = lambda p, m: next(r for r in p["density_reward_all_sigmas"] if r["margin"] == m)
  rows = {"δ(m=0): at least the base": [at(p, 0.0) for p in ordered] if 0.0 in config.margins
          else None,
          "strictly above the base": [
              {"density": p["versus_base_reward"]["above"]["fraction"],
               **{k: p["versus_base_reward"]["above"][k] for k in ("ci_low", "ci_high")}}
              for p in ordered],
          f"δ(m={max(config.margins):g})": [at(p, max(config.margins)) for p in ordered]}
  curves = {label: tuple(np.asarray([r[k] for r in values]) for k in ("density", "ci_low", "ci_high"))
            for label, values in rows.items() if values is not None}
  notes = [f"{p['model']}: base at the {p['versus_base_reward']['base_at']}" for p in ordered
           if p["versus_base_reward"]["base_at"]]
  plotting.curves_vs_scale(
      run_dir.figure("density_vs_size"), [p["params"] for p in ordered], curves, "parameters",
      "fraction of perturbations (95% Wilson)",
      f"{config.task}: N={config.N} per model, σ ∈ {{{', '.join(f'{s:g}' for s in config.sigmas)}}}",
      note="; ".join(notes))
