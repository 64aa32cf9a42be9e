"""Flags shared by the LLM experiments (randopt, density, discordance), turned into configs.

Every flag defaults to None: a flag left unset keeps the default of the experiment's config
(`thickets_jax.llm.runs`), so each experiment's defaults live in one place, its config.
"""

import dataclasses

from absl import flags

from experiments import common
from thickets_jax import cli, population
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, runs
from thickets_jax.perturb import MODES, NOISE_FAMILIES

_DEFAULT = " (default: the experiment's config)"
flags.DEFINE_string("weights", None, "A Hugging Face checkpoint directory (else the HF cache / "
                    "offline packages).")
flags.DEFINE_enum("dtype", None, list(runs.DTYPES), "Parameter and activation dtype" + _DEFAULT)
flags.DEFINE_integer("N", None, "Perturbed members" + _DEFAULT)
flags.DEFINE_list("sigmas", None, "Noise scales; each member draws one" + _DEFAULT)
flags.DEFINE_integer("seed", None, "Root seed: member seeds, sigmas and procedural data" + _DEFAULT)
flags.DEFINE_integer("train_size", None, "Examples each member is scored on" + _DEFAULT)
flags.DEFINE_integer("max_new_tokens", None, "Generation length limit" + _DEFAULT)
flags.DEFINE_integer("batch_size", None, "Prompts per generation batch" + _DEFAULT)
flags.DEFINE_integer("members_per_batch", None, "Members per compiled generation call" + _DEFAULT)
flags.DEFINE_enum("member_axis", None, population.MEMBER_AXES, "How members share a call: map "
                  "(one perturbed copy in memory) or vmap (batched, shardable)" + _DEFAULT)
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
                     "(0: no mesh); needs --member_axis vmap" + _DEFAULT)
flags.DEFINE_integer("keep_completions", None, "Completions stored per task with each member's "
                     "and the base's scores (the first ones; 0: none)" + _DEFAULT)
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS

_PARSERS = {"sigmas": cli.floats}


def setup_devices() -> None:
  """`common.setup_devices` for a language-model experiment (multi-host allowed)."""
  if FLAGS.distributed and not FLAGS.model_parallel:  # before waiting for the other hosts
    raise InputError("--distributed needs --model_parallel M (M devices per member; members are "
                     "spread over all hosts' devices).")
  common.setup_devices(multi_host=True)


def config(cls, **own):
  """`cls` (a `runs.ScoringConfig`) from the shared flags that are set and the experiment's
  own settings `own` (None: unset)."""
  shared = {}
  for field in dataclasses.fields(runs.ScoringConfig):
    value = FLAGS[field.name].value
    if value is not None:
      shared[field.name] = _PARSERS[field.name](value, field.name) if field.name in _PARSERS else value
  return cls(**shared, **{k: v for k, v in own.items() if v is not None})
