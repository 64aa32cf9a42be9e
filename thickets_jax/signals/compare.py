"""RandOpt vs ES vs gradient descent on the 1D signals, against training FLOPs, over seeds.

All three post-train the same pretrained MLP on the same post-train set and are scored by the
test MSE of `fut`-step rollouts. FLOPs: one rollout step of one curve is a forward of the MLP,
2·P (`flops.mlp_flops`); a gradient step back-propagates through the whole rollout, 6·P per
curve and step. RandOpt is evaluated after N/16, N/4 and N members (top-K mean ensemble and
top-1), ES every few iterations, gradient descent (Adam, full batch) at a few step counts.
Across seeds, each point reports its median and mean ± SE.
"""

import dataclasses
from typing import Sequence

import jax
import numpy as np
import optax
from absl import logging

from thickets_jax import configs, flops, metrics, plotting, population, randopt, workdir
from thickets_jax.baselines import es
from thickets_jax.baselines.es import ESConfig
from thickets_jax.errors import InputError
from thickets_jax.signals import model as signal_model
from thickets_jax.signals import runs


@dataclasses.dataclass(frozen=True)
class CompareSpec(configs.Config):
  """The comparison's settings (the data and base as `runs.RunSpec`; methods' budgets)."""
  pretrain: str = "mixed"
  posttrain: str = "sinusoid"
  n: int = 1024
  k: int = 5
  sigma: float = runs.PRETRAINED_SIGMA
  es: ESConfig = ESConfig(population=32, sigma=runs.PRETRAINED_SIGMA, learning_rate=2e-3)
  es_iterations: int = 32
  gd_steps: tuple[int, ...] = (8, 32, 128, 512)
  gd_learning_rate: float = 3e-5  # 1e-3 diverges through the 60-step rollout on some seeds
  posttrain_size: int = 256
  test_size: int = 256

  def run_spec(self, seed: int) -> runs.RunSpec:
    return runs.RunSpec(self.pretrain, self.posttrain, self.posttrain, n=self.n, ks=(self.k,),
                        sigma=self.sigma, seed=seed, posttrain_size=self.posttrain_size,
                        test_size=self.test_size)

  def identity(self) -> dict:
    """What its workdir records: the settings, ES's by their flag names (`configs.flat`)."""
    return {"experiment": "compare_signals", **configs.flat(self)}

  def validate(self) -> None:
    self.run_spec(0)  # a RunSpec validates itself
    if self.n < self.k or self.es_iterations <= 0 or not self.gd_steps or min(self.gd_steps) <= 0:
      raise InputError("the 1D comparison needs K <= N and positive ES iterations and GD steps.")


def _mse_per_curve(prediction, target) -> np.ndarray:
  return np.mean((np.asarray(prediction) - np.asarray(target)) ** 2, axis=-1)


