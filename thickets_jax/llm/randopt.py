r"""RandOpt on a language model: score N members on a task's train split, keep the top K, vote
on its test split; re-evaluate a saved top-K.

  from thickets_jax.llm import randopt
  result = randopt.run_randopt(randopt.RandOptConfig(task="countdown", N=64, ks=(1, 8)), "/tmp/ro")
"""

import dataclasses
from typing import Sequence

import numpy as np
from absl import logging

from thickets_jax import configs, halving, metrics, perturb, population, randopt, storage
from thickets_jax.errors import InputError
from thickets_jax.llm import registry, scoring
from thickets_jax.llm.generator import Generator
from thickets_jax.llm.session import (NOISE_FIELDS, TINY, TINY_MODEL, OneModelConfig,
                                      model_task_run, score_base_and_members, truncation)
from thickets_jax.perturb import PerturbSpec
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir


@dataclasses.dataclass(frozen=True)
class RandOptConfig(OneModelConfig):
  """RandOpt: score N members on `train_size` examples, keep the top max(ks), vote on the test
  split. With `halving_eta` > 1 the selection is successive halving (`thickets_jax.halving`)."""
  ks: tuple[int, ...] = configs.setting((1, 4), "Top-K sizes, e.g. 1,4,8.", flag="K")
  halving_eta: float = configs.setting(
      0.0, "Successive halving: keep 1/eta per rung (0: off, select on all train examples).")
  halving_min_examples: int = configs.setting(
      4, "Successive halving: train examples of the first rung.")
  average_probabilities: bool = configs.setting(
      False, "Also test, per K > 1, the ensemble that decodes each token from the mean of the "
      "top K's next-token probabilities (K members' test cost each).")

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


def _halving(config: RandOptConfig, loaded: registry.LoadedModel, gen: Generator,
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
  """The `NOISE_FIELDS` of a config that rebuilds members drawn under `spec`."""
  return {field: getattr(spec, field) for field in NOISE_FIELDS}


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
MEMBER_SETTINGS = ("model", "task", "weights", "N", "sigmas") + NOISE_FIELDS


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


def _evaluate_top(config: RandOptConfig, gen: Generator, test_set: scoring.TaskSet,
                  members: list[dict], run_dir: RunDir) -> dict:
  """Test completions of the ranked members (resumable) -> accuracies per K: top-1, the
  majority vote of the top K, the oracle pass@K and, for K > 1, the averaged-weights model of
  the top K (`perturb.averaged_member`) and, with `average_probabilities`, the
  probability-averaging ensemble; and the test FLOPs of each."""
  seeds = np.asarray([m["seed"] for m in members], np.int64)
  sigmas = np.asarray([m["sigma"] for m in members], np.float64)
  records = scoring.score_members(gen, [test_set], seeds, sigmas, run_dir.store("test_members"),
                                  members_per_batch=config.members_per_batch,
                                  mesh=config.mesh(), keep_examples=True,
                                  keep_completions=config.keep_completions)
  votes = [r["votes"][0] for r in records]
  correct = [r["correct"][0] for r in records]

  def averaged_weights(k):  # θ + the mean displacement of the top k: one model's test cost
    params = perturb.averaged_member(gen.params, seeds[:k], sigmas[:k], gen.perturb)
    return scoring.score_base(gen, [test_set], params=params,
                              keep_completions=config.keep_completions)

  def probability_average(k):  # k members decode together: k members' test cost
    return scoring.score_averaged(gen, [test_set], seeds[:k], sigmas[:k],
                                  keep_completions=config.keep_completions)

  ensembles = {"averaged_weights": averaged_weights}
  if config.average_probabilities:
    ensembles["probability_average"] = probability_average
  scored = {name: {str(k): run_dir.cached_json(f"{name}_top{k}_test", lambda k=k, f=f: f(k))
                   for k in config.ks if k > 1} for name, f in ensembles.items()}
  test_flops = [r["forward_flops"] for r in records]
  return {
      "top1_accuracy": float(np.mean(correct[0])),
      "ensemble_accuracy": {str(k): randopt.ensemble_accuracy(votes[:k], correct[:k])
                            for k in config.ks},
      **{f"{name}_accuracy": {k: r["accuracy"][0] for k, r in rows.items()}
         for name, rows in scored.items()},
      "test_flops": {"top1": test_flops[0],
                     "vote": {str(k): float(sum(test_flops[:k])) for k in config.ks},
                     **{name: {k: r["forward_flops"] for k, r in rows.items()}
                        for name, rows in scored.items()}},
      "oracle_pass_at_k": {str(k): float(np.mean(np.any(correct[:k], axis=0))) for k in config.ks},
      "member_test_accuracy": [float(np.mean(c)) for c in correct],
  }
