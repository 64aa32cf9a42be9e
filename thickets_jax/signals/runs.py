"""One 1D RandOpt run (base → post-train → test) and the named regimes of docs/method.md §3.

A run: build the base (an untrained init, or pretrained on a family), score N perturbations by
the MSE of a `fut`-step rollout on the post-train set, keep the K lowest, and report base, top-1
and ensemble (mean of the K rollouts) test MSE, plus the solution density of the perturbations.
"""

import dataclasses
import functools
import os
import time
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from jax.sharding import Mesh

from thickets_jax import (checkpoint, configs, flops, halving, landscape, metrics, plotting,
                          population, randopt, rng, scales, workdir)
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec
from thickets_jax.registry import Registry
from thickets_jax.signals import families, model as signal_model

UNTRAINED_SIGMA, PRETRAINED_SIGMA = 0.05, 0.002
# Relative MSE reductions: δ(m) = P[mse ≤ (1 − m)·base_mse].
DENSITY_MARGINS = (0.0, 0.1, 0.5, 0.9)
N_RANDOM_PLOTTED = 24


@dataclasses.dataclass(frozen=True)
class RunSpec(scales.ScaleSettings):
  """One post-training run. `pretrain` is an init name (untrained) or a family to pretrain on.
  The settings a user may change are flags of `experiments.signals1d` (a regime's runs keep
  their own N and K unless a flag changes them)."""
  pretrain: str
  posttrain: str
  test: str
  n: int = configs.setting(1000, "Perturbations per run (default: the regime's).", flag="N")
  ks: tuple[int, ...] = configs.setting((5,), "Top-K sizes, e.g. 5,10 (default: the regime's).",
                                        flag="K")
  sigma: Optional[float] = configs.setting(
      None, f"Noise scale (default {UNTRAINED_SIGMA} for an untrained base, {PRETRAINED_SIGMA} "
      "for a pretrained one).")
  width: int = configs.setting(128, "MLP width.")
  depth: int = configs.setting(5, "MLP depth (number of linear layers).")
  ctx: int = configs.setting(10, "Context window.")
  fut: int = configs.setting(60, "Rollout steps.")
  seed: int = 0
  init: str = "xavier"  # the init a pretrained base starts from
  pretrain_steps: int = configs.setting(1000, "Adam steps of pretraining.")
  posttrain_size: int = configs.setting(1024, "Post-train samples.")
  test_size: int = configs.setting(256, "Test samples.")
  halving_eta: float = 0.0  # successive halving over the post-train samples (0: full scoring)
  halving_min_examples: int = 4
  noise: str = configs.setting("full", "Noise family: full rank, or rank-r noise on every "
                               "weight matrix.", choices=("full", "lowrank"))
  rank: int = configs.setting(4, "Rank r of --noise lowrank.")

  def perturb_spec(self) -> PerturbSpec:
    return PerturbSpec(noise=self.noise, rank=self.rank, scale=self.scale, masses=self.masses)

  @property
  def untrained(self) -> bool:
    return self.pretrain in signal_model.INITS

  @property
  def effective_sigma(self) -> float:
    if self.sigma is not None:
      return self.sigma
    return UNTRAINED_SIGMA if self.untrained else PRETRAINED_SIGMA

  @property
  def name(self) -> str:
    test = "" if self.test == self.posttrain else f"_test-{self.test}"
    return f"{self.pretrain}_to_{self.posttrain}{test}"

  def validate(self) -> None:
    if not self.untrained and self.pretrain not in families.FAMILIES:
      raise InputError(f"unknown --pretrain {self.pretrain!r}; give an init "
                       f"({', '.join(signal_model.INITS.names())}) or a family "
                       f"({', '.join(families.FAMILIES.names())}).")
    families.FAMILIES.get(self.posttrain)
    families.FAMILIES.get(self.test)
    signal_model.INITS.get(self.init)
    signal_model.validate_shape(self.width, self.depth, self.ctx, self.fut)
    population.validate_sigmas([self.effective_sigma])
    if self.n <= 0:
      raise InputError(f"--N must be positive, got {self.n}.")
    randopt.validate_top_k(self.ks, self.n)
    for name in ("pretrain_steps", "posttrain_size", "test_size"):
      if getattr(self, name) <= 0:
        raise InputError(f"--{name} must be positive, got {getattr(self, name)}.")
    self.perturb_spec()
    if self.halving_eta:
      halving.validate(self.halving_eta, self.halving_min_examples, self.posttrain_size,
                       max(self.ks), self.n)


