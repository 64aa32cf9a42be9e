"""Flags shared by the LLM experiments (randopt, density, discordance), turned into configs.

Every flag defaults to None: a flag left unset keeps the default of the experiment's config
(`thickets_jax.llm.runs`), so each experiment's defaults live in one place, its config.
"""

import dataclasses
import os
from typing import Optional

from absl import flags

from experiments import common
from thickets_jax import cli, distributed, population
from thickets_jax.errors import InputError
from thickets_jax.llm import dryrun, generate, plan, registry, runs
from thickets_jax.perturb import MODES, NOISE_FAMILIES

_DEFAULT = " (default: the experiment's config)"
flags.DEFINE_string("weights", None, "A Hugging Face checkpoint directory (else the HF cache / "
                    "offline packages).")
flags.DEFINE_enum("dtype", None, list(runs.DTYPES), "Matrix and activation dtype (default: the "
                  "execution plan's: bfloat16 on accelerators, float32 on CPU).")
flags.DEFINE_integer("N", None, "Perturbed members" + _DEFAULT)
flags.DEFINE_list("sigmas", None, "Noise scales; each member draws one" + _DEFAULT)
flags.DEFINE_integer("seed", None, "Root seed: member seeds, sigmas and procedural data" + _DEFAULT)
flags.DEFINE_integer("train_size", None, "Examples each member is scored on" + _DEFAULT)
flags.DEFINE_integer("max_new_tokens", None, "Generation length limit" + _DEFAULT)
flags.DEFINE_integer("batch_size", None, "Prompts per generation batch" + _DEFAULT)
flags.DEFINE_integer("members_per_batch", None, "Members per compiled generation call "
                     "(default: the execution plan's: one per population slot of the mesh on "
                     "accelerators, 2 on CPU).")
flags.DEFINE_enum("member_axis", None, population.MEMBER_AXES, "How members share a call: map "
                  "(one perturbed copy in memory) or vmap (batched, shardable) (default: the "
                  "execution plan's: vmap on accelerators, map on CPU).")
flags.DEFINE_enum("layer_loop", None, generate.LAYER_LOOPS,
                  "How the layers run (default: unrolled on GPUs, else scan).")
flags.DEFINE_enum("mode", None, MODES, "Noise: independent per leaf and layer, or the "
                  "reference's shared noise per shape" + _DEFAULT)
flags.DEFINE_bool("relative", None, "Scale sigma by each leaf's std" + _DEFAULT)
flags.DEFINE_string("include", None, "Regex of parameter paths to perturb (default: all).")
flags.DEFINE_enum("noise", None, NOISE_FAMILIES, "Noise family: full-rank, or rank-r noise on "
                  "every weight matrix (EGGROLL-style)" + _DEFAULT)
flags.DEFINE_integer("rank", None, "Rank r of --noise lowrank" + _DEFAULT)
flags.DEFINE_string("data", None, "JSONL/parquet file for dataset tasks (gsm8k, math500).")
flags.DEFINE_integer("model_parallel", None, "Devices per member on a (population, model) mesh "
                     "(0: no mesh; needs --member_axis vmap) (default: the execution plan's: on "
                     "accelerators the smallest degree that divides the heads and fits, on CPU "
                     "0).")
flags.DEFINE_bool("dry_run", False, "Print the execution plan and the per-device bytes of the "
                  "run's compiled generation program (abstract inputs: no weights are read), then "
                  "exit.")
flags.DEFINE_integer("plan_devices", None, "--dry_run: plan for this many accelerators (simulated "
                     "as host devices) instead of the devices JAX sees.")
flags.DEFINE_string("plan_device_memory", None, "--dry_run with --plan_devices: memory per device, "
                    "e.g. 80GB or 16GiB.")
flags.DEFINE_integer("keep_completions", None, "Completions stored per task with each member's "
                     "and the base's scores (the first ones; 0: none)" + _DEFAULT)
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS

_PARSERS = {"sigmas": cli.floats}


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


def config(cls, **own):
  """`cls` (a `runs.ScoringConfig`) from the shared flags that are set and the experiment's
  own settings `own` (None: unset). `--weights DIR` without `--model` runs the checkpoint in
  DIR (`registry.CHECKPOINT`)."""
  shared = {}
  for field in dataclasses.fields(runs.ScoringConfig):
    if field.name == "plan":  # chosen by `ScoringConfig.planned`
      continue
    value = FLAGS[field.name].value
    if value is not None:
      shared[field.name] = _PARSERS[field.name](value, field.name) if field.name in _PARSERS else value
  if shared.get("weights"):  # --weights DIR without --model: the checkpoint's own model
    if own.get("model", "") is None:
      own["model"] = registry.CHECKPOINT
    if own.get("models", ()) is None:
      own["models"] = (registry.CHECKPOINT,)
  return cls(**shared, **{k: v for k, v in own.items() if v is not None})
