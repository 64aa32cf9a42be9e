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
The flags are the settings of `thickets_jax.signals.regimes.RegimesConfig` and of
`thickets_jax.signals.runs.RunSpec`.
"""

import dataclasses

from absl import flags

from experiments import common, preset
from thickets_jax import cli, configs, population
from thickets_jax.signals import regimes, runs

configs.define_flags(regimes.RegimesConfig)
configs.define_flags(runs.RunSpec)
flags.adopt_module_key_flags(preset)  # --preset
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS


def main(argv):
  del argv
  common.setup_devices()
  config = preset.config(regimes.RegimesConfig)
  specs = tuple(configs.from_flags(runs.RunSpec, base=spec) for spec in config.specs())
  config = dataclasses.replace(config, run_specs=specs)
  mesh, chunk_size = population.chunk_mesh(config.chunk_size)
  result = regimes.run_regimes(config, FLAGS.workdir, mesh=mesh, chunk_size=chunk_size,
                               flag_values=common.key_flag_values())
  print(regimes.table(result))


if __name__ == "__main__":
  cli.run(main)
