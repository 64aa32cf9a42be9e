r"""Language-model runs as library functions: RandOpt, solution density, spectral discordance.

Each run takes a frozen config and a workdir and returns its results (also written to the
workdir's `results.json`); `experiments/*` only turn flags into a config:

  from thickets_jax.llm import runs
  result = runs.run_randopt(runs.RandOptConfig(task="countdown", N=64, ks=(1, 8)), "/tmp/ro")
  result = runs.run_density(runs.DensityConfig(), "/tmp/density")   # the offline main job

Every config has `tiny(weights)` for tests on a tiny checkpoint. A run validates everything
it can before it reads weights or writes anything (one-sentence `InputError`s), claims its
workdir (`RunDir`), and resumes from it: base scores are computed once, members are appended
to `candidates.jsonl` as they finish and never re-scored.
"""

import contextlib
import dataclasses
import math
import os
from typing import ClassVar, Iterator, Optional, Sequence

import jax.numpy as jnp
import numpy as np
from absl import logging
from scipy.cluster import vq

from thickets_jax import configs, halving, metrics, perturb, plotting, population, randopt, storage
from thickets_jax.errors import InputError
from thickets_jax.llm import codec, generate, registry, scoring, sharding
from thickets_jax.llm import plan as llm_plan
from thickets_jax.llm import model as llm_model
from thickets_jax.perturb import PerturbSpec
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# Settings that change how a run is computed, never its numbers: a run may resume with others.
_EXECUTION_FIELDS = ("batch_size", "members_per_batch", "member_axis", "layer_loop",
                     "model_parallel", "keep_completions", "plan", "dry_run")
# The identity holds these as a PerturbSpec.
_NOISE_FIELDS = ("mode", "relative", "include", "noise", "rank")
TINY_MODEL = "tiny-random-llama"


@dataclasses.dataclass(frozen=True)
class ScoringConfig(configs.Config):
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
      None, "JSONL/parquet file for dataset tasks (gsm8k, math500).")
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
        accelerator_dtype=self.ACCELERATOR_DTYPE)

  def perturb_spec(self) -> PerturbSpec:
    return PerturbSpec(mode=self.mode, relative=self.relative, include=self.include,
                       stacked=llm_model.STACKED_LEAVES, noise=self.noise, rank=self.rank)

  def identity(self) -> dict:
    """What identifies the run's numbers (its workdir's spec.json, and the head of its
    results.json): the settings, with the noise as the run's `PerturbSpec`."""
    fields = {k: v for k, v in configs.flat(self).items()
              if k not in _EXECUTION_FIELDS + _NOISE_FIELDS}
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
    for field in ("N", "train_size", "max_new_tokens", "batch_size", "members_per_batch",
                  "rank"):
      if getattr(self, field) is not None and getattr(self, field) <= 0:
        raise InputError(f"--{field} must be positive, got {getattr(self, field)}.")
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
    if self.data and len(dataset_tasks) > 1:
      raise InputError(f"one --data file cannot serve {' and '.join(dataset_tasks)}; score them "
                       "in separate runs.")
    if self.data and not os.path.isfile(self.data):
      raise InputError(f"--data {self.data} is not a file.")

  def mesh(self):
    return sharding.make_mesh(self.model_parallel) if self.model_parallel else None

  def splits(self, task_name: str, test_size: int):
    """(train, test) examples; read before any model is loaded, so missing data fails first."""
    return TASKS.get(task_name).splits(self.train_size, test_size, self.seed, self.data)

  def load(self, model: str) -> registry.LoadedModel:
    """The model, its parameters placed by the sharding table when `model_parallel` is set."""
    mesh = self.mesh()
    return registry.load(model, self.weights, DTYPES[self.dtype],
                         None if mesh is None else sharding.leaf_sharding(mesh))

  def generator(self, loaded: registry.LoadedModel, perturb: Optional[PerturbSpec] = None,
                temperature: float = 0.0) -> generate.Generator:
    """Greedy decoding (the RandOpt protocol) unless `temperature` > 0, with this config's
    noise (or `perturb`); a pretrained-only model gets the codec's question-answer prompt."""
    instruct = loaded.entry.instruct
    return generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                              generate.Sampling(max_new_tokens=self.max_new_tokens,
                                                temperature=temperature),
                              batch_size=self.batch_size, chat=instruct,
                              base_template="{}" if instruct else codec.BASE_TEMPLATE,
                              stop_strings=() if instruct else (codec.BASE_STOP,),
                              member_axis=self.member_axis,
                              perturb=perturb or self.perturb_spec(), layer_loop=self.layer_loop)


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


