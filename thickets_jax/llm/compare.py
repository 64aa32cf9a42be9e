r"""RandOpt against ES and GRPO at matched training FLOPs on one model and task (Figure 1c).

  from thickets_jax.llm import compare
  result = compare.run_compare(compare.CompareConfig(), "/tmp/compare")   # the offline default

Every method shares the model, the train/test split, the reward and the vote protocol, and
each is also majority-voted at test time over K: RandOpt over its top-K members (greedy), the
base, ES and GRPO over K samples at `vote_temperature`. Test accuracy is reported greedy
("single": the base, RandOpt's top-1, the ES / GRPO iterate) and voted, with binomial standard
errors over the test examples, against the training FLOPs spent to reach each point
(`thickets_jax.flops`, from the tokens actually processed). RandOpt is evaluated after the first
N/4, N/2 and N members (the same members: a longer search only adds some), ES and GRPO every
`eval_every` iterations or steps.

The run resumes from its workdir: member scores, ES iterations and GRPO steps are persisted as
they finish, ES and GRPO state is checkpointed with orbax, test evaluations are stored once.
"""

import dataclasses
import time
from typing import Callable, ClassVar

import numpy as np
from absl import logging

from thickets_jax import (checkpoint, configs, flops, metrics, plotting, population, randopt, rng,
                          search)
from thickets_jax.baselines import es, grpo
from thickets_jax.baselines.es import ESConfig
from thickets_jax.baselines.grpo import GRPOConfig
from thickets_jax.errors import InputError
from thickets_jax.llm.generator import Generator
from thickets_jax.registry import Registry
from thickets_jax.llm import registry, scoring
from thickets_jax.llm.session import TINY, TINY_MODEL, OneModelConfig, model_task_run
from thickets_jax.workdir import RunDir



@dataclasses.dataclass(frozen=True)
class CompareConfig(OneModelConfig):
  """The comparison. `N`, `sigmas` are RandOpt's; `es` and `grpo` the baselines' settings.

  The defaults are the offline job (docs/results.md): SmolLM2-135M-Instruct on `arithmetic`
  (base accuracy about 0.25), budgets of roughly equal training FLOPs for the three methods,
  about 20 minutes on 2 CPU cores. ES keeps the reference's σ and α; GRPO keeps its clip, group
  normalisation and AdamW, with lr 1e-5 (the reference's 1e-6 is tuned for batches of 1024×8
  prompts over hundreds of steps and does not move in six small steps).
  """
  task: str = "arithmetic"
  methods: tuple[str, ...] = configs.setting(
      ("base", "randopt", "es", "grpo"), "Methods to compare, from those registered in METHODS.")
  test_size: int = 64
  vote_k: int = configs.setting(
      4, "K of every test-time vote: RandOpt's top-K members, K samples of the others.")
  vote_temperature: float = configs.setting(0.7, "Temperature of the voted samples.")
  N: int = 32
  sigmas: tuple[float, ...] = (5e-4, 1e-3)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (32, 32)  # (train_size, max_new_tokens)
  # ES, GRPO and fine-tuning steps of ~1e-6 would round away in bf16 weights.
  ACCELERATOR_DTYPE: ClassVar[str] = "float32"
  es: ESConfig = configs.setting(ESConfig(population=8), "Evolution strategies.")
  es_iterations: int = configs.setting(4, "ES iterations.")
  grpo: GRPOConfig = configs.setting(
      GRPOConfig(group_size=4, prompts_per_step=8, mini_batch=8, learning_rate=1e-5),
      "GRPO.")
  grpo_steps: int = configs.setting(6, "GRPO steps.")
  eval_every: int = configs.setting(2, "ES iterations / GRPO steps between test evaluations.")
  checkpoint_every: int = configs.setting(1, "ES iterations / GRPO steps between checkpoints.")

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "CompareConfig":
    return cls(**{**TINY, "weights": weights, "model": TINY_MODEL, "task": "countdown",
                  "test_size": 3, "batch_size": 4, "vote_k": 2,
                  "es": ESConfig(population=2, sigma=0.01), "es_iterations": 2,
                  "grpo": GRPOConfig(group_size=2, prompts_per_step=2, mini_batch=1,
                                     micro_batch=2, learning_rate=1e-5),
                  "grpo_steps": 2, "eval_every": 1, **overrides})

  def validate(self) -> None:
    super().validate()
    if not self.methods:
      raise InputError(f"--methods is empty; known: {', '.join(METHODS)}.")
    for method in self.methods:
      METHODS.get(method)
    if len(set(self.methods)) != len(self.methods):
      raise InputError(f"--methods names a method twice: {','.join(self.methods)}.")
    for name in ("test_size", "vote_k", "es_iterations", "grpo_steps", "eval_every",
                 "checkpoint_every"):
      if getattr(self, name) <= 0:
        raise InputError(f"--{name} must be positive, got {getattr(self, name)}.")
    if self.vote_k > self.N and "randopt" in self.methods:
      raise InputError(f"--vote_k {self.vote_k} exceeds the {self.N} RandOpt members (K > N).")
    if not self.vote_temperature > 0:
      raise InputError(f"--vote_temperature must be positive, got {self.vote_temperature}.")


