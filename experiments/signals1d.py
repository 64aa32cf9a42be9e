r"""The paper's 1D-signal experiments (Figure 5): RandOpt around untrained and pretrained MLPs.

  python -m experiments.signals1d --regime approximation --workdir /tmp/signals1d
  python -m experiments.signals1d --regime generalization --seeds 0-9 --workdir /tmp/signals1d_gen
  python -m experiments.signals1d --noise lowrank --rank 4 --workdir /tmp/signals1d_rank4
  python -m experiments.signals1d --regime custom --pretrain mixed --posttrain sinusoid \
      --N 200 --K 5,10 --workdir /tmp/signals1d_custom

Every run is repeated over `--seeds` (default 0-4: base init and pretraining, data and members
all change with the seed), and each figure is reported per seed and as median and mean ± SE
across seeds: one seed misleads (a pretrained base's test MSE varies ~100x between seeds).
Flags left unset keep each regime's defaults (N=1000, K=5 or 10, sigma 0.05 untrained /
0.002 pretrained, width 128, depth 5, ctx 10, fut 60). Writes `results.json`, `bars.png`,
`log.txt` and per run and seed `runs/<name>_seed<s>/{spec.json,candidates.jsonl,result.json,
rollouts.png}`; rerunning with the same flags and --workdir resumes without re-scoring.
"""

import dataclasses

from absl import flags, logging

from experiments import common
from thickets_jax import cli, plotting, workdir
from thickets_jax.errors import InputError
from thickets_jax.signals import runs

REGIMES = ("approximation", "generalization", "custom")
flags.DEFINE_string("regime", "approximation", f"One of {', '.join(REGIMES)}.")
flags.DEFINE_string("pretrain", None, "custom: an init (xavier|kaiming|ortho) or a family to pretrain on.")
flags.DEFINE_string("posttrain", None, "custom: the family RandOpt post-trains on.")
flags.DEFINE_string("test", None, "custom: the test family (default: the post-train family).")
flags.DEFINE_integer("N", None, "Perturbations per run.")
flags.DEFINE_list("K", None, "Top-K sizes, e.g. 5,10.")
flags.DEFINE_float("sigma", None, "Noise scale (default 0.05 untrained, 0.002 pretrained).")
flags.DEFINE_integer("width", None, "MLP width.")
flags.DEFINE_integer("depth", None, "MLP depth (number of linear layers).")
flags.DEFINE_integer("ctx", None, "Context window.")
flags.DEFINE_integer("fut", None, "Rollout steps.")
flags.DEFINE_string("seeds", "0-4", "Root seeds, e.g. 0-9 or 0,3,7: base init, data and "
                    "candidate seeds; figures are reported across them.")
flags.DEFINE_integer("pretrain_steps", None, "Adam steps of pretraining.")
flags.DEFINE_integer("posttrain_size", None, "Post-train samples.")
flags.DEFINE_integer("test_size", None, "Test samples.")
flags.DEFINE_enum("noise", None, ["full", "lowrank"], "Noise family: full rank (default) or "
                  "rank-r noise on every weight matrix.")
flags.DEFINE_integer("rank", None, "Rank r of --noise lowrank (default 4).")
flags.DEFINE_integer("chunk_size", 4, "Members per vmapped call (rounded up to a multiple of the devices).")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS

_OVERRIDES = {"N": "n", "sigma": "sigma", "width": "width", "depth": "depth", "ctx": "ctx",
              "fut": "fut", "pretrain_steps": "pretrain_steps",
              "posttrain_size": "posttrain_size", "test_size": "test_size", "noise": "noise",
              "rank": "rank"}


def specs_from_flags() -> list[runs.RunSpec]:
  if FLAGS.regime not in REGIMES:
    raise InputError(f"unknown --regime {FLAGS.regime!r}; known: {', '.join(REGIMES)}.")
  if FLAGS.regime == "custom":
    if not FLAGS.pretrain or not FLAGS.posttrain:
      raise InputError("--regime custom needs --pretrain and --posttrain.")
    specs = [runs.RunSpec(FLAGS.pretrain, FLAGS.posttrain, FLAGS.test or FLAGS.posttrain)]
  else:
    given = [f for f in ("pretrain", "posttrain", "test") if getattr(FLAGS, f)]
    if given:
      raise InputError(f"--{given[0]} applies only to --regime custom.")
    specs = runs.REGIMES.get(FLAGS.regime)()
  overrides = {field: FLAGS[flag].value for flag, field in _OVERRIDES.items()
               if FLAGS[flag].value is not None}
  if FLAGS.K is not None:
    overrides["ks"] = cli.ints(FLAGS.K, "K")
  specs = [dataclasses.replace(s, **overrides) for s in specs]
  for spec in specs:
    spec.validate()
  return specs


