r"""Solution density and spectral discordance against MLP width (toy Figure 3).

  python -m experiments.scaling1d --workdir /tmp/scaling1d
  python -m experiments.scaling1d --widths 16,64,256 --N 200 --workdir /tmp/scaling1d_small

For each base (default: pretrained on `mixed`, and an untrained xavier init) and each width,
N perturbations are scored on the tasks (default the three `one_*` curves). Writes
`results.json` (δ(m) with Wilson intervals per base × width × task, D with its bound),
`density_vs_width.png`, `discordance_vs_width.png`, and resumable `runs/<base>_w<width>/`.
"""


import numpy as np
from absl import flags, logging

from experiments import common
from thickets_jax import cli, plotting, population, workdir
from thickets_jax.errors import InputError
from thickets_jax.signals import families, model as signal_model, runs, scaling

flags.DEFINE_list("widths", ["16", "32", "64", "128", "256", "512"], "MLP widths.")
flags.DEFINE_list("bases", ["mixed", "xavier"], "Bases: families to pretrain on, or inits.")
flags.DEFINE_list("tasks", ["one_line", "one_sinusoid", "one_squarewave"], "Task families.")
flags.DEFINE_integer("N", 500, "Perturbations per base and width.")
flags.DEFINE_float("sigma_pretrained", runs.PRETRAINED_SIGMA, "Sigma for pretrained bases.")
flags.DEFINE_float("sigma_untrained", runs.UNTRAINED_SIGMA, "Sigma for untrained bases.")
flags.DEFINE_list("margins", ["0", "0.1", "0.5"], "Relative MSE reductions m for δ(m).")
flags.DEFINE_float("plot_margin", 0.1, "The margin drawn in density_vs_width.png.")
flags.DEFINE_integer("depth", 5, "MLP depth.")
flags.DEFINE_integer("ctx", 10, "Context window.")
flags.DEFINE_integer("fut", 60, "Rollout steps.")
flags.DEFINE_integer("seed", 0, "Root seed.")
flags.DEFINE_integer("pretrain_steps", 1000, "Adam steps of pretraining.")
flags.DEFINE_integer("samples", 256, "Samples per task (one_* tasks collapse to one).")
flags.DEFINE_integer("chunk_size", 4, "Members per vmapped call (rounded up to a multiple of the devices).")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS


def _validate(widths, margins):
  for base in FLAGS.bases:
    if base not in signal_model.INITS and base not in families.FAMILIES:
      raise InputError(f"unknown base {base!r}; give an init ({', '.join(signal_model.INITS.names())}) "
                       f"or a family ({', '.join(families.FAMILIES.names())}).")
  for task in FLAGS.tasks:
    families.FAMILIES.get(task)
  if len(FLAGS.tasks) < 2:
    raise InputError("--tasks needs at least two tasks for spectral discordance.")
  for w in widths:
    signal_model.validate_shape(w, FLAGS.depth, FLAGS.ctx, FLAGS.fut)
  if FLAGS.N < 2:
    raise InputError(f"--N must be at least 2, got {FLAGS.N}.")
  for name in ("pretrain_steps", "samples"):
    if FLAGS[name].value <= 0:
      raise InputError(f"--{name} must be positive, got {FLAGS[name].value}.")
  if not margins or not all(np.isfinite(margins)):
    raise InputError(f"--margins must be finite numbers, got {','.join(FLAGS.margins)!r}.")
  population.validate_sigmas([FLAGS.sigma_pretrained, FLAGS.sigma_untrained])
  if FLAGS.chunk_size <= 0:
    raise InputError(f"--chunk_size must be positive, got {FLAGS.chunk_size}.")
  if FLAGS.plot_margin not in margins:
    raise InputError(f"--plot_margin {FLAGS.plot_margin} is not one of --margins.")


def main(argv):
  del argv
  common.setup_devices()
  widths = sorted(cli.ints(FLAGS.widths, "widths"))
  margins = cli.floats(FLAGS.margins, "margins")
  _validate(widths, margins)
  root = workdir.RunDir.prepare(FLAGS.workdir)
  root.claim({"experiment": "scaling1d"})  # never another experiment's workdir
  with root.session("scaling1d", common.key_flag_values()):
    points = _sweep(widths, margins, root)
    root.write("results", {"experiment": "scaling1d", "margins": margins, "points": points})
    _plot(root, points)
  print(_table(points))


def _sweep(widths, margins, root):
  mesh, chunk_size = common.population_mesh(FLAGS.chunk_size)
  points = []
  for base in FLAGS.bases:
    sigma = FLAGS.sigma_untrained if base in signal_model.INITS else FLAGS.sigma_pretrained
    for width in widths:
      point = scaling.sweep_point(
          base, width, FLAGS.tasks, root.child(f"{base}_w{width}"), root.bases, n=FLAGS.N, sigma=sigma, margins=margins,
          depth=FLAGS.depth, ctx=FLAGS.ctx, fut=FLAGS.fut, seed=FLAGS.seed,
          pretrain_steps=FLAGS.pretrain_steps, samples=FLAGS.samples,
          chunk_size=chunk_size, mesh=mesh)
      points.append(point)
      logging.info("%s w=%d (%d params): δ(m=%g) %s; D=%s", base, width, point["n_params"],
                   FLAGS.plot_margin, {t: _at(point, t, FLAGS.plot_margin)["density"]
                                       for t in FLAGS.tasks},
                   point["discordance"]["discordance"])
  return points


def _at(point, task, margin):
  return next(row for row in point["density"][task] if row["margin"] == margin)


def _plot(root, points):
  density_curves, discordance_curves = {}, {}
  for base in FLAGS.bases:
    mine = [p for p in points if p["base"] == base]
    for task in FLAGS.tasks:
      rows = [_at(p, task, FLAGS.plot_margin) for p in mine]
      density_curves[f"{base} → {task}"] = tuple(
          np.asarray([r[k] for r in rows]) for k in ("density", "ci_low", "ci_high"))
    d = np.asarray([np.nan if p["discordance"]["discordance"] is None
                    else p["discordance"]["discordance"] for p in mine])
    discordance_curves[base] = (d, d, d)
  sizes = sorted({p["n_params"] for p in points})
  plotting.curves_vs_scale(root.figure("density_vs_width"), sizes, density_curves,
                           "parameters", f"δ(m={FLAGS.plot_margin:g}) (relative MSE reduction)",
                           f"solution density vs size, N={FLAGS.N}")
  plotting.curves_vs_scale(root.figure("discordance_vs_width"), sizes,
                           discordance_curves, "parameters", "spectral discordance D",
                           f"D across {len(FLAGS.tasks)} tasks",
                           hline=(len(FLAGS.tasks) / (len(FLAGS.tasks) - 1), "bound M/(M−1)"))


def _table(points):
  lines = [f"{'base':10s} {'width':>6s} {'params':>9s} " + " ".join(
      f"{'δ ' + t:>18s}" for t in FLAGS.tasks) + f" {'D':>6s}"]
  for p in points:
    d = p["discordance"]["discordance"]
    lines.append(f"{p['base']:10s} {p['width']:6d} {p['n_params']:9d} " + " ".join(
        f"{_at(p, t, FLAGS.plot_margin)['density']:18.3f}" for t in FLAGS.tasks)
        + f" {'n/a' if d is None else format(d, '.3f'):>6s}")
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(main)
