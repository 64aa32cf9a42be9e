r"""Spectral discordance: do the perturbations that help one task help the others? (Figure 4)

  python -m experiments.discordance --workdir /tmp/discordance       # both offline models
  python -m experiments.discordance --model qwen2.5-1.5b-instruct,qwen2.5-7b-instruct \
      --N 100 --train_size 32 --workdir /runs/discordance

Scores N perturbations on M tasks per model (the default tasks are ones on which the offline
bases score neither 0 nor 1: `discordance.DISCORDANCE_TASKS`), then per model: the [N, M]
percentile-rank matrix, the M×M Pearson correlation of its columns, D = 1 − mean off-diagonal
correlation with its bound M/(M−1), the performance spectra and a 2-D PCA with k-means
clusters; across models, D against parameters (`discordance_vs_size.png`). The run itself is
`thickets_jax.llm.discordance.run_discordance`.
"""

from absl import flags

from experiments import llm_common
from thickets_jax import cli, configs
from thickets_jax.llm import discordance

flags.adopt_module_key_flags(llm_common)
configs.define_flags(discordance.DiscordanceConfig)
FLAGS = llm_common.FLAGS


def main(argv):
  del argv
  llm_common.setup_devices()
  config = llm_common.config(discordance.DiscordanceConfig)
  result = llm_common.run_or_plan(discordance.run_discordance, config, FLAGS.workdir)
  for p in result["points"] if result is not None else ():
    d = p["discordance_reward"]
    value = "undefined (a task's scores are constant)" if d["discordance"] is None else (
        f"{d['discordance']:.3f}")
    print(f"{p['model']}: spectral discordance over {d['m']} tasks, N={d['n']}: D(reward) = "
          f"{value} (bound {d['upper_bound']:.3f})")


if __name__ == "__main__":
  cli.run(main)