class _Evaluator:
  """Test accuracy of a parameter set, greedy and voted over K samples, stored once per point."""

  def __init__(self, config: CompareConfig, gen: Generator, sampler: Generator,
               test_set: scoring.TaskSet, run_dir: RunDir):
    self.config, self.gen, self.sampler, self.test_set = config, gen, sampler, test_set
    self.store = run_dir.store("evaluations", key=lambda r: r["point"])

  def __call__(self, point: str, method: str, params, train_flops: float, **extra) -> dict:
    if point in self.store:
      return self.store.records[point]
    start, n, k = time.perf_counter(), len(self.test_set.examples), self.config.vote_k
    greedy = scoring.score_base(self.gen, [self.test_set], params=params)
    prompts = [e.prompt for e in self.test_set.examples]
    key = rng.key(self.config.seed, "evaluation")  # every point votes on the same key
    ids = self.sampler.base_token_ids([p for _ in range(k) for p in prompts], key, params=params)
    samples = [scoring.grade([self.sampler.codec.decode(r) for r in ids[i * n:(i + 1) * n]],
                             self.test_set) for i in range(k)]
    vote = randopt.ensemble_accuracy([s["votes"] for s in samples],
                                     [s["correct"] for s in samples])
    lengths = np.asarray([len(x) for x in self.sampler.codec.token_ids(prompts)] * k)
    record = {"point": point, "method": method, "train_flops": float(train_flops),
              "single_accuracy": greedy["accuracy"][0],
              "single_se": metrics.binomial_se(greedy["accuracy"][0], n), "vote_accuracy": vote,
              "vote_se": metrics.binomial_se(vote, n), "test_flops_single": greedy["forward_flops"],
              "test_flops_vote": scoring.forward_flops(self.sampler, lengths, ids),
              "seconds": time.perf_counter() - start, **extra}
    self.store.append([record])
    logging.info("%s: test accuracy %.3f single, %.3f voted over %d (train %.3g FLOPs)", point,
                 record["single_accuracy"], vote, k, train_flops)
    return record


@dataclasses.dataclass(frozen=True)
class Session:
  """What every compared method gets: the planned config, the model, the greedy generator,
  the splits, the shared test evaluator and the comparison's run directory (a method keeps its
  own files in `run_dir.child(<method>)`)."""
  config: CompareConfig
  loaded: registry.LoadedModel
  gen: Generator
  train_set: scoring.TaskSet
  test_set: scoring.TaskSet
  evaluate: _Evaluator
  run_dir: RunDir

  def train_scorer(self, run_dir: RunDir) -> Callable[[search.Ask], search.Scores]:
    """The `search.run` scorer of every member-based method: an ask's members decode the train
    split (or its `ask.examples` slice, in batches no larger than the slice) greedily around
    `ask.center`; their records (reward, accuracy, forward FLOPs) persist in `run_dir`'s store
    `ask.store`, which a rerun reads instead of re-scoring. A slice's score is its reward summed
    over its examples (weight: their count), the whole split's the mean (weight 1)."""
    config = self.config

    def score(ask: search.Ask) -> search.Scores:
      gen, task_set = self.gen, self.train_set
      if ask.examples is not None:
        task_set = scoring.TaskSet(task_set.task, task_set.examples[slice(*ask.examples)])
        size = len(task_set.examples)
        gen = dataclasses.replace(config, batch_size=min(config.batch_size, size)).generator(
            self.loaded, self.gen.perturb)
      records = scoring.score_members(gen, [task_set], ask.seeds, ask.sigmas,
                                      run_dir.store(ask.store),
                                      members_per_batch=config.members_per_batch,
                                      mesh=config.mesh(), params=ask.center)
      rewards = [r["reward"][0] for r in records]
      if ask.examples is None:
        return search.Scores.means(rewards, records)
      return search.Scores(np.asarray(rewards) * size, np.full(len(rewards), float(size)),
                           records)
    return score


