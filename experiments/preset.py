"""`--preset`: a paper run as an experiment's config (`thickets_jax.presets`), changed by the
flags given with it. Only the experiments whose config a preset can be define the flag."""

from absl import flags

from thickets_jax import configs, presets
from thickets_jax.errors import InputError

flags.DEFINE_string("preset", None, "A paper run as the config (NAME or NAME:tiny; "
                    f"{', '.join(presets.PRESETS.names())}); flags given change it.")
FLAGS = flags.FLAGS


def base(config_class: type):
  """The config of `--preset` (None without one); one sentence if it is another experiment's."""
  if not FLAGS.preset:
    return None
  preset = presets.get(FLAGS.preset)
  if not isinstance(preset, config_class):
    raise InputError(f"--preset {FLAGS.preset} is a {type(preset).__name__}, not a "
                     f"{config_class.__name__}; run it with its experiment.")
  return preset


def config(config_class: type, **overrides):
  """`config_class` from the parsed flags (`configs.from_flags`) and `overrides`, on top of
  `--preset` if given."""
  return configs.from_flags(config_class, base=base(config_class), **overrides)
