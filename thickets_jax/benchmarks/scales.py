"""B10: the perturbation scales (`thickets_jax.scales`) compared by solution density, each at
the σ that moves the whole model as far as the isotropic σ does (`perturb.matched_sigma`), on
the 1D thicket and on an offline language model, over seeds."""

import dataclasses
import os
import tempfile
from typing import Optional

import numpy as np

from thickets_jax import configs, metrics, perturb, plotting, scales, workdir
from thickets_jax.benchmarks.base import Figure, register, seeds
from thickets_jax.errors import InputError
from thickets_jax.llm import density, registry
from thickets_jax.signals import runs as signal_runs


@dataclasses.dataclass(frozen=True)
class B10Config(Figure):
  b10_scales: tuple[str, ...] = configs.setting(scales.SCALES, "B10: the scales compared.")
  b10_seeds: str = configs.setting("0-2", "B10: root seeds (1D and LLM).")
  b10_multipliers: tuple[float, ...] = configs.setting(
      (0.5, 1.0, 2.0), "B10: 1D σ as multiples of the matched σ.")
  b10_llm: str = configs.setting("smollm2-135m-instruct",
                                 "B10: offline model of the LLM part ('' skips it).")
  b10_llm_N: int = configs.setting(16, "B10: LLM members per scale and seed.")
  b10_llm_sigma: float = configs.setting(1e-3, "B10: the isotropic σ the LLM scales match.")
  b10_workdir: Optional[str] = configs.setting(
      None, "B10: keep the runs here (default: a temporary directory).")

  def validate(self) -> None:
    super().validate()
    for scale in self.b10_scales:
      if scale not in scales.SCALES:
        raise InputError(f"unknown --b10_scales {scale!r}; known: {', '.join(scales.SCALES)}.")
    seeds(self.b10_seeds, "b10_seeds")
    if self.b10_llm:
      registry.MODELS.get(self.b10_llm)
    if self.b10_llm_N < 2 or not self.b10_llm_sigma > 0 or min(self.b10_multipliers) <= 0:
      raise InputError("B10 needs --b10_llm_N >= 2 and positive --b10_llm_sigma and "
                       "--b10_multipliers.")


def _mean_se(values) -> str:
  return "{:.3f} ± {:.3f}".format(*metrics.mean_se(values))


def _one_dimensional(config: B10Config, root: str, figure: dict) -> list[str]:
  """mixed -> sinusoid (N = 512, 256 curves) per scale, σ multiple and seed: δ(m) of the train
  MSE relative to the base, and the top-5 ensemble's test MSE. Adds δ(0) per scale against
  the σ multiple to `figure`."""
  spec = dict(pretrain="mixed", posttrain="sinusoid", test="sinusoid", n=512, ks=(5,),
              posttrain_size=256, test_size=256)
  lines = []
  for scale in config.b10_scales:
    curve = []
    for multiplier in config.b10_multipliers:
      rows = []
      for seed in seeds(config.b10_seeds, "b10_seeds"):
        bases = os.path.join(root, "bases")
        probe = signal_runs.RunSpec(**spec, seed=seed)
        _, params, _ = signal_runs.build_base(probe.pretrain, bases, width=probe.width,
                                              depth=probe.depth, ctx=probe.ctx, seed=seed)
        sigma = multiplier * perturb.matched_sigma(params, perturb.PerturbSpec(scale=scale),
                                                   signal_runs.PRETRAINED_SIGMA)
        run = signal_runs.RunSpec(**spec, seed=seed, sigma=sigma, scale=scale)
        name = f"1d_{scale}_x{multiplier:g}_{seed}"
        rows.append((sigma, signal_runs.run(run, workdir.RunDir.prepare(
            os.path.join(root, name)), bases, plot=False)))
      at = lambda r, m: next(d["density"] for d in r["density"] if d["margin"] == m)
      curve.append(metrics.mean_se([at(r, 0.0) for _, r in rows]))
      lines.append(
          f"  1D {scale:<10} x{multiplier:<4g} σ {np.mean([s for s, _ in rows]):.3g}  "
          f"δ(0) {_mean_se([at(r, 0.0) for _, r in rows])}  "
          f"δ(0.5) {_mean_se([at(r, 0.5) for _, r in rows])}  top-5 test MSE "
          f"{_mean_se([r['ensemble_test_mse']['5']['mean'] for _, r in rows])}")
    mean, se = map(np.asarray, zip(*curve))
    figure[scale] = (mean, mean - se, mean + se)
  return lines


def _language_model(config: B10Config, root: str) -> list[str]:
  """`arithmetic` (its base is between 0 and 1) per scale and seed: the fraction of members
  strictly above the base's train reward, and δ(0.05) of the reward."""
  loaded = registry.load(config.b10_llm)
  lines = []
  for scale in config.b10_scales:
    run = density.DensityConfig(models=(config.b10_llm,), task="arithmetic",
                                N=config.b10_llm_N, train_size=32, max_new_tokens=32,
                                batch_size=32, margins=(0.05,), scale=scale)
    sigma = perturb.matched_sigma(loaded.params, run.perturb_spec(), config.b10_llm_sigma)
    points = [density.run_density(dataclasses.replace(run, sigmas=(sigma,), seed=seed),
                                  os.path.join(root, f"llm_{scale}_{seed}"))["points"][0]
              for seed in seeds(config.b10_seeds, "b10_seeds")]
    lines.append(
        f"  {config.b10_llm} {scale:<10} σ {sigma:.3g}  above base "
        f"{_mean_se([p['versus_base_reward']['above']['fraction'] for p in points])}  "
        f"δ(0.05) {_mean_se([p['density_reward_all_sigmas'][0]['density'] for p in points])}  "
        f"member reward median {_mean_se([p['reward_quantiles'][2] for p in points])} (base "
        f"per seed {[round(p['base_reward'], 3) for p in points]})")
  return lines


@register("B10", B10Config, "perturbation scales at matched displacement: solution density")
def b10(config: B10Config) -> str:
  figure = {}
  with tempfile.TemporaryDirectory() as tmp:
    root = config.b10_workdir or tmp
    lines = _one_dimensional(config, root, figure) + (
        _language_model(config, root) if config.b10_llm else [])
  if config.figure:
    plotting.curves_vs_scale(
        config.figure, config.b10_multipliers, figure, "σ / matched σ",
        f"δ(0), mean ± SE over seeds {config.b10_seeds}",
        "1D thicket (mixed → sinusoid, N = 512), scales at matched displacement",
        note="one module group on the MLP: modular = natural")
  return ("B10: perturbation scales at matched displacement, mean ± SE over seeds "
          f"{config.b10_seeds}\n" + "\n".join(lines))
