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
Writes `results.json`, `landscape.png` and `log.txt` under `--workdir`. The flags are the
settings of the two domains' configs; the plane's (`--directions`, `--extent`, `--points`) are
shared, and a domain's default applies where the flag is not given.
"""

from absl import flags

from experiments import preset
from thickets_jax import cli, configs
from thickets_jax.errors import InputError
from thickets_jax.llm import landscape as llm_landscape
from thickets_jax.signals import landscape as signals_landscape

DOMAINS = {"signals": signals_landscape.LandscapeSpec, "llm": llm_landscape.LandscapeConfig}
flags.DEFINE_enum("domain", "signals", list(DOMAINS), "1D MLPs or a language model.")
configs.define_flags(signals_landscape.LandscapeSpec)
configs.define_flags(llm_landscape.LandscapeConfig, shared=True)
flags.adopt_module_key_flags(preset)  # --preset
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS


def _config(domain: str):
  """The domain's config: its defaults, with the flags given; another domain's flag is refused
  (the plane's flags belong to both)."""
  config_class = DOMAINS[domain]
  own = {f.name for f in configs.settings(config_class)}
  for other, other_class in DOMAINS.items():
    foreign = [f for f in configs.present(other_class) if f not in own]
    if foreign:
      raise InputError(f"--{foreign[0]} is for --domain {other}, not {domain}.")
  return configs.from_flags(config_class, base=preset.base(config_class) or config_class())


def main(argv):
  del argv
  if not FLAGS.workdir:
    raise InputError("--workdir is required.")
  config = _config(FLAGS.domain)
  if FLAGS.domain == "signals":
    result = signals_landscape.run_landscape(config, FLAGS.workdir)
    print(signals_landscape.table(result))
    return
  result = llm_landscape.run_landscape(config, FLAGS.workdir)
  better = ", ".join(f"{100 * b['fraction']:.0f}% by >{b['margin']:g}×base"
                     for b in result["better"])
  print(f"{result['model']} on {result['task']}: base reward {result['base_reward']:.3f}; "
        f"grid points above the base: {better}; best {result['best']}")


if __name__ == "__main__":
  cli.run(main)