# A compared method: Session -> its points, ordered by training FLOPs ({"point", "method",
# "train_flops", "single_accuracy", "single_se", "vote_accuracy", "vote_se", ...}). Adding a
# baseline is one function registered here (with its settings as a sub-config of
# CompareConfig); `--methods` takes the registered names.
METHODS: Registry[Callable[[Session], list[dict]]] = Registry("method")


@METHODS.register("base")
def _base(session: Session) -> list[dict]:
  return [session.evaluate("base", "base", session.loaded.params, 0.0)]


@METHODS.register("randopt")
def _randopt(session: Session) -> list[dict]:
  """Selection over N members; top-K voted (greedy members) after N/4, N/2 and N members."""
  config, test_set, run_dir = session.config, session.test_set, session.run_dir.child("randopt")
  seeds, sigmas = population.draw_candidates(config.seed, config.N, config.sigmas)
  method = search.run(randopt.RandOpt(seeds, sigmas), session.train_scorer(run_dir))
  cost = np.cumsum([r["forward_flops"] for r in method.records])
  points, n = [], len(test_set.examples)
  for count in sorted({max(config.vote_k, config.N // 4), max(config.vote_k, config.N // 2),
                       config.N}):
    top = randopt.top_k(method.scores[:count], [config.vote_k])[config.vote_k]
    tested = scoring.score_members(session.gen, [test_set], seeds[top], sigmas[top],
                                   run_dir.store("test_members"),
                                   members_per_batch=config.members_per_batch, mesh=config.mesh(),
                                   keep_examples=True)
    votes, correct = [r["votes"][0] for r in tested], [r["correct"][0] for r in tested]
    vote = randopt.ensemble_accuracy(votes, correct)
    single = float(np.mean(correct[0]))
    points.append({"point": f"randopt_{count}", "method": "randopt", "members": count,
                   "train_flops": float(cost[count - 1]), "single_accuracy": single,
                   "single_se": metrics.binomial_se(single, n), "vote_accuracy": vote,
                   "vote_se": metrics.binomial_se(vote, n),
                   "test_flops_single": tested[0]["forward_flops"],
                   "test_flops_vote": float(sum(r["forward_flops"] for r in tested))})
  return points


@METHODS.register("es")
def _es(session: Session) -> list[dict]:
  """ES from the base; each iteration's members are scored greedily on the train split."""
  config, run_dir = session.config, session.run_dir.child("es")
  history = run_dir.store("history", key=lambda r: r["iteration"])
  update_flops = flops.es_update_flops(session.gen.config.num_params, config.es.population)
  method = es.ES(session.loaded.params, config.es, iterations=config.es_iterations,
                 seed=config.seed, spec=session.gen.perturb)

  def after_tell(ask: search.Ask, scores: search.Scores) -> None:
    done = method.iteration
    if done - 1 not in history:
      history.append([{"iteration": done - 1, "reward": scores.mean.tolist(),
                       "flops": sum(r["forward_flops"] for r in scores.records) + update_flops}])
    logging.info("ES iteration %d/%d: train reward mean %.3f, max %.3f", done,
                 config.es_iterations, np.mean(scores.mean), np.max(scores.mean))
    if done % config.eval_every == 0 or done == config.es_iterations:
      spent = sum(history.records[i]["flops"] for i in range(done))
      session.evaluate(f"es_{done}", "es", method.state["params"], spent, iteration=done)

  es.run_resumable(method, session.train_scorer(run_dir),
                   checkpoint.TrainingCheckpoints(run_dir.checkpoints), config.checkpoint_every,
                   after_tell)
  return _points(session.evaluate.store, "es")


@METHODS.register("grpo")
def _grpo(session: Session) -> list[dict]:
  config, run_dir = session.config, session.run_dir.child("grpo")
  sampler = config.generator(session.loaded, temperature=config.grpo.temperature)
  trainer = grpo.Trainer(sampler, session.train_set.task, session.train_set.examples,
                         config.grpo, config.seed)
  history = run_dir.store("history", key=lambda r: r["step"])

  def after(done, params, record):
    if done not in history:
      history.append([record])
    logging.info("GRPO step %d/%d: train reward %.3f, loss %.4f, KL %.2g", done,
                 config.grpo_steps, record["reward_mean"], record["loss"], record["kl"])
    if done % config.eval_every == 0 or done == config.grpo_steps:
      spent = sum(history.records[s]["flops"]["total"] for s in range(1, done + 1))
      session.evaluate(f"grpo_{done}", "grpo", params, spent, step=done)

  grpo.train(session.loaded.params, trainer, steps=config.grpo_steps,
             checkpoints=checkpoint.TrainingCheckpoints(run_dir.checkpoints),
             checkpoint_every=config.checkpoint_every, on_step=after)
  return _points(session.evaluate.store, "grpo")


def _points(store, method: str) -> list[dict]:
  return sorted((r for r in store.records.values() if r["method"] == method),
                key=lambda r: r["train_flops"])


def run_compare(config: CompareConfig, workdir: str) -> dict:
  """Runs (or resumes) every method of `config.methods`; writes results.json and
  accuracy_vs_flops.png. Returns the results: per method its points (training FLOPs, test
  accuracy single and voted with SEs, test FLOPs) and wall time."""
  config = config.planned()
  with model_task_run(config, workdir, "compare") as (run_dir, loaded, train_set, test_set, gen):
    sampler = config.generator(loaded, temperature=config.vote_temperature)
    session = Session(config, loaded, gen, train_set, test_set,
                      _Evaluator(config, gen, sampler, test_set, run_dir), run_dir)
    results = {}
    for method in config.methods:
      start = time.perf_counter()
      logging.info("--- %s", method)
      results[method] = {"points": METHODS.get(method)(session),
                         "wall_s_this_invocation": time.perf_counter() - start}
    result = {**config.identity(), "weights_source": loaded.source.describe(),
              "num_params": loaded.config.num_params,
              "train_size": len(train_set.examples), "test_size": len(test_set.examples),
              "methods": results, "table": _table(results)}
    run_dir.write("results", result)
    _plot(run_dir, config, results)
  return result


def _table(results: dict) -> list[dict]:
  """One row per method: its last point (the base: its only one)."""
  return [{"method": m, **{k: r["points"][-1][k] for k in
                           ("train_flops", "single_accuracy", "single_se", "vote_accuracy",
                            "vote_se", "test_flops_vote")},
           "wall_s_this_invocation": r["wall_s_this_invocation"]}
          for m, r in results.items()]


def _plot(run_dir: RunDir, config: CompareConfig, results: dict) -> None:
  levels, curves = {}, {}
  for method, r in results.items():
    points = r["points"]
    if method == "base":
      levels[f"base, vote over {config.vote_k} samples"] = (points[0]["vote_accuracy"],
                                                             points[0]["vote_se"])
      levels["base, greedy"] = (points[0]["single_accuracy"], points[0]["single_se"])
      continue
    curves[f"{method}, vote over {config.vote_k}"] = tuple(
        np.asarray([p[k] for p in points]) for k in ("train_flops", "vote_accuracy", "vote_se"))
  plotting.metric_vs_flops(
      run_dir.figure("accuracy_vs_flops"), curves, levels, "test accuracy (± SE)",
      f"{config.model} on {config.task}: {config.train_size} train / {config.test_size} test")

