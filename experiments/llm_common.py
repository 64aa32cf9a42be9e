"""What the LLM experiments share: their flags derived from their config, execution planning.

An experiment calls `configs.define_flags(ConfigClass)` at import: every setting of the config
becomes a flag with the config's default (`thickets_jax.configs`), so each setting is declared
once, in its config. `config(ConfigClass)` builds the config back from the parsed flags.
"""

import os
from typing import Optional

from absl import flags

from experiments import common, preset
from thickets_jax import configs, distributed
from thickets_jax.errors import InputError
from thickets_jax.llm import dryrun, plan, registry

flags.DEFINE_integer("plan_devices", None, "--dry_run: plan for this many accelerators (simulated "
                     "as host devices) instead of the devices JAX sees.")
flags.DEFINE_string("plan_device_memory", None, "--dry_run with --plan_devices: memory per device, "
                    "e.g. 80GB or 16GiB.")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
flags.adopt_module_key_flags(preset)  # --preset
flags.adopt_module_key_flags(common)  # --host_devices, --distributed, ...
FLAGS = flags.FLAGS


def setup_devices() -> None:
  """`common.setup_devices` for a language-model experiment (multi-host allowed); a planned dry
  run for `--plan_devices` accelerators compiles for that many simulated host devices."""
  if (FLAGS.plan_devices is None) != (FLAGS.plan_device_memory is None):
    raise InputError("--plan_devices and --plan_device_memory go together (e.g. --plan_devices 8 "
                     "--plan_device_memory 80GB).")
  if FLAGS.plan_devices is not None:
    if not FLAGS.dry_run:
      raise InputError("--plan_devices plans a machine this is not: it needs --dry_run.")
    if FLAGS.distributed:
      raise InputError("--plan_devices simulates one host's devices; drop --distributed (a "
                       "--distributed --dry_run plans the hosts' real devices).")
    plan.Machine.hypothetical(FLAGS.plan_devices, plan.parse_bytes(FLAGS.plan_device_memory))
    FLAGS.host_devices = FLAGS.plan_devices
    os.environ["XLA_FLAGS"] = " ".join(
        [f for f in os.environ.get("XLA_FLAGS", "").split()
         if "xla_force_host_platform_device_count" not in f] +
        [f"--xla_force_host_platform_device_count={FLAGS.plan_devices}"])
  common.setup_devices(multi_host=True)


def machine() -> Optional[plan.Machine]:
  """The hypothetical machine of `--plan_devices` (None: the devices JAX sees)."""
  if FLAGS.plan_devices is None:
    return None
  return plan.Machine.hypothetical(FLAGS.plan_devices, plan.parse_bytes(FLAGS.plan_device_memory))


def run_or_plan(run, config, workdir: Optional[str]):
  """`run(config, workdir)`, or with --dry_run the plan and its compiled footprint (no weights
  read, nothing written). Returns the run's result, or None after a dry run."""
  config = config.planned(machine())
  if not config.dry_run:
    return run(config, workdir)
  report = dryrun.report(config)
  if distributed.is_writer():
    print(report)
  return None


def config(config_class: type, **overrides):
  """`config_class` from the parsed flags (`configs.from_flags`) and `overrides`, on top of
  `--preset` if given. `--weights DIR` without `--model` or a preset runs the checkpoint in DIR
  (`registry.CHECKPOINT`)."""
  if FLAGS.preset:
    return preset.config(config_class, **overrides)
  if FLAGS.weights and not FLAGS["model"].present:
    many = "models" in config_class.__dataclass_fields__
    overrides.setdefault("models" if many else "model",
                         (registry.CHECKPOINT,) if many else registry.CHECKPOINT)
  return configs.from_flags(config_class, **overrides)
