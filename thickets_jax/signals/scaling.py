r"""Density and discordance against model width: a toy version of the paper's Figure 3.

For one base (untrained init or pretrained) at one width, N perturbations are each scored on
M tasks (rollout MSE per task). From the [N, M] matrix: solution density δ(m) per task
(relative MSE reduction m) and the spectral discordance D across tasks. `run_scaling` sweeps
bases × widths:

  from thickets_jax.signals import scaling
  result = scaling.run_scaling(scaling.ScalingConfig(widths=(16, 64)), "/tmp/scaling1d")
"""

import dataclasses
import math
from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from thickets_jax import configs, metrics, plotting, population, randopt, rng, workdir
from thickets_jax.errors import InputError
from thickets_jax.signals import families, model as signal_model, runs


@dataclasses.dataclass(frozen=True)
class ScalingConfig(configs.Config):
  """The sweep: every base at every width, N members each scored on every task."""
  widths: tuple[int, ...] = configs.setting((16, 32, 64, 128, 256, 512), "MLP widths.")
  bases: tuple[str, ...] = configs.setting(
      ("mixed", "xavier"), "Bases: families to pretrain on, or inits.")
  tasks: tuple[str, ...] = configs.setting(
      ("one_line", "one_sinusoid", "one_squarewave"), "Task families (at least two).")
  N: int = configs.setting(500, "Perturbations per base and width.")
  sigma_pretrained: float = configs.setting(runs.PRETRAINED_SIGMA, "Sigma for pretrained bases.")
  sigma_untrained: float = configs.setting(runs.UNTRAINED_SIGMA, "Sigma for untrained bases.")
  margins: tuple[float, ...] = configs.setting(
      (0.0, 0.1, 0.5), "Relative MSE reductions m for δ(m).")
  plot_margin: float = configs.setting(0.1, "The margin drawn in density_vs_width.png.")
  depth: int = configs.setting(5, "MLP depth.")
  ctx: int = configs.setting(10, "Context window.")
  fut: int = configs.setting(60, "Rollout steps.")
  seed: int = configs.setting(0, "Root seed.")
  pretrain_steps: int = configs.setting(1000, "Adam steps of pretraining.")
  samples: int = configs.setting(256, "Samples per task (one_* tasks collapse to one).")
  chunk_size: int = configs.setting(
      4, "Members per vmapped call (rounded up to a multiple of the devices).")

  def validate(self) -> None:
    for base in self.bases:
      if base not in signal_model.INITS and base not in families.FAMILIES:
        raise InputError(f"unknown base {base!r}; give an init "
                         f"({', '.join(signal_model.INITS.names())}) or a family "
                         f"({', '.join(families.FAMILIES.names())}).")
    for task in self.tasks:
      families.FAMILIES.get(task)
    if len(self.tasks) < 2:
      raise InputError("--tasks needs at least two tasks for spectral discordance.")
    if not self.widths:
      raise InputError("--widths needs at least one width.")
    for width in self.widths:
      signal_model.validate_shape(width, self.depth, self.ctx, self.fut)
    if self.N < 2:
      raise InputError(f"--N must be at least 2, got {self.N}.")
    for name in ("pretrain_steps", "samples", "chunk_size"):
      if getattr(self, name) <= 0:
        raise InputError(f"--{name} must be positive, got {getattr(self, name)}.")
    if not self.margins or not all(math.isfinite(m) for m in self.margins):
      raise InputError(f"--margins must be finite numbers, got "
                       f"{','.join(map(str, self.margins))!r}.")
    population.validate_sigmas([self.sigma_pretrained, self.sigma_untrained])
    if self.plot_margin not in self.margins:
      raise InputError(f"--plot_margin {self.plot_margin} is not one of --margins.")

  def sigma(self, base: str) -> float:
    return self.sigma_untrained if base in signal_model.INITS else self.sigma_pretrained


def task_sets(tasks, key, samples: int, ctx: int, fut: int):
  """Per task, its distinct (context, future, counts) samples."""
  sets = []
  for i, task in enumerate(tasks):
    context, future = families.sample(task, jax.random.fold_in(key, i), samples, ctx, fut)
    sets.append(signal_model.unique_samples(np.asarray(context), np.asarray(future)))
  return sets


