"""Figure 2 for the 1D MLPs: the post-train MSE on a plane around a pretrained and an untrained
base, with each base's RandOpt top-K placed on it, over seeds.

Per seed and base: N members at the base's sigma (`RunSpec.effective_sigma`) are scored on the
post-train set (persisted, as in `runs.run`), the plane is spanned by the two best members'
perturbations or by two filter-normalised random directions (`thickets_jax.landscape`), and
every grid point's train MSE is persisted as it is scored.
"""

import dataclasses

import numpy as np
from absl import logging

from thickets_jax import cli, configs, landscape, plotting, population, randopt, workdir
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec
from thickets_jax.signals import runs

MARGINS = (0.0, 0.5)  # relative: a point "better by 0.5" at least halves the base's MSE


@dataclasses.dataclass(frozen=True)
class LandscapeSpec(landscape.PlaneConfig):
  """The plane around each base (`landscape.PlaneConfig`) over `seeds`.

  Attributes:
    pretrained: the family the pretrained base learns; untrained: the other base's init.
    target: the post-train family. n, k: members sampled, members placed on the plane.
    pretrain_steps: Adam steps of the pretrained base.
  """
  pretrained: str = "mixed"
  untrained: str = "xavier"
  target: str = "one_line"
  n: int = configs.setting(256, "signals: members sampled per base.", flag="N")
  k: int = 5
  pretrain_steps: int = 1000
  seeds: str = configs.setting("0-2", "signals: root seeds, e.g. 0-2 or 0,3,7.")

  def seed_list(self) -> tuple[int, ...]:
    return cli.int_ranges(self.seeds, "seeds")

  def run_spec(self, base: str, seed: int) -> runs.RunSpec:
    return runs.RunSpec(base, self.target, self.target, n=self.n, ks=(self.k,), seed=seed,
                        pretrain_steps=self.pretrain_steps)

  def validate(self) -> None:
    super().validate()
    if self.directions == "members" and self.k < 2:
      raise InputError("--directions members needs K >= 2 (the plane of the top two).")
    if self.n < self.k:
      raise InputError(f"--N must be at least the {self.k} members placed on the plane, got "
                       f"{self.n}.")
    for base in (self.pretrained, self.untrained):
      self.run_spec(base, 0)  # a RunSpec validates itself
    self.seed_list()


def plane_for_seed(spec: LandscapeSpec, base: str, seed: int, run_dir: workdir.RunDir,
                   bases_dir: str) -> dict:
  """One base and seed: base MSE, the grid's MSEs [points, points], the top-K on the plane."""
  run_spec = spec.run_spec(base, seed)
  model, params, _ = runs.build_base(base, bases_dir, width=run_spec.width, depth=run_spec.depth,
                                     ctx=run_spec.ctx, seed=seed,
                                     pretrain_steps=run_spec.pretrain_steps)
  (post_ctx, post_fut, weights), _ = runs.data(run_spec)

  posttrain = (post_ctx, post_fut, weights)
  perturb_spec = PerturbSpec()
  compiled = runs.programs(model, run_spec.fut, perturb_spec)
  seeds, sigmas = population.draw_candidates(seed, spec.n, [run_spec.effective_sigma])
  records = randopt.score_candidates(
      lambda s, g: population.iter_population(compiled.scores, params, s, g, chunk_size=16,
                                              args=posttrain),
      seeds, sigmas, run_dir.store())
  mse = np.asarray([r["mse"] for r in records])
  top = [{"seed": int(seeds[i]), "sigma": float(sigmas[i]), "train_mse": float(mse[i])}
         for i in randopt.top_k(-mse, [spec.k])[spec.k]]
  if spec.directions == "members":
    d1, d2 = (landscape.member_direction(params, m["seed"], m["sigma"], perturb_spec)
              for m in top[:2])
  else:
    d1, d2 = landscape.random_directions(params, seed, perturb_spec)

  def score_points(ab):
    scores = compiled.plane_mse(params, d1, d2, ab[:, 0], ab[:, 1], *posttrain)
    return [{"score": float(s)} for s in np.asarray(scores)]
  coordinates = landscape.grid(spec.grid_extent, spec.points)
  scores = landscape.score_plane(score_points, coordinates,
                                 run_dir.store("plane", key=landscape.point_key), chunk_size=64)
  base_mse = float(compiled.train_mse(params, *posttrain))
  return {"seed": seed, "base": base, "sigma": run_spec.effective_sigma, "base_mse": base_mse,
          "scores": scores.tolist(),
          "members": landscape.describe_members(params, d1, d2, top, perturb_spec),
          "members_better": [{"margin": m, "fraction": float(np.mean(base_mse - mse > m * base_mse))}
                             for m in MARGINS],
          **landscape.summarize(scores, coordinates, base_mse, higher_is_better=False,
                                 margins=MARGINS)}


