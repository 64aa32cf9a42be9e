r"""What every language-model experiment shares: the scoring config, the population's scores
against the base, and the opening of a one-model, one-task run.

The experiments built on it (`llm/randopt.py`, `llm/density.py`, `llm/discordance.py`,
`llm/compare.py`, ...) each take a frozen config and a workdir and return their results (also
written to the workdir's `results.json`); `experiments/*` only turn flags into a config. Every
config has `tiny(weights)` for tests on a tiny checkpoint. A run validates everything it can
before it reads weights or writes anything (one-sentence `InputError`s), claims its workdir
(`RunDir`), and resumes from it: base scores are computed once, members are appended to
`candidates.jsonl` as they finish and never re-scored.
"""

import contextlib
import dataclasses
import os
from typing import ClassVar, Iterator, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging

from thickets_jax import configs, perturb, population, scales
from thickets_jax.errors import InputError
from thickets_jax.llm import codec, generate, registry, scoring, sharding
from thickets_jax.llm import plan as llm_plan
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.generator import DECODES, Decode, Generator
from thickets_jax.perturb import PerturbSpec
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Settings that change how a run is computed, not its numbers, so a run may resume with others.
# In bfloat16, though, the shapes they give the programs can change rounding and so some tokens
# (docs/scale.md).
EXECUTION_FIELDS = ("batch_size", "members_per_batch", "member_axis", "layer_loop", "decode",
                    "refill_rows", "model_parallel", "keep_completions", "plan", "dry_run")
# The identity holds these as a PerturbSpec.
NOISE_FIELDS = ("mode", "relative", "include", "noise", "rank", "scale", "masses")
TINY_MODEL = "tiny-random-llama"