def sweep_point(base: str, width: int, tasks, run_dir: workdir.RunDir, bases_dir: str, *, n: int,
                sigma: float, margins, depth: int, ctx: int, fut: int, seed: int,
                pretrain_steps: int, samples: int, chunk_size: int,
                mesh: Optional[Mesh] = None) -> dict:
  """Scores N perturbations of one base at one width on every task (resumable)."""
  run_dir.claim({"base": base, "width": width, "tasks": list(tasks), "n": n,
                          "sigma": sigma, "depth": depth, "ctx": ctx, "fut": fut, "seed": seed,
                          "pretrain_steps": pretrain_steps, "samples": samples})
  model, params, pretrain_loss = runs.build_base(
      base, bases_dir, width=width, depth=depth, ctx=ctx, seed=seed,
      pretrain_steps=pretrain_steps)
  data_key = rng.key(seed, "data")
  sets = task_sets(tasks, data_key, samples, ctx, fut)

  def task_mse(p):  # -> [M]
    return jnp.stack([signal_model.weighted_mse(signal_model.rollout(model, p, c, fut), f, w)
                      for c, f, w in sets])

  seeds, sigmas = population.draw_candidates(seed, n, [sigma])
  fn = population.population_fn(lambda p: {"mse": task_mse(p)})
  records = randopt.score_candidates(
      lambda s, g: population.iter_population(fn, params, s, g, chunk_size=chunk_size, mesh=mesh),
      seeds, sigmas, run_dir.store())
  mse = np.asarray([r["mse"] for r in records])  # [N, M]
  base_mse = np.asarray(jax.jit(task_mse)(params))  # [M]
  return {
      "base": base, "width": width, "n_params": signal_model.count_params(params),
      "sigma": sigma, "pretrain_final_loss": pretrain_loss,
      "base_mse": dict(zip(tasks, base_mse.tolist())),
      "density": {task: metrics.solution_density(-mse[:, j], -base_mse[j], margins, relative=True)
                  for j, task in enumerate(tasks)},
      "discordance": metrics.spectral_discordance(-mse),
  }


def run_scaling(config: ScalingConfig, workdir_path: str, *, mesh: Optional[Mesh] = None,
                chunk_size: Optional[int] = None, flag_values: Optional[dict] = None) -> dict:
  """Every base × width point (`sweep_point`, each resumable) -> `results.json`,
  `density_vs_width.png`, `discordance_vs_width.png`.

  Args:
    mesh, chunk_size: a `population` mesh and the chunk rounded up to fit it (default: one
      device, `config.chunk_size`). flag_values: what `config.json` records of this session.
  """
  root = workdir.RunDir.prepare(workdir_path)
  root.claim({"experiment": "scaling1d"})  # never another experiment's workdir
  with root.session("scaling1d", flag_values or dataclasses.asdict(config)):
    points = []
    for base in config.bases:
      for width in sorted(config.widths):
        point = sweep_point(
            base, width, config.tasks, root.child(f"{base}_w{width}"), root.bases, n=config.N,
            sigma=config.sigma(base), margins=list(config.margins), depth=config.depth,
            ctx=config.ctx, fut=config.fut, seed=config.seed,
            pretrain_steps=config.pretrain_steps, samples=config.samples,
            chunk_size=chunk_size or config.chunk_size, mesh=mesh)
        points.append(point)
        logging.info("%s w=%d (%d params): δ(m=%g) %s; D=%s", base, width, point["n_params"],
                     config.plot_margin, {t: _at(point, t, config.plot_margin)["density"]
                                          for t in config.tasks},
                     point["discordance"]["discordance"])
    result = {"experiment": "scaling1d", "margins": list(config.margins), "points": points}
    root.write("results", result)
    _plot(root, config, points)
  return result


def _at(point: dict, task: str, margin: float) -> dict:
  return next(row for row in point["density"][task] if row["margin"] == margin)


def _plot(root: workdir.RunDir, config: ScalingConfig, points: list[dict]) -> None:
  density_curves, discordance_curves = {}, {}
  for base in config.bases:
    mine = [p for p in points if p["base"] == base]
    for task in config.tasks:
      rows = [_at(p, task, config.plot_margin) for p in mine]
      density_curves[f"{base} → {task}"] = tuple(
          np.asarray([r[k] for r in rows]) for k in ("density", "ci_low", "ci_high"))
    d = np.asarray([np.nan if p["discordance"]["discordance"] is None
                    else p["discordance"]["discordance"] for p in mine])
    discordance_curves[base] = (d, d, d)
  sizes = sorted({p["n_params"] for p in points})
  plotting.curves_vs_scale(root.figure("density_vs_width"), sizes, density_curves,
                           "parameters", f"δ(m={config.plot_margin:g}) (relative MSE reduction)",
                           f"solution density vs size, N={config.N}")
  plotting.curves_vs_scale(root.figure("discordance_vs_width"), sizes,
                           discordance_curves, "parameters", "spectral discordance D",
                           f"D across {len(config.tasks)} tasks",
                           hline=(len(config.tasks) / (len(config.tasks) - 1), "bound M/(M−1)"))


def table(config: ScalingConfig, result: dict) -> str:
  """δ at `plot_margin` per task and D, per base and width."""
  lines = [f"{'base':10s} {'width':>6s} {'params':>9s} " + " ".join(
      f"{'δ ' + t:>18s}" for t in config.tasks) + f" {'D':>6s}"]
  for p in result["points"]:
    d = p["discordance"]["discordance"]
    lines.append(f"{p['base']:10s} {p['width']:6d} {p['n_params']:9d} " + " ".join(
        f"{_at(p, t, config.plot_margin)['density']:18.3f}" for t in config.tasks)
        + f" {'n/a' if d is None else format(d, '.3f'):>6s}")
  return "\n".join(lines)