REGIMES = Registry("regime")


@REGIMES.register("approximation")
def approximation() -> list[RunSpec]:
  """Needle (xavier init), thicket (pretrained mixed), ceiling (pretrained line) → one_line."""
  return [RunSpec(base, "one_line", "one_line", n=1000, ks=(5,))
          for base in ("xavier", "mixed", "line")]


@REGIMES.register("generalization")
def generalization() -> list[RunSpec]:
  pairs = [(base, target) for base in ("xavier", "kaiming", "ortho", "mixed", "line")
           for target in ("one_line", "one_squarewave", "one_sinusoid")]
  pairs += [("mixed", "line"), ("mixed", "sinusoid"), ("mixed", "squarewave"),
            ("sinusoid", "squarewave"), ("squarewave", "squarewave")]
  return [RunSpec(base, target, target, n=1000, ks=(10,)) for base, target in pairs]


def build_base(pretrain: str, bases_dir: str, *, width: int, depth: int, ctx: int, seed: int,
               init: str = "xavier", pretrain_steps: int = 1000):
  """A base MLP: the init `pretrain` names, or `init` pretrained on the family `pretrain`.

  Pretrained bases are checkpointed under `bases_dir` and restored on reuse or resume.

  Returns:
    (model, params, final pretraining loss or None for an untrained base).
  """
  untrained = pretrain in signal_model.INITS
  model = signal_model.SignalMLP(width, depth, pretrain if untrained else init)
  params = signal_model.init_params(model, rng.key(seed, "init"), ctx)
  if untrained:
    return model, params, None
  name = f"{pretrain}_from-{init}_w{width}_d{depth}_c{ctx}_s{seed}_{pretrain_steps}steps"
  os.makedirs(bases_dir, exist_ok=True)
  loss_path = os.path.join(bases_dir, f"{name}.json")

  def build():
    trained, loss = signal_model.pretrain(model, params, pretrain, rng.key(seed, "pretrain"),
                                          ctx=ctx, steps=pretrain_steps)
    final = float(jnp.mean(loss[-50:]))
    workdir.write_json(loss_path, {"final_loss": final})
    logging.info("pretrained %s: final loss %.4g", name, final)
    return trained

  params = checkpoint.cached(os.path.join(bases_dir, name), params, build)
  return model, params, workdir.read_json(loss_path)["final_loss"]


def data(spec: RunSpec):
  """((post-train context, future, weights of the distinct rows), (test context, future))."""
  posttrain_key, test_key = jax.random.split(rng.key(spec.seed, "data"))
  post_ctx, post_fut = families.sample(spec.posttrain, posttrain_key, spec.posttrain_size,
                                       spec.ctx, spec.fut)
  test_ctx, test_fut = families.sample(spec.test, test_key, spec.test_size, spec.ctx, spec.fut)
  return signal_model.unique_samples(np.asarray(post_ctx), np.asarray(post_fut)), (
      np.asarray(test_ctx), np.asarray(test_fut))


def _mean_se(errors: np.ndarray) -> dict:
  mean, se = metrics.mean_se(errors)
  return {"mean": mean, "se": se}