@dataclasses.dataclass(frozen=True)
class ScoringConfig(scales.ScaleSettings):
  """What every LLM run shares: weights, the population, the scoring protocol (greedy).

  `train_size` and `max_new_tokens` left None take the reference protocol of the run's tasks
  where they have one (200 examples, 1024 tokens: countdown, gsm8k, math500), else the
  experiment's `OFFLINE_PROTOCOL`; `dtype`, `members_per_batch`, `member_axis` and
  `model_parallel` left None are chosen by the execution plan (`planned`,
  `thickets_jax.llm.plan`), recorded in `plan`.
  """
  weights: Optional[str] = configs.setting(
      None, "A Hugging Face checkpoint directory (else the HF cache / offline packages).")
  dtype: Optional[str] = configs.setting(
      None, "Matrix and activation dtype; vectors stay float32 (default: the execution plan's: "
      "bfloat16 on accelerators, float32 on CPU).", choices=tuple(DTYPES))
  N: int = configs.setting(16, "Perturbed members.")
  sigmas: tuple[float, ...] = configs.setting((1e-3,), "Noise scales; each member draws one.")
  seed: int = configs.setting(0, "Root seed: member seeds, sigmas and procedural data.")
  train_size: Optional[int] = configs.setting(
      None, "Examples each member is scored on (default: the task's reference protocol, else "
      "the experiment's offline protocol).")
  max_new_tokens: Optional[int] = configs.setting(
      None, "Generation length limit (default: as --train_size).")
  batch_size: int = configs.setting(16, "Prompts per generation batch.")
  members_per_batch: Optional[int] = configs.setting(
      None, "Members per compiled generation call (default: the execution plan's: one per "
      "population slot of the mesh on accelerators, 2 on CPU).")
  member_axis: Optional[str] = configs.setting(
      None, "How members share a call: map (one perturbed copy in memory) or vmap (batched, "
      "shardable) (default: the execution plan's: vmap on accelerators, map on CPU).",
      choices=population.MEMBER_AXES)
  layer_loop: Optional[str] = configs.setting(
      None, "How the layers run (default: unrolled on GPUs, else scan).",
      choices=generate.LAYER_LOOPS)
  kv_cache_dtype: Optional[str] = configs.setting(
      None, "KV cache dtype (default: the model's dtype): bfloat16 halves a float32 model's "
      "cache and what each decode step reads of it, and can change tokens.",
      choices=tuple(generate.CACHE_DTYPES))
  decode: str = configs.setting(
      "auto", "How rows decode, with the same tokens: batch (each prompt batch until its "
      "longest row ends), refill (--batch_size slots per member; a finished row's slot takes "
      "the next prompt) or auto (each chunk of members after the first with the one the last "
      "chunk's completion lengths say is faster).", choices=DECODES)
  refill_rows: Optional[int] = configs.setting(
      None, "Prompts one prefill stages together under --decode refill or auto, moved one into "
      "each slot that frees (default: a quarter of --batch_size; of all the chunk's slots for "
      "factored low-rank members, which share them).")
  mode: str = configs.setting(
      "independent", "Noise: independent per leaf and layer, or the reference's shared noise "
      "per shape.", choices=perturb.MODES)
  relative: bool = configs.setting(False, "Scale sigma by each leaf's std.")
  include: Optional[str] = configs.setting(
      None, "Regex of parameter paths to perturb (default: all).")
  noise: str = configs.setting(
      "full", "Noise family: full-rank, or rank-r noise on every weight matrix (EGGROLL-style).",
      choices=perturb.NOISE_FAMILIES)
  rank: int = configs.setting(4, "Rank r of --noise lowrank.")
  data: Optional[str] = configs.setting(
      None, "JSONL/parquet file of the dataset task (gsm8k, math500, olympiadbench, mbpp, "
      "rocstories, uspto50k), or TASK=FILE,... for several (a task not named reads the "
      "datasets cache).")
  model_parallel: Optional[int] = configs.setting(
      None, "Devices per member on a (population, model) mesh (0: no mesh; needs --member_axis "
      "vmap) (default: the execution plan's: on accelerators the smallest degree that divides "
      "the heads and fits, on CPU 0).")
  keep_completions: int = configs.setting(
      2, "Completions stored per task with each member's and the base's scores (the first "
      "ones; 0: none).")
  plan: Optional[dict] = None  # the execution plan `planned` chose (`ExecutionPlan.to_json`)
  dry_run: bool = configs.setting(
      False, "Print the execution plan and the per-device bytes of the run's compiled "
      "generation program (abstract inputs: no weights are read), then exit.")
  # (train_size, max_new_tokens) on tasks without a reference protocol (procedural, offline).
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (16, 128)
  # The dtype the plan picks on accelerators; experiments that train weights keep float32.
  ACCELERATOR_DTYPE: ClassVar[str] = "bfloat16"

  def model_names(self) -> tuple[str, ...]:
    """The models the run loads (`models`, else `model`, of the experiment's config)."""
    return tuple(getattr(self, "models", ())) or (getattr(self, "model"),)

  def task_names(self) -> tuple[str, ...]:
    """The tasks the run scores (`tasks`, else `task`, of the experiment's config)."""
    return tuple(getattr(self, "tasks", ())) or (getattr(self, "task"),)

  def with_protocol(self) -> "ScoringConfig":
    """`train_size` and `max_new_tokens` left None taken from the tasks' reference protocol
    (the largest among the run's tasks), else from `OFFLINE_PROTOCOL`."""
    protocols = [TASKS.get(name).protocol for name in self.task_names()]
    protocols = [p for p in protocols if p is not None]
    train, new = ((max(p.train_size for p in protocols), max(p.max_new_tokens for p in protocols))
                  if protocols else self.OFFLINE_PROTOCOL)
    return dataclasses.replace(
        self, train_size=train if self.train_size is None else self.train_size,
        max_new_tokens=new if self.max_new_tokens is None else self.max_new_tokens)

  def planned(self, machine: Optional[llm_plan.Machine] = None) -> "ScoringConfig":
    """This config with its protocol (`with_protocol`) and its execution settings left None
    chosen for `machine` (default: the devices JAX sees), the plan recorded in `plan`; one
    sentence if no plan fits. Settings given are kept; a planned config is returned as it is."""
    if self.plan is not None and machine is None:
      return self
    config = self.with_protocol()
    config.find_inputs()  # a missing model or file gets its sentence before any device is touched
    chosen = config.execution_plan(config.model_names(), machine or llm_plan.Machine.detect())
    return dataclasses.replace(
        config, dtype=chosen.dtype, model_parallel=chosen.model_parallel,
        member_axis=chosen.member_axis, members_per_batch=chosen.members_per_batch,
        plan={**chosen.to_json(), "summary": chosen.describe()})

  def execution_plan(self, models: Sequence[str],
                     machine: Optional[llm_plan.Machine] = None) -> llm_plan.ExecutionPlan:
    """`plan.choose` for `models` on `machine` (default: the one this config was planned for)
    with this config's settings; a planned config gets its own plan back, per model."""
    machine = machine or llm_plan.Machine(**self.plan["machine"])
    return llm_plan.choose(
        {name: registry.entry(name, self.weights).config for name in models}, machine,
        dtype=self.dtype,
        model_parallel=self.model_parallel, member_axis=self.member_axis,
        members_per_batch=self.members_per_batch, rows=self.batch_size,
        slots=llm_plan.PROMPT_TOKENS + self.max_new_tokens, dtypes=DTYPES,
        accelerator_dtype=self.ACCELERATOR_DTYPE,
        cache_dtype=generate.CACHE_DTYPES.get(self.kv_cache_dtype))

  def perturb_spec(self) -> PerturbSpec:
    return PerturbSpec(mode=self.mode, relative=self.relative, include=self.include,
                       stacked=llm_model.STACKED_LEAVES, noise=self.noise, rank=self.rank,
                       scale=self.scale, masses=self.masses)

  def identity(self) -> dict:
    """What identifies the run's numbers (its workdir's spec.json, and the head of its
    results.json): the settings, with the noise as the run's `PerturbSpec`."""
    fields = {k: v for k, v in configs.flat(self).items()
              if k not in EXECUTION_FIELDS + NOISE_FIELDS}
    return {**fields, "perturbation": self.perturb_spec().to_json(),
            "experiment": type(self).__name__}

  def validate(self) -> None:
    """One sentence for the first bad setting (at construction; reads no files)."""
    if self.dtype is not None and self.dtype not in DTYPES:
      raise InputError(f"unknown dtype {self.dtype!r}; known: {', '.join(DTYPES)}.")
    if self.member_axis is not None and self.member_axis not in population.MEMBER_AXES:
      raise InputError(f"unknown member axis {self.member_axis!r}; known: "
                       f"{', '.join(population.MEMBER_AXES)}.")
    if self.layer_loop is not None and self.layer_loop not in generate.LAYER_LOOPS:
      raise InputError(f"unknown layer loop {self.layer_loop!r}; known: "
                       f"{', '.join(generate.LAYER_LOOPS)}.")
    if not self.model_names():
      raise InputError("give at least one model.")
    self.data_files()  # a TASK=FILE list parses
    for field in ("N", "train_size", "max_new_tokens", "batch_size", "members_per_batch",
                  "rank"):
      if getattr(self, field) is not None and getattr(self, field) <= 0:
        raise InputError(f"--{field} must be positive, got {getattr(self, field)}.")
    self.decoding().validate(self.batch_size)
    if self.model_parallel is not None and self.model_parallel < 0:
      raise InputError(f"--model_parallel must be >= 0, got {self.model_parallel}.")
    if self.keep_completions < 0:
      raise InputError(f"--keep_completions must be >= 0, got {self.keep_completions}.")
    population.validate_sigmas(self.sigmas)
    self.perturb_spec()
    if self.model_parallel and self.member_axis is not None and self.member_axis != "vmap":
      raise InputError("--model_parallel needs --member_axis vmap (members spread over the "
                       "mesh).")
    if self.model_parallel and self.plan is not None:
      slots = self.plan["machine"]["devices"] // self.model_parallel
      if self.members_per_batch % slots:
        raise InputError(f"--members_per_batch {self.members_per_batch} must be a multiple of "
                         f"the {slots} member slots of the mesh.")

  def find_inputs(self) -> None:
    """One sentence for the first model, weights or data file the run cannot find, before any
    weights are read (a dry run looks for no weights)."""
    for name in self.model_names():
      entry = registry.entry(name, self.weights)
      if not self.dry_run:
        registry.find_weights(entry, self.weights)
    dataset_tasks = [name for name in self.task_names() if TASKS.get(name).needs_data]
    if self.data and not self.data_files() and len(dataset_tasks) > 1:
      raise InputError(f"one --data file cannot serve {' and '.join(dataset_tasks)}; name each "
                       f"task's file: --data {dataset_tasks[0]}=FILE,{dataset_tasks[1]}=FILE.")
    for task_name in self.task_names():
      path = self.data_for(task_name)
      if path and not os.path.isfile(path):
        raise InputError(f"--data {path} is not a file.")

  def data_files(self) -> dict[str, str]:
    """`data` as {task: file} (TASK=FILE,... form); {} for one plain file or none."""
    if not self.data or "=" not in self.data:
      return {}
    files = {}
    for item in self.data.split(","):
      task_name, sep, path = item.partition("=")
      if not sep or not path or task_name.strip() not in TASKS:
        raise InputError(f"--data takes FILE or TASK=FILE,... with registered tasks, got "
                         f"{item!r}.")
      files[task_name.strip()] = path
    return files

  def data_for(self, task_name: str) -> Optional[str]:
    """The data file of `task_name`: its TASK=FILE entry, or the one plain file."""
    files = self.data_files()
    return files.get(task_name) if files else self.data

  def mesh(self):
    return sharding.make_mesh(self.model_parallel) if self.model_parallel else None

  def splits(self, task_name: str, test_size: int):
    """(train, test) examples; read before any model is loaded, so missing data fails first."""
    return TASKS.get(task_name).splits(self.train_size, test_size, self.seed,
                                       self.data_for(task_name))

  def load(self, model: str) -> registry.LoadedModel:
    """The model, its parameters placed by the sharding table when `model_parallel` is set."""
    mesh = self.mesh()
    return registry.load(model, self.weights, DTYPES[self.dtype],
                         None if mesh is None else sharding.leaf_sharding(mesh))

  def generator(self, loaded: registry.LoadedModel, perturb: Optional[PerturbSpec] = None,
                temperature: float = 0.0) -> Generator:
    """Greedy decoding (the RandOpt protocol) unless `temperature` > 0, with this config's
    noise (or `perturb`); a pretrained-only model gets the codec's question-answer prompt."""
    instruct = loaded.entry.instruct
    return Generator(loaded.config, loaded.params, loaded.tokenizer, self.sampling(temperature),
                     batch_size=self.batch_size, chat=instruct,
                     base_template="{}" if instruct else codec.BASE_TEMPLATE,
                     stop_strings=() if instruct else (codec.BASE_STOP,),
                     member_axis=self.member_axis,
                     perturb=perturb or self.perturb_spec(), layer_loop=self.layer_loop,
                     decode=self.decoding())

  def sampling(self, temperature: float = 0.0) -> generate.Sampling:
    """Greedy (the RandOpt protocol) unless `temperature` > 0, in this config's KV cache dtype."""
    return generate.Sampling(max_new_tokens=self.max_new_tokens, temperature=temperature,
                             cache_dtype=self.kv_cache_dtype)

  def decoding(self) -> Decode:
    return Decode(self.decode, self.refill_rows)