@dataclasses.dataclass(frozen=True)
class RandOptConfig(OneModelConfig):
  """RandOpt: score N members on `train_size` examples, keep the top max(ks), vote on the test
  split. With `halving_eta` > 1 the selection is successive halving (`thickets_jax.halving`)."""
  ks: tuple[int, ...] = configs.setting((1, 4), "Top-K sizes, e.g. 1,4,8.", flag="K")
  halving_eta: float = configs.setting(
      0.0, "Successive halving: keep 1/eta per rung (0: off, select on all train examples).")
  halving_min_examples: int = configs.setting(
      4, "Successive halving: train examples of the first rung.")

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "RandOptConfig":
    return cls(**{**TINY, "weights": weights, "model": TINY_MODEL, "ks": (1, 2), "test_size": 3,
                  **overrides})

  def validate(self) -> None:
    super().validate()
    randopt.validate_top_k(self.ks, self.N)
    if self.halving_eta and self.train_size is not None:
      halving.validate(self.halving_eta, self.halving_min_examples, self.train_size,
                       max(self.ks), self.N)


@dataclasses.dataclass(frozen=True)
class DensityConfig(ModelsConfig):
  """Solution density δ(m) per model and sigma on one task (the paper's Figure 3a).

  The defaults are the offline main job (docs/results.md): both offline models on our
  `arithmetic` task, where both bases score between 0 and 1 with short answers.
  """
  task: str = configs.setting("arithmetic", "Registered task name.")
  margins: tuple[float, ...] = configs.setting((0.0, 0.05, 0.1), "Absolute margins m of δ(m).")
  N: int = 32
  sigmas: tuple[float, ...] = (5e-4, 1e-3)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (32, 32)

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "DensityConfig":
    return cls(**{**TINY, "weights": weights, "models": (TINY_MODEL,), "task": "countdown",
                  **overrides})

  def validate(self) -> None:
    super().validate()
    for margin in self.margins:
      if not math.isfinite(margin):
        raise InputError(f"--margins must be finite numbers, got {margin}.")
    if not self.margins:
      raise InputError("--margins needs at least one margin.")


# Tasks on which both offline bases score between 0 and 1 and their members differ
# (docs/results.md). The reasoning-gym tasks are not among them: SmolLM2-135M never writes the
# <answer> tags they grade; on `subtraction` all its members score the same.
DISCORDANCE_TASKS = ("arithmetic", "addition", "multiplication")


@dataclasses.dataclass(frozen=True)
class DiscordanceConfig(ModelsConfig):
  """Spectral discordance of N members over M tasks, per model (the paper's Figure 4)."""
  tasks: tuple[str, ...] = configs.setting(
      DISCORDANCE_TASKS, "Registered task names, M >= 2, distinct.")
  clusters: int = configs.setting(3, "k of the k-means clustering of performance vectors.")
  spectra_shown: int = configs.setting(100, "Seeds drawn in spectra_<model>.png (>= 1).")
  N: int = 16
  sigmas: tuple[float, ...] = (1e-3,)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (16, 32)

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "DiscordanceConfig":
    return cls(**{**TINY, "weights": weights, "models": (TINY_MODEL,), "N": 6,
                  "tasks": ("countdown", "basic_arithmetic", "letter_counting"), "clusters": 2,
                  "sigmas": (0.05, 0.2), "members_per_batch": 3, **overrides})

  def validate(self) -> None:
    super().validate()
    if len(self.tasks) < 2:
      raise InputError("--tasks needs at least two tasks for spectral discordance.")
    if len(set(self.tasks)) != len(self.tasks):
      raise InputError(f"--tasks names a task twice: {','.join(self.tasks)}.")
    if self.N < 2:
      raise InputError(f"--N must be at least 2, got {self.N}.")
    if not 1 <= self.clusters <= self.N:
      raise InputError(f"--clusters must be between 1 and N={self.N}, got {self.clusters}.")
    if self.spectra_shown < 1:
      raise InputError(f"--spectra_shown must be at least 1, got {self.spectra_shown}.")


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