def run(spec: RunSpec, run_dir: workdir.RunDir, bases_dir: str, *, chunk_size: int = 8,
        mesh: Optional[Mesh] = None, plot: bool = True) -> dict:
  """Runs (or resumes) one post-training run under `run_dir`; returns its result record.

  `chunk_size` members go through one vmapped call, sharded over `mesh` if one is given;
  neither changes any member, so a run may resume with other values.
  """
  start = time.perf_counter()
  run_dir.claim(dataclasses.asdict(spec))
  model, params, pretrain_loss = build_base(
      spec.pretrain, bases_dir, width=spec.width, depth=spec.depth, ctx=spec.ctx, seed=spec.seed,
      init=spec.init, pretrain_steps=spec.pretrain_steps)
  (post_ctx, post_fut, weights), (test_ctx, test_fut) = data(spec)
  logging.info("%s: %d post-train samples (%d distinct), %d test samples, %d parameters",
               spec.name, spec.posttrain_size, len(weights), spec.test_size,
               signal_model.count_params(params))

  compiled = programs(model, spec.fut, spec.perturb_spec())
  posttrain = (post_ctx, post_fut, weights)
  seeds, sigmas = population.draw_candidates(spec.seed, spec.n, [spec.effective_sigma])
  k_max = max(spec.ks)
  if spec.halving_eta:
    mse, best, selection = _halving(spec, compiled, params, seeds, sigmas, posttrain, run_dir,
                                    chunk_size, mesh)
  else:
    records = randopt.score_candidates(
        lambda s, g: population.iter_population(compiled.scores, params, s, g,
                                                chunk_size=chunk_size, mesh=mesh,
                                                args=posttrain),
        seeds, sigmas, run_dir.store())
    mse = np.asarray([r["mse"] for r in records])
    best = randopt.top_k(-mse, spec.ks)
    selection = {"rows_scored": spec.n * len(weights)}
  selection["flops"] = flops.mlp_flops(signal_model.count_params(params),
                                       selection["rows_scored"] * spec.fut)
  base_train_mse = float(compiled.train_mse(params, *posttrain))

  top_pred = population.evaluate_population(compiled.test_rollouts, params, seeds[best[k_max]],
                                            sigmas[best[k_max]], chunk_size=chunk_size,
                                            mesh=mesh, args=(test_ctx,))
  base_pred = np.asarray(compiled.rollout(params, test_ctx))

  def errors(pred):  # [test, fut] -> [test]
    return np.mean((pred - test_fut) ** 2, axis=-1)

  result = {
      "name": spec.name, "spec": dataclasses.asdict(spec), "sigma": spec.effective_sigma,
      "n_params": signal_model.count_params(params), "pretrain_final_loss": pretrain_loss,
      "distinct_posttrain_samples": int(len(weights)),
      "train_mse": {"base": base_train_mse, "top1": float(mse[best[k_max][0]]),
                    "median_perturbation": None if spec.halving_eta else float(np.median(mse))},
      "test_mse": {"base": _mean_se(errors(base_pred)), "top1": _mean_se(errors(top_pred[0]))},
      "ensemble_test_mse": {str(k): _mean_se(errors(randopt.mean_ensemble(top_pred[:k])))
                            for k in spec.ks},
      # Under halving most members are scored on a first slice only: no density.
      "density": None if spec.halving_eta else metrics.solution_density(
          -mse, -base_train_mse, DENSITY_MARGINS, relative=True),
      "selection": selection,
      "top_members": [{"seed": int(seeds[i]), "sigma": float(sigmas[i]), "train_mse": float(mse[i])}
                      for i in best[k_max]],
  }
  if plot:
    shown = min(N_RANDOM_PLOTTED, spec.n)
    random_pred = population.evaluate_population(
        compiled.test_rollouts, params, seeds[:shown], sigmas[:shown], chunk_size=chunk_size,
        mesh=mesh, args=(test_ctx[:1],))[:, 0]
    plotting.rollouts(
        run_dir.figure("rollouts"), np.asarray(families.grid(spec.ctx + spec.fut)),
        test_ctx[0], test_fut[0], base_pred[0], random_pred, top_pred[:, 0],
        randopt.mean_ensemble(top_pred)[0],
        f"{spec.name}: N={spec.n}, K={k_max}, σ={spec.effective_sigma:g}")
  result["time_s"] = time.perf_counter() - start
  run_dir.write("result", result)
  return result


@dataclasses.dataclass(frozen=True)
class Programs:
  """The compiled functions of a run. Data are arguments, not constants, so the runs of every
  seed and regime with the same model, rollout length and noise share one compilation.

  scores: population fn (params, seeds, sigmas, ctx, fut, weights) -> {"mse": [C]}.
  slice_scores: the same -> {"score_sum": [C], "weight": [C]} (halving's rungs).
  test_rollouts: population fn (params, seeds, sigmas, ctx) -> [C, n, fut].
  train_mse: (params, ctx, fut, weights) -> []. rollout: (params, ctx) -> [n, fut].
  plane_mse: (params, d1, d2, a [P], b [P], ctx, fut, weights) -> [P], the train MSE at
    θ + a·d₁ + b·d₂ (`landscape.plane_point`).
  """
  scores: Callable
  slice_scores: Callable
  test_rollouts: Callable
  train_mse: Callable
  rollout: Callable
  plane_mse: Callable