TINY = dict(N=4, sigmas=(0.01, 0.05), train_size=2, max_new_tokens=8, batch_size=2,
            members_per_batch=2)  # the settings every experiment's `tiny` variant shares


@dataclasses.dataclass(frozen=True)
class OneModelConfig(ScoringConfig):
  """A run of one model on one task's train and test splits."""
  model: str = configs.setting(
      "smollm2-135m-instruct", "Registered model name (with --weights DIR alone: the checkpoint "
      "in DIR).")
  task: str = configs.setting("countdown", "Registered task name.")
  test_size: int = configs.setting(32, "Test examples (0: all the test split has).")

  def validate(self) -> None:
    super().validate()
    if self.test_size < 0:
      raise InputError(f"--test_size must be >= 0, got {self.test_size}.")


@dataclasses.dataclass(frozen=True)
class ModelsConfig(ScoringConfig):
  """A run over several models, scored on train splits only."""
  models: tuple[str, ...] = configs.setting(
      registry.OFFLINE_MODELS, "Registered model names (with --weights DIR alone: the "
      "checkpoint in DIR).", flag="model")




TRUNCATION_WARNING = 0.5  # a run where more completions than this are cut says so


def truncation(config: ScoringConfig, base: dict, records: Sequence[dict], label: str) -> dict:
  """The fractions of completions cut at `max_new_tokens` (base, and the members' mean), with
  a warning, also logged, when most of them were: such scores grade unfinished answers.
  Records scored before the fraction was recorded are left out."""
  members = [r["truncated"] for r in records if "truncated" in r]
  out = {"max_new_tokens": config.max_new_tokens, "base": base.get("truncated"),
         "members_mean": float(np.mean(members)) if members else None}
  worst = max([v for v in (out["base"], out["members_mean"]) if v is not None], default=0.0)
  if worst > TRUNCATION_WARNING:
    out["warning"] = (f"{label}: {worst:.0%} of completions were cut at max_new_tokens="
                      f"{config.max_new_tokens}; their scores grade unfinished answers (raise "
                      "--max_new_tokens).")
    logging.warning("%s", out["warning"])
  return out


