r"""The paper's 1D-signal experiments (Figure 5): RandOpt around untrained and pretrained MLPs.

  python -m experiments.signals1d --regime approximation --workdir /tmp/signals1d
  python -m experiments.signals1d --regime generalization --workdir /tmp/signals1d_gen
  python -m experiments.signals1d --regime custom --pretrain mixed --posttrain sinusoid \
      --N 200 --K 5,10 --workdir /tmp/signals1d_custom

Flags left unset keep each regime's defaults (N=1000, K=5 or 10, sigma 0.05 untrained /
0.002 pretrained, width 128, depth 5, ctx 10, fut 60). Writes `results.json`, `bars.png`,
`log.txt` and per run `runs/<name>/{spec.json,candidates.jsonl,result.json,rollouts.png}`;
rerunning with the same flags and --workdir resumes without re-scoring.
"""

import dataclasses
import os

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
flags.DEFINE_integer("seed", None, "Root seed: base init, data and candidate seeds.")
flags.DEFINE_integer("pretrain_steps", None, "Adam steps of pretraining.")
flags.DEFINE_integer("posttrain_size", None, "Post-train samples.")
flags.DEFINE_integer("test_size", None, "Test samples.")
flags.DEFINE_integer("chunk_size", 4, "Members per vmapped call (rounded up to a multiple of the devices).")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS

_OVERRIDES = {"N": "n", "sigma": "sigma", "width": "width", "depth": "depth", "ctx": "ctx",
              "fut": "fut", "seed": "seed", "pretrain_steps": "pretrain_steps",
              "posttrain_size": "posttrain_size", "test_size": "test_size"}


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
  if FLAGS.chunk_size <= 0:
    raise InputError(f"--chunk_size must be positive, got {FLAGS.chunk_size}.")
  root = workdir.prepare(FLAGS.workdir)
  run_dirs = [os.path.join(root, "runs", spec.name) for spec in specs]
  for spec, run_dir in zip(specs, run_dirs):  # refuse a clash before any run computes
    workdir.claim(run_dir, dataclasses.asdict(spec))
  common.start(root, "signals1d")
  mesh, chunk_size = common.population_mesh(FLAGS.chunk_size)
  results = []
  for i, (spec, run_dir) in enumerate(zip(specs, run_dirs)):
    logging.info("run %d/%d: %s", i + 1, len(specs), spec.name)
    results.append(runs.run(spec, run_dir, os.path.join(root, "bases"), chunk_size=chunk_size,
                            mesh=mesh))
    r = results[-1]
    logging.info("%s: test MSE base %.4g, top-1 %.4g, ensemble %s; density(m=0) %.3f",
                 spec.name, r["test_mse"]["base"]["mean"], r["test_mse"]["top1"]["mean"],
                 {k: round(v["mean"], 6) for k, v in r["ensemble_test_mse"].items()},
                 r["density"][0]["density"])
  workdir.write_json(os.path.join(root, "results.json"),
                     {"experiment": "signals1d", "regime": FLAGS.regime, "runs": results})
  k = {r["name"]: max(r["ensemble_test_mse"], key=int) for r in results}
  plotting.grouped_bars(
      os.path.join(root, "bars.png"), [r["name"] for r in results],
      {"base": _column(results, lambda r: r["test_mse"]["base"]),
       "top-1": _column(results, lambda r: r["test_mse"]["top1"]),
       "ensemble": _column(results, lambda r: r["ensemble_test_mse"][k[r["name"]]])},
      "test MSE", f"1D RandOpt, regime {FLAGS.regime}")
  print(_table(results))


def _table(results: list[dict]) -> str:
  """A plain-text summary of 1D runs: test MSE of base, top-1 and each ensemble."""
  lines = [f"{'run':38s} {'sigma':>7s} {'base':>10s} {'top-1':>10s} {'ensemble':>18s} {'δ(0)':>6s}"]
  for r in results:
    ensembles = " ".join(f"K{k}:{v['mean']:.3g}" for k, v in r["ensemble_test_mse"].items())
    lines.append(f"{r['name']:38s} {r['sigma']:7.3g} {r['test_mse']['base']['mean']:10.4g} "
                 f"{r['test_mse']['top1']['mean']:10.4g} {ensembles:>18s} "
                 f"{r['density'][0]['density']:6.3f}")
  return "\n".join(lines)


def _column(results, pick):
  return ([pick(r)["mean"] for r in results], [pick(r)["se"] for r in results])


if __name__ == "__main__":
  cli.run(main)
