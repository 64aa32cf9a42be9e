r"""The landscape around a base (the paper's Figure 2, as a grid): scores on the plane
θ + a·d₁ + b·d₂, with the RandOpt top-K projected onto it.

  python -m experiments.landscape --workdir /tmp/landscape1d                 # 1D, ~2 min
  python -m experiments.landscape --domain signals --directions random --workdir /tmp/l1d_rand
  python -m experiments.landscape --domain llm --run_dir /tmp/ro --points 5 --workdir /tmp/l_llm

`--domain signals` (`thickets_jax.signals.landscape`): a pretrained (`mixed`) and an untrained
(`xavier`) MLP, post-train MSE on `one_line`, over `--seeds`; the table gives the fraction of the
plane (and of N members) that beats the base and that halves its MSE. `--domain llm`
(`thickets_jax.llm.landscape`): the train reward of a finished `experiments.randopt` run's model
on a coarse grid, one model per point, resumable per point. Directions: the top two members
(`members`: they sit at (1, 0) and (0, 1)) or two filter-normalised random ones (`random`).
Writes `results.json`, `landscape.png` and `log.txt` under `--workdir`.
"""

from absl import flags

from thickets_jax import cli, landscape
from thickets_jax.errors import InputError
from thickets_jax.llm import landscape as llm_landscape
from thickets_jax.signals import landscape as signals_landscape

flags.DEFINE_enum("domain", "signals", ["signals", "llm"], "1D MLPs or a language model.")
flags.DEFINE_enum("directions", "members", landscape.DIRECTIONS,
                  "The plane: the top two members, or two filter-normalised random directions.")
flags.DEFINE_float("extent", None, "The grid spans [-extent, extent]^2 (default: 2 for members; "
                   "1 (signals) or 0.05 (llm) for random).")
flags.DEFINE_integer("points", None, "Grid points per axis, odd (default 21 signals, 5 llm).")
flags.DEFINE_string("seeds", "0-2", "signals: root seeds.")
flags.DEFINE_integer("N", None, "signals: members sampled per base (default 256).")
flags.DEFINE_string("run_dir", None, "llm: a finished randopt run.")
flags.DEFINE_integer("train_size", None, "llm: examples per grid point (default: the run's).")
flags.DEFINE_integer("batch_size", 32, "llm: prompts per generation batch.")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise InputError("--workdir is required.")
  chosen = {k: FLAGS[k].value for k in ("extent", "points") if FLAGS[k].value is not None}
  if FLAGS.domain == "signals":
    if FLAGS.run_dir or FLAGS.train_size:
      raise InputError("--run_dir and --train_size are for --domain llm.")
    if FLAGS.N is not None:
      chosen["n"] = FLAGS.N
    spec = signals_landscape.LandscapeSpec(directions=FLAGS.directions, **chosen)
    result = signals_landscape.run_landscape(spec, cli.int_ranges(FLAGS.seeds, "seeds"),
                                             FLAGS.workdir)
    print(signals_landscape.table(result))
    return
  if not FLAGS.run_dir:
    raise InputError("--domain llm needs --run_dir, a finished randopt run.")
  if FLAGS.N is not None or FLAGS["seeds"].present:
    raise InputError("--N and --seeds are for --domain signals; the llm plane uses the run's.")
  result = llm_landscape.run_landscape(llm_landscape.LandscapeConfig(
      run_dir=FLAGS.run_dir, directions=FLAGS.directions, train_size=FLAGS.train_size,
      batch_size=FLAGS.batch_size, **chosen), FLAGS.workdir)
  better = ", ".join(f"{100 * b['fraction']:.0f}% by >{b['margin']:g}×base"
                     for b in result["better"])
  print(f"{result['model']} on {result['task']}: base reward {result['base_reward']:.3f}; "
        f"grid points above the base: {better}; best {result['best']}")


if __name__ == "__main__":
  cli.run(main)
