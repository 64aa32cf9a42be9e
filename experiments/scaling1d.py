r"""Solution density and spectral discordance against MLP width (toy Figure 3).

  python -m experiments.scaling1d --workdir /tmp/scaling1d
  python -m experiments.scaling1d --widths 16,64,256 --N 200 --workdir /tmp/scaling1d_small

For each base (default: pretrained on `mixed`, and an untrained xavier init) and each width,
N perturbations are scored on the tasks (default the three `one_*` curves). Writes
`results.json` (δ(m) with Wilson intervals per base × width × task, D with its bound),
`density_vs_width.png`, `discordance_vs_width.png`, and resumable `runs/<base>_w<width>/`.
The flags are the settings of `thickets_jax.signals.scaling.ScalingConfig`.
"""

from absl import flags

from experiments import common
from thickets_jax import cli, configs, population
from thickets_jax.signals import scaling

configs.define_flags(scaling.ScalingConfig)
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_devices()
  config = configs.from_flags(scaling.ScalingConfig)
  mesh, chunk_size = population.chunk_mesh(config.chunk_size)
  result = scaling.run_scaling(config, FLAGS.workdir, mesh=mesh, chunk_size=chunk_size,
                               flag_values=common.key_flag_values())
  print(scaling.table(config, result))


if __name__ == "__main__":
  cli.run(main)
