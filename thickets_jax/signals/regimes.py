r"""The paper's 1D-signal regimes (Figure 5) over seeds: every run of a regime, repeated per
root seed, reported per seed and as median and mean ± SE across seeds.

  from thickets_jax.signals import regimes
  result = regimes.run_regimes(regimes.RegimesConfig(regime="approximation", seeds="0-2"),
                               "/tmp/signals1d")

One seed misleads: a pretrained base's test MSE varies ~100x between seeds, so a regime's
figures are always reported across `seeds` (base init, pretraining, data and members all change
with the seed).
"""

import dataclasses
from typing import Optional

from absl import logging
from jax.sharding import Mesh

from thickets_jax import cli, configs, plotting, workdir
from thickets_jax.errors import InputError
from thickets_jax.signals import runs

CUSTOM = "custom"


@dataclasses.dataclass(frozen=True)
class RegimesConfig(configs.Config):
  """Which runs (a named regime, or one custom run) and over which seeds. The runs' own
  settings (N, K, sigma, shapes, sizes) are `runs.RunSpec`'s."""
  regime: str = configs.setting(
      "approximation", f"One of {', '.join(runs.REGIMES.names())}, {CUSTOM}.")
  pretrain: Optional[str] = configs.setting(
      None, f"{CUSTOM}: an init (xavier|kaiming|ortho) or a family to pretrain on.")
  posttrain: Optional[str] = configs.setting(
      None, f"{CUSTOM}: the family RandOpt post-trains on.")
  test: Optional[str] = configs.setting(
      None, f"{CUSTOM}: the test family (default: the post-train family).")
  seeds: str = configs.setting(
      "0-4", "Root seeds, e.g. 0-9 or 0,3,7: base init, data and candidate seeds; figures are "
      "reported across them.")
  chunk_size: int = configs.setting(
      4, "Members per vmapped call (rounded up to a multiple of the devices).")
  run_specs: Optional[tuple[runs.RunSpec, ...]] = None  # None: the regime's, at their defaults

  def validate(self) -> None:
    if self.regime != CUSTOM and self.regime not in runs.REGIMES:
      raise InputError(f"unknown --regime {self.regime!r}; known: "
                       f"{', '.join([*runs.REGIMES.names(), CUSTOM])}.")
    if self.regime == CUSTOM and not (self.pretrain and self.posttrain):
      raise InputError(f"--regime {CUSTOM} needs --pretrain and --posttrain.")
    given = [f for f in ("pretrain", "posttrain", "test") if getattr(self, f)]
    if self.regime != CUSTOM and given:
      raise InputError(f"--{given[0]} applies only to --regime {CUSTOM}.")
    self.seed_list()
    if self.chunk_size <= 0:
      raise InputError(f"--chunk_size must be positive, got {self.chunk_size}.")

  def seed_list(self) -> tuple[int, ...]:
    return cli.int_ranges(self.seeds, "seeds")

  def specs(self) -> list[runs.RunSpec]:
    """`run_specs`, else the regime's runs (or the custom run) at their own defaults."""
    if self.run_specs is not None:
      return list(self.run_specs)
    if self.regime == CUSTOM:
      return [runs.RunSpec(self.pretrain, self.posttrain, self.test or self.posttrain)]
    return runs.REGIMES.get(self.regime)()


def run_regimes(config: RegimesConfig, workdir_path: str, *, mesh: Optional[Mesh] = None,
                chunk_size: Optional[int] = None, flag_values: Optional[dict] = None) -> dict:
  """Every run of `config.specs()` × seed (each resumable under `runs/<name>_seed<s>/`) ->
  `results.json`, `bars.png`.

  Args:
    mesh, chunk_size: a `population` mesh and the chunk rounded up to fit it (default: one
      device, `config.chunk_size`). flag_values: what `config.json` records of this session.
  """
  specs = config.specs()
  seeds = config.seed_list()
  root = workdir.RunDir.prepare(workdir_path)
  root.claim({"experiment": "signals1d"})  # never another experiment's workdir
  runs_by_seed = [[(dataclasses.replace(spec, seed=seed), root.child(f"{spec.name}_seed{seed}"))
                   for seed in seeds] for spec in specs]
  for spec, run_dir in (run for per_seed in runs_by_seed for run in per_seed):
    run_dir.claim(dataclasses.asdict(spec))  # refuse a clash before any run computes
  with root.session("signals1d", flag_values or dataclasses.asdict(config)):
    summaries = []
    for i, per_seed in enumerate(runs_by_seed):
      results = []
      for spec, run_dir in per_seed:
        logging.info("run %d/%d, seed %d: %s", i + 1, len(specs), spec.seed, spec.name)
        results.append(runs.run(spec, run_dir, root.bases,
                                chunk_size=chunk_size or config.chunk_size, mesh=mesh))
      summaries.append({"name": specs[i].name, "sigma": results[0]["sigma"], "seeds": list(seeds),
                        "across_seeds": runs.across_seeds(results), "runs": results})
      logging.info("%s over %d seeds: %s", specs[i].name, len(seeds), _line(summaries[-1]))
    result = {"experiment": "signals1d", "regime": config.regime, "seeds": list(seeds),
              "runs": summaries}
    root.write("results", result)
    _plot(root, config.regime, summaries)
  return result


def _largest_k(summary: dict) -> str:
  return max(summary["runs"][0]["ensemble_test_mse"], key=int)


def _line(summary: dict) -> str:
  a, k = summary["across_seeds"], _largest_k(summary)
  return ", ".join(f"{label} {a[key]['median']:.3g} (mean {a[key]['mean']:.3g} ± {a[key]['se']:.2g})"
                   for label, key in (("base", "test_mse/base"), ("top-1", "test_mse/top1"),
                                      (f"ensemble K={k}", f"test_mse/ensemble_K{k}")))


def _plot(root: workdir.RunDir, regime: str, summaries: list[dict]) -> None:
  """Bars of the median test MSE across seeds, error bars the SE of the mean."""
  column = lambda key: ([s["across_seeds"][key(s)]["median"] for s in summaries],
                        [s["across_seeds"][key(s)]["se"] for s in summaries])
  plotting.grouped_bars(
      root.figure("bars"), [s["name"] for s in summaries],
      {"base": column(lambda s: "test_mse/base"), "top-1": column(lambda s: "test_mse/top1"),
       "ensemble": column(lambda s: f"test_mse/ensemble_K{_largest_k(s)}")},
      "test MSE (median over seeds; bars ± SE)",
      f"1D RandOpt, regime {regime}, {len(summaries[0]['seeds'])} seeds")


def table(result: dict) -> str:
  """Median over seeds (mean ± SE) of base, top-1 and largest-K ensemble test MSE, and δ(0)."""
  header = (f"{'run':34s} {'sigma':>6s} {'base':>22s} {'top-1':>22s} {'ensemble':>24s} "
            f"{'δ(0)':>5s}  (median, mean ± SE over seeds)")
  lines = [header]
  cell = lambda f: f"{f['median']:.3g} ({f['mean']:.2g}±{f['se']:.1g})"
  for s in result["runs"]:
    a, k = s["across_seeds"], _largest_k(s)
    lines.append(f"{s['name']:34s} {s['sigma']:6.3g} {cell(a['test_mse/base']):>22s} "
                 f"{cell(a['test_mse/top1']):>22s} {'K' + k + ' ' + cell(a[f'test_mse/ensemble_K{k}']):>24s} "
                 f"{a['density/m=0']['median']:5.2f}")
  return "\n".join(lines)