def compare_one_seed(spec: CompareSpec, seed: int, bases_dir: str) -> list[dict]:
  """Points {method, point, train_flops, test_mse} of the three methods for one seed."""
  run_spec = spec.run_spec(seed)
  model, params, _ = runs.build_base(run_spec.pretrain, bases_dir, width=run_spec.width,
                                     depth=run_spec.depth, ctx=run_spec.ctx, seed=seed)
  (post_ctx, post_fut, weights), (test_ctx, test_fut) = runs.data(run_spec)
  num_params, fut = signal_model.count_params(params), run_spec.fut
  distinct_steps = len(weights) * fut  # what is computed: repeated samples are scored once

  def train_mse(p):
    return signal_model.weighted_mse(signal_model.rollout(model, p, post_ctx, fut), post_fut,
                                     weights)

  test_rollout = jax.jit(lambda p: signal_model.rollout(model, p, test_ctx, fut))
  point = lambda method, name, cost, prediction: {
      "method": method, "point": name, "train_flops": cost,
      "test_mse": float(_mse_per_curve(prediction, test_fut).mean())}
  points = [point("base", "base", 0.0, test_rollout(params))]

  # RandOpt: the first n members of one population, top-K by train MSE.
  seeds, sigmas = population.draw_candidates(seed, spec.n, [spec.sigma])
  score_fn = population.population_fn(lambda p: train_mse(p))
  mse = population.evaluate_population(score_fn, params, seeds, sigmas, chunk_size=16)
  test_fn = population.population_fn(lambda p: signal_model.rollout(model, p, test_ctx, fut))
  for count in sorted({max(spec.k, spec.n // 16), max(spec.k, spec.n // 4), spec.n}):
    top = randopt.top_k(-mse[:count], [spec.k])[spec.k]
    predictions = population.evaluate_population(test_fn, params, seeds[top], sigmas[top],
                                                 chunk_size=spec.k)
    cost = flops.mlp_flops(num_params, count * distinct_steps)
    points.append(point("randopt", f"randopt_{count}", cost,
                        randopt.mean_ensemble(predictions)))
    points.append(point("randopt_top1", f"randopt_top1_{count}", cost, predictions[0]))

  # ES from the base, on the same score (−train MSE).
  per_iteration = flops.mlp_flops(num_params, spec.es.population * distinct_steps) + \
      flops.es_update_flops(num_params, spec.es.population)
  checkpoints = {spec.es_iterations // 4, spec.es_iterations // 2, spec.es_iterations}

  def es_score(p, iteration, member_seeds, member_sigmas):
    del iteration
    return -population.evaluate_population(score_fn, p, member_seeds, member_sigmas,
                                           chunk_size=16)

  def es_point(done, p, scores):
    del scores
    if done in checkpoints:
      points.append(point("es", f"es_{done}", done * per_iteration, test_rollout(p)))
  es.train(params, es_score, spec.es, iterations=spec.es_iterations, seed=seed,
           on_iteration=es_point)

  # Gradient descent: Adam on the train MSE, back-propagated through the rollout.
  optimizer = optax.adam(spec.gd_learning_rate)

  @jax.jit
  def gd_step(p, state):
    grads = jax.grad(train_mse)(p)
    updates, state = optimizer.update(grads, state, p)
    return optax.apply_updates(p, updates), state
  p, state, done = params, optimizer.init(params), 0
  for target in sorted(spec.gd_steps):
    while done < target:
      p, state = gd_step(p, state)
      done += 1
    points.append(point("gd", f"gd_{done}", flops.mlp_flops(num_params, done * distinct_steps,
                                                            backward=True), test_rollout(p)))
  logging.info("seed %d: %s", seed, ", ".join(f"{q['point']} {q['test_mse']:.3g}" for q in points))
  return points


def run_compare(spec: CompareSpec, seeds: Sequence[int], workdir_path: str) -> dict:
  """Every seed's points (each stored as it finishes; a rerun resumes), aggregated per point:
  median and mean ± SE of the test MSE across seeds. Writes results.json and
  mse_vs_flops.png."""
  run_dir = workdir.RunDir.prepare(workdir_path)
  run_dir.claim(spec.identity())
  with run_dir.session("compare_signals", {**spec.identity(), "seeds": list(seeds)}):
    store = run_dir.store("seeds", key=lambda r: r["seed"])
    for seed in seeds:
      if seed not in store:
        store.append([{"seed": seed, "points": compare_one_seed(spec, seed, run_dir.bases)}])
    per_seed = [store.records[s]["points"] for s in seeds]
    aggregated = []
    for i, first in enumerate(per_seed[0]):
      values = np.asarray([points[i]["test_mse"] for points in per_seed])
      mean, se = metrics.mean_se(values)
      aggregated.append({k: first[k] for k in ("method", "point", "train_flops")} | {
          "test_mse_per_seed": values.tolist(), "median": float(np.median(values)),
          "mean": mean, "se": se})
    result = {"spec": spec.identity(), "seeds": list(seeds), "points": aggregated}
    run_dir.write("results", result)
    _plot(run_dir, spec, aggregated, len(seeds))
  return result


def _plot(run_dir: workdir.RunDir, spec: CompareSpec, points: list[dict], n_seeds: int) -> None:
  base = next(p for p in points if p["method"] == "base")
  curves = {}
  labels = {"randopt": f"RandOpt, top-{spec.k} mean", "randopt_top1": "RandOpt, top-1",
            "es": "ES", "gd": "gradient descent (Adam)"}
  for method, label in labels.items():
    rows = [p for p in points if p["method"] == method]
    curves[label] = tuple(np.asarray([p[k] for p in rows]) for k in ("train_flops", "mean", "se"))
  plotting.metric_vs_flops(
      run_dir.figure("mse_vs_flops"), curves, {"base": (base["mean"], base["se"])},
      f"test MSE, mean ± SE over {n_seeds} seeds",
      f"1D: {spec.pretrain} base → {spec.posttrain}, K={spec.k}", log_y=True)


def table(result: dict) -> str:
  lines = [f"{'point':<18} {'train FLOPs':>12} {'median':>10} {'mean ± SE':>22}"]
  for p in result["points"]:
    lines.append(f"{p['point']:<18} {p['train_flops']:>12.3g} {p['median']:>10.4g} "
                 f"{p['mean']:>11.4g} ± {p['se']:<9.3g}")
  return "\n".join(lines)