def run_landscape(spec: LandscapeSpec, workdir_path: str) -> dict:
  """Both bases over `spec.seeds`; writes results.json and landscape.png (the first seed)."""
  seeds = spec.seed_list()
  run_dir = workdir.RunDir.prepare(workdir_path)
  run_dir.claim({**dataclasses.asdict(spec), "seeds": list(seeds), "experiment": "landscape1d"})
  result = {**dataclasses.asdict(spec), "extent": spec.grid_extent, "seeds": list(seeds),
            "coordinates": landscape.grid(spec.grid_extent, spec.points).tolist(), "bases": {}}
  with run_dir.session("landscape", dataclasses.asdict(spec)):
    for label, base in (("pretrained", spec.pretrained), ("untrained", spec.untrained)):
      planes = [plane_for_seed(spec, base, seed, run_dir.child(f"{label}_seed{seed}"),
                               run_dir.bases) for seed in seeds]
      result["bases"][label] = {"base": base, "planes": planes, "across_seeds": _across(planes)}
      logging.info("%s (%s) across seeds: %s", label, base,
                   result["bases"][label]["across_seeds"])
    run_dir.write("results", result)
    _plot(run_dir, spec, result)
  return result


def _across(planes: list[dict]) -> dict:
  """Median, mean ± SE over seeds of each fraction, per margin."""
  out = {}
  for i, margin in enumerate(MARGINS):
    out[f"plane_m={margin:g}"] = runs.spread([p["better"][i]["fraction"] for p in planes])
    out[f"plane_within_1_m={margin:g}"] = runs.spread(
        [p["better"][i]["fraction_within_1"] for p in planes])
    out[f"members_m={margin:g}"] = runs.spread([p["members_better"][i]["fraction"]
                                                for p in planes])
  return out


def _plot(run_dir: workdir.RunDir, spec: LandscapeSpec, result: dict) -> None:
  panels = {}
  for label, entry in result["bases"].items():
    plane = entry["planes"][0]
    gain = landscape.relative_gain(np.asarray(plane["scores"]), plane["base_mse"],
                                   higher_is_better=False)
    panels[f"{label} ({entry['base']}), σ={plane['sigma']:g}, seed {plane['seed']}\n"
           f"{100 * plane['better'][-1]['fraction']:.0f}% of the plane halves the base's "
           "MSE"] = (
               gain, plane["members"])
  axes = (("top-1 member", "top-2 member") if spec.directions == "members"
          else ("d₁ (filter-normalised)", "d₂ (filter-normalised)"))
  plotting.landscapes(run_dir.figure("landscape"), np.asarray(result["coordinates"]), panels,
                      axes, f"post-train MSE on {spec.target} around each base "
                      "(blue: better, red: worse)")


def table(result: dict) -> str:
  """Per base and margin: fraction of the plane, of its unit disc, and of the N members that
  beat the base by the margin (median; mean ± SE over seeds)."""
  cell = lambda s: f"{s['median']:.3f}; {s['mean']:.3f} ± {s['se']:.3f}"
  lines = [f"{'base':<20} {'m':>4}  {'plane':<24} {'plane, radius ≤ 1':<24} {'N members':<24}"]
  for label, entry in result["bases"].items():
    stats = entry["across_seeds"]
    for m in MARGINS:
      lines.append(f"{label + ' (' + entry['base'] + ')':<20} {m:>4g}  "
                   f"{cell(stats[f'plane_m={m:g}']):<24} "
                   f"{cell(stats[f'plane_within_1_m={m:g}']):<24} "
                   f"{cell(stats[f'members_m={m:g}']):<24}")
  return "\n".join(lines)