@functools.lru_cache(maxsize=None)
def programs(model: signal_model.SignalMLP, fut: int, spec: PerturbSpec) -> Programs:
  def rollout(p, ctx):
    return signal_model.rollout(model, p, ctx, fut)

  def train_mse(p, ctx, future, weights):
    return signal_model.weighted_mse(rollout(p, ctx), future, weights)

  def slice_score(p, ctx, future, weights):
    total = jnp.sum(weights)
    return {"score_sum": -train_mse(p, ctx, future, weights) * total, "weight": total}

  return Programs(
      scores=population.population_fn(lambda p, *data: {"mse": train_mse(p, *data)}, spec=spec),
      slice_scores=population.population_fn(slice_score, spec=spec),
      test_rollouts=population.population_fn(rollout, spec=spec),
      train_mse=jax.jit(train_mse), rollout=jax.jit(rollout),
      plane_mse=jax.jit(jax.vmap(
          lambda p, d1, d2, a, b, *data: train_mse(landscape.plane_point(p, d1, d2, a, b), *data),
          in_axes=(None, None, None, 0, 0, None, None, None))))


def _halving(spec: RunSpec, compiled: Programs, params, seeds, sigmas, posttrain,
             run_dir: workdir.RunDir, chunk_size: int, mesh: Optional[Mesh]):
  """Successive halving over the distinct post-train rows (`halving`).

  Returns:
    (train MSE [N], NaN where a member was not scored on every row; {K: top-K indices};
     the selection's record: rungs and rows scored).
  """
  context, future, weights = posttrain
  rungs = halving.schedule(spec.n, len(weights), eta=spec.halving_eta,
                           min_examples=min(spec.halving_min_examples, len(weights)),
                           keep=max(spec.ks))

  def score_slice(rung):
    rows = slice(rung.start, rung.stop)
    return lambda s, g: population.iter_population(
        compiled.slice_scores, params, s, g, chunk_size=chunk_size, mesh=mesh,
        args=(context[rows], future[rows], weights[rows]))
  out = halving.search(score_slice, seeds, sigmas, rungs,
                       [run_dir.store(f"rung{r.index}") for r in rungs])
  full = out["seen"] >= weights.sum() - 1e-6
  mse = np.where(full, -out["scores"], np.nan)
  return mse, {k: out["order"][:k] for k in spec.ks}, {"rows_scored": out["evaluations"],
                                                       "rungs": out["rungs"]}


def across_seeds(results: Sequence[dict]) -> dict:
  """Per-seed values, median and mean ± SE across seeds of one run's headline figures.

  A single seed misleads: a pretrained base's test MSE varies ~100x from seed to seed.

  Args:
    results: `run` results of the same RunSpec with different seeds.

  Returns:
    {figure: {per_seed [S], median, mean, se}} for test MSE (base, top-1, ensemble per K),
    train MSE (base, top-1), δ per margin, and ensemble/base test-MSE ratios per K.
  """
  figures = {"test_mse/base": [r["test_mse"]["base"]["mean"] for r in results],
             "test_mse/top1": [r["test_mse"]["top1"]["mean"] for r in results],
             "train_mse/base": [r["train_mse"]["base"] for r in results],
             "train_mse/top1": [r["train_mse"]["top1"] for r in results]}
  for k in results[0]["ensemble_test_mse"]:
    figures[f"test_mse/ensemble_K{k}"] = [r["ensemble_test_mse"][k]["mean"] for r in results]
    figures[f"ensemble_over_base/K{k}"] = [r["ensemble_test_mse"][k]["mean"] /
                                           r["test_mse"]["base"]["mean"] for r in results]
  for i, row in enumerate(results[0]["density"] or ()):
    figures[f"density/m={row['margin']:g}"] = [r["density"][i]["density"] for r in results]
  return {name: spread(values) for name, values in figures.items()}


def spread(values: Sequence[float]) -> dict:
  """Per-seed values, median, mean and SE of one figure."""
  values = np.asarray(values, np.float64)
  return {"per_seed": values.tolist(), "median": float(np.median(values)), **_mean_se(values)}