def main(argv):
  del argv
  common.setup_devices()
  specs = specs_from_flags()
  seeds = cli.int_ranges(FLAGS.seeds, "seeds")
  if FLAGS.chunk_size <= 0:
    raise InputError(f"--chunk_size must be positive, got {FLAGS.chunk_size}.")
  root = workdir.RunDir.prepare(FLAGS.workdir)
  root.claim({"experiment": "signals1d"})  # never another experiment's workdir
  runs_by_seed = [[(dataclasses.replace(spec, seed=seed), root.child(f"{spec.name}_seed{seed}"))
                   for seed in seeds] for spec in specs]
  for spec, run_dir in (run for per_seed in runs_by_seed for run in per_seed):
    run_dir.claim(dataclasses.asdict(spec))  # refuse a clash before any run computes
  with root.session("signals1d", common.key_flag_values()):
    mesh, chunk_size = common.population_mesh(FLAGS.chunk_size)
    summaries = []
    for i, per_seed in enumerate(runs_by_seed):
      results = []
      for spec, run_dir in per_seed:
        logging.info("run %d/%d, seed %d: %s", i + 1, len(specs), spec.seed, spec.name)
        results.append(runs.run(spec, run_dir, root.bases, chunk_size=chunk_size, mesh=mesh))
      summaries.append({"name": specs[i].name, "sigma": results[0]["sigma"], "seeds": seeds,
                        "across_seeds": runs.across_seeds(results), "runs": results})
      logging.info("%s over %d seeds: %s", specs[i].name, len(seeds), _line(summaries[-1]))
    root.write("results", {"experiment": "signals1d", "regime": FLAGS.regime, "seeds": seeds,
                           "runs": summaries})
    _plot(root, summaries)
  print(_table(summaries))


def _largest_k(summary) -> str:
  return max(summary["runs"][0]["ensemble_test_mse"], key=int)


def _line(summary) -> str:
  a, k = summary["across_seeds"], _largest_k(summary)
  return ", ".join(f"{label} {a[key]['median']:.3g} (mean {a[key]['mean']:.3g} ± {a[key]['se']:.2g})"
                   for label, key in (("base", "test_mse/base"), ("top-1", "test_mse/top1"),
                                      (f"ensemble K={k}", f"test_mse/ensemble_K{k}")))


def _plot(root, summaries):
  """Bars of the median test MSE across seeds, error bars the SE of the mean."""
  column = lambda key: ([s["across_seeds"][key(s)]["median"] for s in summaries],
                        [s["across_seeds"][key(s)]["se"] for s in summaries])
  plotting.grouped_bars(
      root.figure("bars"), [s["name"] for s in summaries],
      {"base": column(lambda s: "test_mse/base"), "top-1": column(lambda s: "test_mse/top1"),
       "ensemble": column(lambda s: f"test_mse/ensemble_K{_largest_k(s)}")},
      "test MSE (median over seeds; bars ± SE)",
      f"1D RandOpt, regime {FLAGS.regime}, {len(summaries[0]['seeds'])} seeds")


def _table(summaries: list[dict]) -> str:
  """Median over seeds (mean ± SE) of base, top-1 and largest-K ensemble test MSE, and δ(0)."""
  header = (f"{'run':34s} {'sigma':>6s} {'base':>22s} {'top-1':>22s} {'ensemble':>24s} "
            f"{'δ(0)':>5s}  (median, mean ± SE over seeds)")
  lines = [header]
  cell = lambda f: f"{f['median']:.3g} ({f['mean']:.2g}±{f['se']:.1g})"
  for s in summaries:
    a, k = s["across_seeds"], _largest_k(s)
    lines.append(f"{s['name']:34s} {s['sigma']:6.3g} {cell(a['test_mse/base']):>22s} "
                 f"{cell(a['test_mse/top1']):>22s} {'K' + k + ' ' + cell(a[f'test_mse/ensemble_K{k}']):>24s} "
                 f"{a['density/m=0']['median']:5.2f}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
