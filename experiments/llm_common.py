"""Flags and set-up shared by the LLM experiments (randopt, density, discordance).

Everything a flag can get wrong is checked by `validate` before any weights are read.
"""

import os
from typing import Sequence


import jax.numpy as jnp
from absl import flags

from experiments import common
from thickets_jax import cli, population, randopt, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, registry, scoring, sharding, weights
from thickets_jax.perturb import MODES
from thickets_jax.tasks import TASKS

flags.DEFINE_string("weights", None, "A Hugging Face checkpoint directory (else the HF cache / offline packages).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Parameter and activation dtype.")
flags.DEFINE_integer("N", 16, "Perturbed members.")
flags.DEFINE_list("sigmas", ["1e-3"], "Noise scales; each member draws one.")
flags.DEFINE_integer("seed", 0, "Root seed: member seeds, sigmas and procedural data.")
flags.DEFINE_integer("train_size", 16, "Examples each member is scored on.")
flags.DEFINE_integer("max_new_tokens", 128, "Generation length limit.")
flags.DEFINE_integer("batch_size", 16, "Prompts per generation batch.")
flags.DEFINE_integer("members_per_batch", 2, "Members per compiled generation call.")
flags.DEFINE_enum("member_axis", "map", population.MEMBER_AXES, "How members share a call.")
flags.DEFINE_enum("layer_loop", None, generate.LAYER_LOOPS,
                  "How the decode step runs the layers (default: unrolled on GPUs, else scan).")
flags.DEFINE_enum("mode", "independent", MODES, "Noise: independent per leaf, or the reference's shared noise.")
flags.DEFINE_bool("relative", False, "Scale sigma by each leaf's std.")
flags.DEFINE_string("include", None, "Regex of parameter paths to perturb (default: all).")
flags.DEFINE_string("data", None, "JSONL/parquet file for dataset tasks (gsm8k, math500).")
flags.DEFINE_integer("model_parallel", 0, "Devices per member on a (population, model) mesh "
                     "(0: no mesh). Members of a chunk are spread over the population axis; "
                     "needs --member_axis vmap.")
flags.DEFINE_integer("keep_completions", 2, "Completions stored per task with each member's "
                     "and the base's scores (the first ones; 0: none).")
flags.DEFINE_string("workdir", None, "Where results, plots and logs go.")
FLAGS = flags.FLAGS

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


def sigmas() -> tuple[float, ...]:
  values = cli.floats(FLAGS.sigmas, "sigmas")
  population.validate_sigmas(values)
  return values


def setup_devices() -> None:
  """`common.setup_devices` for a language-model experiment (multi-host allowed)."""
  if FLAGS.distributed and not FLAGS.model_parallel:  # before waiting for the other hosts
    raise InputError("--distributed needs --model_parallel M (M devices per member; members are "
                     "spread over all hosts' devices).")
  common.setup_devices(multi_host=True)


def validate(models: Sequence[str], tasks: Sequence[str], ks: Sequence[int] = ()) -> None:
  """One sentence for the first bad flag, before any weights are read."""
  for name in models:
    registry.find_weights(registry.MODELS.get(name), FLAGS.weights)
  dataset_tasks = [name for name in tasks if TASKS.get(name).needs_data]
  if FLAGS.data and len(dataset_tasks) > 1:
    raise InputError(f"one --data file cannot serve {' and '.join(dataset_tasks)}; score them "
                     "in separate runs.")
  for flag in ("N", "train_size", "max_new_tokens", "batch_size", "members_per_batch"):
    if FLAGS[flag].value <= 0:
      raise InputError(f"--{flag} must be positive, got {FLAGS[flag].value}.")
  if FLAGS.keep_completions < 0:
    raise InputError(f"--keep_completions must be >= 0, got {FLAGS.keep_completions}.")
  sigmas()
  randopt.validate_top_k(ks, FLAGS.N)
  if FLAGS.model_parallel:
    if FLAGS.member_axis != "vmap":
      raise InputError("--model_parallel needs --member_axis vmap (members spread over the mesh).")
    population_size = sharding.make_mesh(FLAGS.model_parallel).shape[population.POPULATION_AXIS]
    if FLAGS.members_per_batch % population_size:
      raise InputError(f"--members_per_batch {FLAGS.members_per_batch} must be a multiple of the "
                       f"{population_size} member slots of the mesh.")
  if FLAGS.data and not os.path.isfile(FLAGS.data):
    raise InputError(f"--data {FLAGS.data} is not a file.")


def perturb_kwargs() -> dict:
  return {"mode": FLAGS.mode, "relative": FLAGS.relative, "include": FLAGS.include}


def spec(**extra) -> dict:
  """What identifies a run's numbers; a workdir holding another spec is refused."""
  return {"N": FLAGS.N, "sigmas": list(sigmas()), "seed": FLAGS.seed,
          "train_size": FLAGS.train_size, "max_new_tokens": FLAGS.max_new_tokens,
          "dtype": FLAGS.dtype, "data": FLAGS.data, "weights": FLAGS.weights,
          **perturb_kwargs(), **extra}


def splits(task_name: str, test_size: int):
  """(train, test) examples; read before any model is loaded, so missing data fails first."""
  return TASKS.get(task_name).splits(FLAGS.train_size, test_size, FLAGS.seed, FLAGS.data)


def mesh():
  return sharding.make_mesh(FLAGS.model_parallel) if FLAGS.model_parallel else None


def load(model: str):
  """The model, its parameters placed by the sharding table when --model_parallel is set."""
  place = sharding.placer(mesh()) if FLAGS.model_parallel else weights.default_placer
  return registry.load(model, FLAGS.weights, DTYPES[FLAGS.dtype], place)


def generator(loaded) -> generate.Generator:
  """Greedy decoding, the RandOpt protocol."""
  return generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                            generate.Sampling(max_new_tokens=FLAGS.max_new_tokens),
                            batch_size=FLAGS.batch_size, chat=loaded.entry.instruct,
                            member_axis=FLAGS.member_axis, perturb_kwargs=perturb_kwargs(),
                            layer_loop=FLAGS.layer_loop)


def score_base_and_members(gen: generate.Generator, task_sets, run_dir: str):
  """The base's scores (`base.json`, computed once) and every member's (resumable).

  Returns:
    (base summary, seeds [N], sigmas [N], member records in sampling order).
  """
  base = workdir.cached_json(os.path.join(run_dir, "base.json"), lambda: scoring.score_base(
      gen, task_sets, keep_completions=FLAGS.keep_completions))
  seeds, sigmas_ = population.draw_candidates(FLAGS.seed, FLAGS.N, sigmas())
  records = scoring.score_members(gen, task_sets, seeds, sigmas_,
                                  randopt.CandidateStore(os.path.join(run_dir, "candidates.jsonl")),
                                  members_per_batch=FLAGS.members_per_batch, mesh=mesh(),
                                  keep_completions=FLAGS.keep_completions)
  return base, seeds, sigmas_, records
