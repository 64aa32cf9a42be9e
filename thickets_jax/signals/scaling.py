"""Density and discordance against model width: a toy version of the paper's Figure 3.

For one base (untrained init or pretrained) at one width, N perturbations are each scored on
M tasks (rollout MSE per task). From the [N, M] matrix: solution density δ(m) per task
(relative MSE reduction m) and the spectral discordance D across tasks.
"""

from typing import Optional

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from thickets_jax import metrics, population, randopt, rng, workdir
from thickets_jax.signals import families, model as signal_model, runs


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