def score_base_and_members(config: ScoringConfig, gen: Generator,
                           task_sets: Sequence[scoring.TaskSet], run_dir: RunDir):
  """The base's scores (`base.json`, computed once) and every member's (resumable).

  Returns:
    (base summary, seeds [N], sigmas [N], member records in sampling order).
  """
  base = run_dir.cached_json("base", lambda: scoring.score_base(
      gen, task_sets, keep_completions=config.keep_completions))
  seeds, sigmas = population.draw_candidates(config.seed, config.N, config.sigmas)
  records = scoring.score_members(gen, task_sets, seeds, sigmas, run_dir.store(),
                                  members_per_batch=config.members_per_batch, mesh=config.mesh(),
                                  keep_completions=config.keep_completions)
  return base, seeds, sigmas, records


@contextlib.contextmanager
def model_task_run(config, workdir: str, experiment: str) -> Iterator[tuple]:
  """What a run of one model on one task's train/test split opens with: validate, split, claim
  the workdir, start its session, load the model.

  Yields:
    (run_dir, loaded model, train TaskSet, test TaskSet, the config's greedy generator).
  """
  if config.plan is None:
    raise ValueError("model_task_run takes a planned config (`config.planned()`).")
  config.find_inputs()
  train, test = config.splits(config.task, config.test_size)
  run_dir = RunDir.prepare(workdir)
  run_dir.claim(config.identity())
  with run_dir.session(experiment, dataclasses.asdict(config)):
    logging.info("%s", config.plan["summary"])
    loaded = config.load(config.model)
    task = TASKS.get(config.task)
    logging.info("%s on %s: %d train, %d test examples; weights %s", config.model, config.task,
                 len(train), len(test), loaded.source.describe())
    gen = config.generator(loaded)
    gen.codec.check_lengths([e.prompt for e in train + test])  # before any scoring
    yield run_dir, loaded, scoring.TaskSet(task, train), scoring.TaskSet(task, test), gen