def score_base_and_members(config: ScoringConfig, gen: generate.Generator,
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


# ---------------------------------------------------------------------------------------------
# RandOpt


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


def run_randopt(config: RandOptConfig, workdir: str) -> dict:
  """Scores N members, keeps the top K, writes `topk.json` and test accuracies per K.

  Returns (and writes to results.json): base, top-1, majority-vote ensemble per K and oracle
  pass@K test accuracies, the train-score distribution, the run's identity and its execution
  plan.
  """
  config = config.planned()
  with model_task_run(config, workdir, "randopt") as (run_dir, loaded, train_set, test_set, gen):
    task, train, test = train_set.task, train_set.examples, test_set.examples
    base_test = run_dir.cached_json("base_test", lambda: scoring.score_base(
        gen, [test_set], keep_completions=config.keep_completions))
    if config.halving_eta:
      base, seeds, sigmas, members, selection = _halving(config, loaded, gen, train_set,
                                                         run_dir)
      distribution = None  # most members saw a first slice only
    else:
      base, seeds, sigmas, records = score_base_and_members(config, gen, [train_set], run_dir)
      train_scores = np.asarray([r["reward"][0] for r in records])
      order = randopt.top_k(train_scores, [max(config.ks)])[max(config.ks)]
      members = [{"seed": int(seeds[i]), "sigma": float(sigmas[i]),
                  "train_score": float(train_scores[i]),
                  "train_accuracy": float(records[i]["accuracy"][0])} for i in order]
      selection = {"forward_flops": float(sum(r["forward_flops"] for r in records)),
                   "example_evaluations": config.N * len(train)}
      distribution = {"mean": float(train_scores.mean()), "max": float(train_scores.max()),
                      **metrics.versus_base(train_scores, base["reward"][0],
                                            ceiling=task.max_reward)}
    run_dir.write("topk", {
        "model": config.model, "weights": config.weights,
        "weights_source": loaded.source.describe(), "dtype": config.dtype, "task": config.task,
        "perturbation": gen.perturb.to_json(),
        "keyed_leaves": perturb.keyed_leaves(loaded.params), "members": members})
    result = {
        **config.identity(), "weights_source": loaded.source.describe(),
        "execution_plan": config.plan, "train_size": len(train), "test_size": len(test),
        "base": {"train_score": base["reward"][0], "train_accuracy": base["accuracy"][0],
                 "test_accuracy": base_test["accuracy"][0]},
        "train_score_distribution": distribution, "selection": selection,
        "truncated": truncation(config, base, [] if config.halving_eta else records,
                                config.model),
        **_evaluate_top(config, gen, test_set, members, run_dir),
    }
    run_dir.write("results", result)
  return result


def _halving(config: RandOptConfig, loaded: registry.LoadedModel, gen: generate.Generator,
             train_set: scoring.TaskSet, run_dir: RunDir):
  """The top max(ks) by successive halving over the train examples, each rung resumable. A
  rung's generation batch is at most its number of examples (a padded batch would cost what
  the whole train set costs).

  Returns:
    (base summary, seeds [N], sigmas [N], top members best first, the selection's record:
     rungs, example evaluations and forward FLOPs).
  """
  base = run_dir.cached_json("base", lambda: scoring.score_base(
      gen, [train_set], keep_completions=config.keep_completions))
  seeds, sigmas = population.draw_candidates(config.seed, config.N, config.sigmas)
  examples = train_set.examples
  rungs = halving.schedule(config.N, len(examples), eta=config.halving_eta,
                           min_examples=config.halving_min_examples, keep=max(config.ks))

  def score_slice(rung):
    part = scoring.TaskSet(train_set.task, examples[rung.start:rung.stop])
    size = len(part.examples)
    rung_gen = dataclasses.replace(config, batch_size=min(config.batch_size, size)).generator(
        loaded)
    chunks = scoring.member_chunks(rung_gen, [part], members_per_batch=config.members_per_batch,
                                   mesh=config.mesh())

    def score_chunk(chunk_seeds, chunk_sigmas):
      for piece, out in chunks(chunk_seeds, chunk_sigmas):
        yield piece, {"score_sum": [r[0] * size for r in out["reward"]],
                      "correct_sum": [a[0] * size for a in out["accuracy"]],
                      "weight": [size] * len(out["reward"]),
                      "forward_flops": out["forward_flops"]}
    return score_chunk
  out = halving.search(score_slice, seeds, sigmas, rungs,
                       [run_dir.store(f"rung{r.index}") for r in rungs])
  correct = {}
  for records in out["records"]:
    for record in records:
      key = storage.member_key(record)
      correct[key] = correct.get(key, 0.0) + record["correct_sum"]
  members = [{"seed": int(seeds[i]), "sigma": float(sigmas[i]),
              "train_score": float(out["scores"][i]),
              "train_accuracy": correct[(int(seeds[i]), float(sigmas[i]))] / len(examples)}
             for i in out["order"][:max(config.ks)]]
  selection = {"rungs": out["rungs"], "example_evaluations": out["evaluations"],
               "forward_flops": float(sum(r["forward_flops"] for records in out["records"]
                                          for r in records))}
  return base, seeds, sigmas, members, selection


def load_topk(run_dir: str) -> dict:
  """A finished RandOpt run's `topk.json`, with its perturbation as a `PerturbSpec`."""
  run = RunDir(run_dir)
  if not run.exists("topk"):
    raise InputError(f"{run_dir} holds no topk.json; finish a randopt run there first.")
  saved = run.read("topk")
  return {**saved, "perturbation": PerturbSpec.from_json(saved["perturbation"])}


def check_rebuildable(saved: dict, loaded: registry.LoadedModel, run_dir: str) -> None:
  """`load_topk`'s members can be rebuilt on `loaded`: the same leaves key their noise."""
  perturb.check_keyed_leaves(saved.get("keyed_leaves"), loaded.params, f"{run_dir}/topk.json")


def _noise_settings(spec: PerturbSpec) -> dict:
  """The `_NOISE_FIELDS` of a config that rebuilds members drawn under `spec`."""
  return {field: getattr(spec, field) for field in _NOISE_FIELDS}


def saved_config(run_dir: str) -> tuple[dict, RandOptConfig]:
  """A finished RandOpt run's `load_topk` and the config that rebuilds its members and its
  splits (model, task, weights, dtype, noise, seed, sizes: its `spec.json`); execution settings
  are the defaults."""
  saved = load_topk(run_dir)
  run = RunDir(run_dir)
  if not run.exists("spec"):
    raise InputError(f"{run_dir} holds no spec.json; give the directory of a randopt run.")
  identity = run.read("spec")
  if identity.get("experiment") != RandOptConfig.__name__:
    raise InputError(f"{run_dir} is a {identity.get('experiment')} run, not a randopt run.")
  settings = {k: tuple(v) if isinstance(v, list) else v for k, v in identity.items()
              if k not in ("perturbation", "experiment")}
  return saved, RandOptConfig(**{**settings, **_noise_settings(saved["perturbation"])})


def saved_run(run_dir: str, **execution) -> tuple[dict, RandOptConfig]:
  """`saved_config`, planned, with `execution` settings (batch sizes, member axis; also
  max_new_tokens) replaced."""
  saved, config = saved_config(run_dir)
  return saved, dataclasses.replace(config, **execution).planned()


# What a re-evaluation takes from the saved run whatever the flags say: the members' identity.
MEMBER_SETTINGS = ("model", "task", "weights", "N", "sigmas") + _NOISE_FIELDS


def reevaluate_randopt(config: RandOptConfig, topk_dir: str, workdir: str,
                       overridden: Sequence[str] = ()) -> dict:
  """The saved top-K of `topk_dir` voted on a test set. `config` is the saved run's
  (`saved_config`) with the settings named in `overridden` changed (e.g. seed, test_size,
  max_new_tokens; recorded in the results, since they make its accuracy differ from the
  search's own); model, task, weights, dtype and perturbation are always the saved run's.
  Nothing is re-scored on train."""
  saved = load_topk(topk_dir)
  changed = [name for name in overridden if name in MEMBER_SETTINGS]
  if changed:
    raise InputError(f"--{changed[0]} cannot change in a re-evaluation: the saved members are "
                     f"those of {topk_dir}'s run; drop it.")
  if max(config.ks) > len(saved["members"]):
    raise InputError(f"{topk_dir} holds a top-{len(saved['members'])}, fewer than "
                     f"K={max(config.ks)}.")
  config = dataclasses.replace(config, model=saved["model"], task=saved["task"],
                               weights=saved["weights"], dtype=saved["dtype"],
                               **_noise_settings(saved["perturbation"]), plan=None).planned()
  config.find_inputs()
  _, test = config.splits(config.task, config.test_size)
  run_dir = RunDir.prepare(workdir)
  run_dir.claim({**config.identity(), "reevaluated": topk_dir})
  with run_dir.session("randopt", {**dataclasses.asdict(config), "reevaluated": topk_dir}):
    logging.info("%s", config.plan["summary"])
    if overridden:
      logging.info("re-evaluating %s with its settings but %s", topk_dir, ", ".join(overridden))
    loaded = config.load(config.model)
    check_rebuildable(saved, loaded, topk_dir)
    gen = config.generator(loaded, saved["perturbation"])
    test_set = scoring.TaskSet(TASKS.get(config.task), test)
    result = {"reevaluated": topk_dir, "overridden": list(overridden), "members": saved["members"],
              "test_size": len(test), "execution_plan": config.plan,
              **_evaluate_top(config, gen, test_set, saved["members"], run_dir)}
    run_dir.write("results", result)
  return result


def _evaluate_top(config: RandOptConfig, gen: generate.Generator, test_set: scoring.TaskSet,
                  members: list[dict], run_dir: RunDir) -> dict:
  """Test completions of the ranked members (resumable) -> accuracies per K."""
  seeds = np.asarray([m["seed"] for m in members], np.int64)
  sigmas = np.asarray([m["sigma"] for m in members], np.float64)
  records = scoring.score_members(gen, [test_set], seeds, sigmas, run_dir.store("test_members"),
                                  members_per_batch=config.members_per_batch,
                                  mesh=config.mesh(), keep_examples=True,
                                  keep_completions=config.keep_completions)
  votes = [r["votes"][0] for r in records]
  correct = [r["correct"][0] for r in records]
  return {
      "top1_accuracy": float(np.mean(correct[0])),
      "ensemble_accuracy": {str(k): randopt.ensemble_accuracy(votes[:k], correct[:k])
                            for k in config.ks},
      "oracle_pass_at_k": {str(k): float(np.mean(np.any(correct[:k], axis=0))) for k in config.ks},
      "member_test_accuracy": [float(np.mean(c)) for c in correct],
  }


# ---------------------------------------------------------------------------------------------
# Solution density


def run_density(config: DensityConfig, workdir: str) -> dict:
  """δ(m) per model × sigma on the train examples, against the base, with intervals.

  Returns (and writes to results.json) one point per model: parameters, base reward and
  accuracy, δ(m) per sigma and margin (reward and accuracy, Wilson 95%), the fractions of
  members strictly above / tied with / below the base, and whether the base is at the floor or
  ceiling (where δ(0) says nothing). Writes `scores_<model>.png` and `density_vs_size.png`.
  """
  config = config.planned()
  config.find_inputs()
  train, _ = config.splits(config.task, 1)  # density scores the train examples only
  run_dir = RunDir.prepare(workdir)
  run_dir.claim(config.identity())
  with run_dir.session("density", dataclasses.asdict(config)):
    logging.info("%s", config.plan["summary"])
    task = TASKS.get(config.task)
    task_set = scoring.TaskSet(task, train)
    points = []
    for name in config.models:
      loaded = config.load(name)
      member_dir = run_dir.child(name)
      base, _, sigmas, records = score_base_and_members(config, config.generator(loaded),
                                                        [task_set], member_dir)
      rewards = np.asarray([r["reward"][0] for r in records])  # [N]
      accuracy = np.asarray([r["accuracy"][0] for r in records])  # [N]
      points.append({**_density_point(config, name, loaded, base, sigmas, rewards, accuracy,
                                      task.max_reward),
                     "truncated": truncation(config, base, records, name)})
      _plot_scores(run_dir, config, points[-1], sigmas, rewards)
      del loaded
    result = {**config.identity(), "execution_plan": config.plan, "points": points}
    run_dir.write("results", result)
    _plot_density(run_dir, config, points)
  return result


def _density_point(config, name, loaded, base, sigmas, rewards, accuracy, max_reward) -> dict:
  point = {"model": name, "params": loaded.config.num_params,
           "weights_source": loaded.source.describe(),
           "base_reward": base["reward"][0], "base_accuracy": base["accuracy"][0],
           "reward_quantiles": np.quantile(rewards, [0, 0.25, 0.5, 0.75, 1]).tolist(),
           "member_accuracy_mean": float(accuracy.mean())}
  for score, values, ceiling in (("reward", rewards, max_reward), ("accuracy", accuracy, 1.0)):
    point[f"density_{score}"] = metrics.solution_density(values, point[f"base_{score}"],
                                                         config.margins, sigmas=sigmas)
    point[f"density_{score}_all_sigmas"] = metrics.solution_density(
        values, point[f"base_{score}"], config.margins)
    point[f"versus_base_{score}"] = metrics.versus_base(values, point[f"base_{score}"],
                                                         ceiling=ceiling)
  logging.info("%s: base reward %.3f accuracy %.3f; members above base %.2f, tied %.2f%s", name,
               point["base_reward"], point["base_accuracy"],
               point["versus_base_reward"]["above"]["fraction"],
               point["versus_base_reward"]["tied"]["fraction"],
               _at_bound_note(point["versus_base_reward"]["base_at"]))
  return point


def _at_bound_note(base_at: Optional[str]) -> str:
  return "" if base_at is None else f" (the base is at the {base_at}: δ(0) counts ties)"


def _plot_scores(run_dir: RunDir, config: DensityConfig, point: dict, sigmas, rewards) -> None:
  plotting.score_histogram(
      run_dir.figure(f"scores_{point['model']}"),
      {f"σ={s:g}": rewards[sigmas == s] for s in sorted(set(sigmas.tolist()))},
      point["base_reward"], f"mean reward on {config.train_size} {config.task} examples",
      f"{point['model']}: perturbations vs base{_at_bound_note(point['versus_base_reward']['base_at'])}")


def _plot_density(run_dir: RunDir, config: DensityConfig, points: list[dict]) -> None:
  """Against parameters, over all of a model's members: δ(0) (at least the base: above or
  tied), the fraction strictly above, and δ at the largest margin; per-sigma values are in
  results.json."""
  ordered = sorted(points, key=lambda p: p["params"])
  at = lambda p, m: next(r for r in p["density_reward_all_sigmas"] if r["margin"] == m)
  rows = {"δ(m=0): at least the base": [at(p, 0.0) for p in ordered] if 0.0 in config.margins
          else None,
          "strictly above the base": [
              {"density": p["versus_base_reward"]["above"]["fraction"],
               **{k: p["versus_base_reward"]["above"][k] for k in ("ci_low", "ci_high")}}
              for p in ordered],
          f"δ(m={max(config.margins):g})": [at(p, max(config.margins)) for p in ordered]}
  curves = {label: tuple(np.asarray([r[k] for r in values]) for k in ("density", "ci_low", "ci_high"))
            for label, values in rows.items() if values is not None}
  notes = [f"{p['model']}: base at the {p['versus_base_reward']['base_at']}" for p in ordered
           if p["versus_base_reward"]["base_at"]]
  plotting.curves_vs_scale(
      run_dir.figure("density_vs_size"), [p["params"] for p in ordered], curves, "parameters",
      "fraction of perturbations (95% Wilson)",
      f"{config.task}: N={config.N} per model, σ ∈ {{{', '.join(f'{s:g}' for s in config.sigmas)}}}",
      note="; ".join(notes))


# ---------------------------------------------------------------------------------------------
# Spectral discordance


def run_discordance(config: DiscordanceConfig, workdir: str) -> dict:
  """N members × M tasks per model -> D (with its bound M/(M−1)), PCA clusters, D vs size.

  Scores are mean rewards on each task's train examples. Writes per model
  `correlation_<model>.png`, `spectra_<model>.png`, `pca_<model>.png`, and
  `discordance_vs_size.png`.
  """
  config = config.planned()
  config.find_inputs()
  task_sets = [scoring.TaskSet(TASKS.get(name), config.splits(name, 1)[0])
               for name in config.tasks]
  run_dir = RunDir.prepare(workdir)
  run_dir.claim(config.identity())
  with run_dir.session("discordance", dataclasses.asdict(config)):
    logging.info("%s", config.plan["summary"])
    points = []
    for name in config.models:
      loaded = config.load(name)
      base, _, _, records = score_base_and_members(config, config.generator(loaded), task_sets,
                                                   run_dir.child(name))
      points.append({**_discordance_point(run_dir, config, name, loaded, base, records),
                     "truncated": truncation(config, base, records, name)})
      del loaded
    result = {**config.identity(), "execution_plan": config.plan, "points": points}
    run_dir.write("results", result)
    _plot_discordance(run_dir, config, points)
  return result


def _discordance_point(run_dir, config, name, loaded, base, records) -> dict:
  rewards = np.asarray([r["reward"] for r in records])  # [N, M]
  accuracy = np.asarray([r["accuracy"] for r in records])
  by_reward = metrics.spectral_discordance(rewards)
  by_reward["interval_95"] = metrics.discordance_interval(rewards, seed=config.seed)
  gains = rewards - np.asarray(base["reward"])[None]  # performance vectors relative to the base
  projected, explained = _pca(gains)
  _, labels = vq.kmeans2(projected, config.clusters, seed=config.seed, minit="++")
  point = {"model": name, "params": loaded.config.num_params,
           "weights_source": loaded.source.describe(), "base_reward": base["reward"],
           "base_accuracy": base["accuracy"], "discordance_reward": by_reward,
           "discordance_accuracy": metrics.spectral_discordance(accuracy),
           "base_at_bound": {t: metrics.versus_base(rewards[:, j], base["reward"][j],
                                                    ceiling=TASKS.get(t).max_reward)["base_at"]
                             for j, t in enumerate(config.tasks)},
           "percentile_ranks_reward": metrics.percentile_ranks(rewards).tolist(),  # [N, M]
           "pca_explained_variance": explained, "clusters": labels.tolist(),
           "mean_gain_per_cluster": [gains[labels == c].mean(0).tolist() if np.any(labels == c)
                                     else None for c in range(config.clusters)]}
  if by_reward["correlation"] is not None:
    plotting.correlation_heatmap(run_dir.figure(f"correlation_{name}"),
                                 np.asarray(by_reward["correlation"]), config.tasks,
                                 f"{name}: rank correlation, D = {by_reward['discordance']:.3f}")
  shown = slice(0, config.spectra_shown)
  plotting.spectra(run_dir.figure(f"spectra_{name}"), gains[shown], labels[shown], config.tasks,
                   f"{name}: performance spectra of perturbations (by cluster)")
  plotting.clusters_2d(run_dir.figure(f"pca_{name}"), projected, labels,
                       f"{name}: PCA of performance vectors, k-means clusters")
  logging.info("%s: D (reward) = %s of bound %.3f", name, by_reward["discordance"],
               by_reward["upper_bound"])
  return point


def _pca(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
  """2-D principal components of the rows of x [N, M]; explained variance ratios."""
  centered = x - x.mean(0)
  _, s, vt = np.linalg.svd(centered, full_matrices=False)
  total = float((s**2).sum()) or 1.0
  return centered @ vt[:2].T, [float(v**2 / total) for v in s[:2]]


def _plot_discordance(run_dir: RunDir, config: DiscordanceConfig, points: list[dict]) -> None:
  ordered = [p for p in sorted(points, key=lambda p: p["params"])
             if p["discordance_reward"]["discordance"] is not None]
  undefined = [p["model"] for p in points if p["discordance_reward"]["discordance"] is None]
  values = np.asarray([p["discordance_reward"]["discordance"] for p in ordered])
  intervals = [p["discordance_reward"]["interval_95"] or (np.nan, np.nan) for p in ordered]
  bound = len(config.tasks) / (len(config.tasks) - 1)
  plotting.curves_vs_scale(
      run_dir.figure("discordance_vs_size"), [p["params"] for p in ordered],
      {"D (reward ranks), bootstrap 95%": (values, np.asarray([i[0] for i in intervals]),
                                           np.asarray([i[1] for i in intervals]))},
      "parameters", "spectral discordance D", f"{len(config.tasks)} tasks, N={config.N} per model",
      hline=(bound, "bound M/(M−1)"), ylim=(0.0, 1.05 * bound),
      note="" if not undefined else f"undefined (a constant task): {', '.join(undefined)}")
