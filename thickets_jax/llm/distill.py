r"""Distillation, or iterative RandOpt: the top-K ensemble teaches the base, then search again.

Round r (1..R), around the current base θ_{r−1} (θ₀ the pretrained model):
  1. search: N members scored greedily on the train split (RandOpt; round 1 draws the members
     `experiments.randopt` would, later rounds draw fresh ones from (seed, r));
  2. teach: the top-K members answer every train prompt; where their majority vote (the search's
     vote key and tie rule) is correct, the completion of the best-ranked member that cast it is
     a target (rejection sampling on train);
  3. fine-tune θ_{r−1} on the targets (`sft`: full parameters or LoRA, optax AdamW), giving θ_r;
  4. evaluate θ_r greedily on train and test, and the round's top-K vote on test.

Training FLOPs per round = the search's and the teacher's forwards (`scoring.forward_flops`)
plus 3× a forward over the targets per epoch (forward and backward). Every stage persists as it
finishes (members, teacher targets, orbax checkpoints of the fine-tuning, evaluations) and a
killed run resumes there.
"""

import dataclasses
from typing import ClassVar

import numpy as np
from absl import logging

from thickets_jax import checkpoint, configs, flops, metrics, plotting, population, randopt
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, scoring, session, sft
from thickets_jax.llm.generator import Generator
from thickets_jax.llm.sft import SFTConfig
from thickets_jax.workdir import RunDir


@dataclasses.dataclass(frozen=True)
class DistillConfig(session.OneModelConfig):
  """The search (`OneModelConfig`) plus K teachers, rounds and the fine-tuning (`sft`)."""
  task: str = "arithmetic"
  K: int = configs.setting(4, "Teachers: the top-K members that vote.")
  test_size: int = 64
  rounds: int = configs.setting(2, "Rounds of search -> distil.")
  N: int = 16
  sigmas: tuple[float, ...] = (5e-4, 1e-3)
  batch_size: int = 32
  OFFLINE_PROTOCOL: ClassVar[tuple[int, int]] = (32, 32)  # (train_size, max_new_tokens)
  # ES, GRPO and fine-tuning steps of ~1e-6 would round away in bf16 weights.
  ACCELERATOR_DTYPE: ClassVar[str] = "float32"
  sft: SFTConfig = configs.setting(SFTConfig(), "The fine-tuning of each round.")

  @classmethod
  def tiny(cls, weights: str, **overrides) -> "DistillConfig":
    return cls(**{**session.TINY, "weights": weights, "model": session.TINY_MODEL, "K": 2,
                  "test_size": 3, "rounds": 2,
                  "sft": SFTConfig(batch_size=2, micro_batch=1, epochs=2), **overrides})

  def validate(self) -> None:
    super().validate()
    if self.rounds <= 0:
      raise InputError(f"--rounds must be positive, got {self.rounds}.")
    if self.test_size <= 0:
      raise InputError(f"--test_size must be positive, got {self.test_size}.")
    randopt.validate_top_k((self.K,), self.N)


def round_candidates(config: DistillConfig, round_: int) -> tuple[np.ndarray, np.ndarray]:
  """Round 1: `experiments.randopt`'s members; round r > 1: fresh ones from (seed, r)."""
  root = config.seed if round_ == 1 else [config.seed, round_]
  return population.draw_candidates(root, config.N, config.sigmas)


def teach(gen: Generator, train_set: scoring.TaskSet, members: list[dict], params,
          members_per_batch: int) -> dict:
  """The top-K members' voted, correct train completions as token targets.

  Returns:
    {targets: [{example, rank, ids [T]}], voted_accuracy, forward_flops}.
  """
  prompts = [e.prompt for e in train_set.examples]
  seeds = np.asarray([m["seed"] for m in members], np.int64)
  sigmas = np.asarray([m["sigma"] for m in members], np.float64)
  ids = np.concatenate([out for _, out in gen.population_token_ids(
      seeds, sigmas, prompts, members_per_batch=members_per_batch, params=params)])  # [K, n, T]
  texts = [[gen.codec.decode(row) for row in member] for member in ids]
  task = train_set.task
  votes = [[task.vote_key(t, e.gold) for t, e in zip(member, train_set.examples)]
           for member in texts]
  targets = []
  for i, (winner, example) in enumerate(zip(randopt.vote_winners(votes), train_set.examples)):
    if winner is not None and task.correct(texts[winner][i], example.gold):
      targets.append({"example": i, "rank": winner + 1, "ids": ids[winner, i].tolist()})
  lengths = np.asarray([len(x) for x in gen.codec.token_ids(prompts)])
  return {"targets": targets, "voted_accuracy": len(targets) / len(prompts),
          "forward_flops": sum(scoring.forward_flops(gen, lengths, member) for member in ids)}


def run_distill(config: DistillConfig, workdir: str) -> dict:
  """R rounds of search → teach → fine-tune → evaluate; returns (and writes) results.json
  and `accuracy_by_round.png`."""
  config = config.planned()
  with session.model_task_run(config, workdir, "distill") as (run_dir, loaded, train_set, test_set,
                                                          gen):
    params = loaded.params
    evaluate = lambda p: {"train": scoring.score_base(gen, [train_set], params=p),
                          "test": scoring.score_base(gen, [test_set], params=p)}
    start = run_dir.cached_json("base_evaluation", lambda: evaluate(params))
    rounds = [{"round": 0, **_accuracies(start, len(test_set.examples)), "training_flops": 0.0}]
    total_flops = 0.0
    for round_ in range(1, config.rounds + 1):
      round_dir = run_dir.child(f"round{round_}")
      record, params = _round(config, round_, round_dir, gen, train_set, test_set, params,
                              loaded.config)
      total_flops += record["flops"]["total"]
      evaluation = round_dir.cached_json("evaluation", lambda p=params: evaluate(p))
      rounds.append({**record, **_accuracies(evaluation, len(test_set.examples)),
                     "training_flops": total_flops})
      logging.info("round %d: %d targets; train %.3f test %.3f (teacher vote test %.3f); "
                   "%.3g training FLOPs so far", round_, record["targets"],
                   rounds[-1]["train_accuracy"], rounds[-1]["test_accuracy"],
                   record["teacher_test_vote_accuracy"], total_flops)
    result = {**config.identity(), "weights_source": loaded.source.describe(),
              "train_size": len(train_set.examples), "test_size": len(test_set.examples),
              "rounds": rounds}
    run_dir.write("results", result)
    _plot(run_dir, config, rounds)
  return result


def _accuracies(evaluation: dict, test_size: int) -> dict:
  test = evaluation["test"]["accuracy"][0]
  return {"train_accuracy": evaluation["train"]["accuracy"][0], "test_accuracy": test,
          "test_se": metrics.binomial_se(test, test_size),
          "evaluation_flops": evaluation["train"]["forward_flops"] +
                              evaluation["test"]["forward_flops"]}


def _round(config: DistillConfig, round_: int, round_dir: RunDir, gen, train_set, test_set,
           params, model_config) -> tuple[dict, object]:
  """One round's search, teacher and fine-tuning from `params` -> (record, new params)."""
  seeds, sigmas = round_candidates(config, round_)
  records = scoring.score_members(gen, [train_set], seeds, sigmas, round_dir.store(),
                                  members_per_batch=config.members_per_batch, mesh=config.mesh(),
                                  params=params, keep_completions=config.keep_completions)
  rewards = np.asarray([r["reward"][0] for r in records])
  top = [{"seed": int(seeds[i]), "sigma": float(sigmas[i]), "train_score": float(rewards[i])}
         for i in randopt.top_k(rewards, [config.K])[config.K]]
  teacher = round_dir.cached_json("teacher", lambda: teach(
      gen, train_set, top, params, config.members_per_batch))
  test_records = scoring.score_members(
      gen, [test_set], np.asarray([m["seed"] for m in top], np.int64),
      np.asarray([m["sigma"] for m in top], np.float64), round_dir.store("test_members"),
      members_per_batch=config.members_per_batch, params=params, keep_examples=True)
  vote = randopt.ensemble_accuracy([r["votes"][0] for r in test_records],
                                   [r["correct"][0] for r in test_records])
  targets = teacher["targets"]
  sft_flops = 0.0
  if targets:
    prompts = [train_set.examples[t["example"]].prompt for t in targets]
    rows = generate.training_rows(gen.codec, prompts, np.asarray([t["ids"] for t in targets]))
    sft_config = config.sft
    total_steps = sft.steps(len(targets), sft_config)
    params = sft.fine_tune(
        model_config, params, rows, sft_config, seed=config.seed * 1000 + round_,
        checkpoints=checkpoint.TrainingCheckpoints(round_dir.checkpoints),
        checkpoint_every=total_steps,
        on_step=lambda step, stats: logging.info("round %d fine-tuning step %d/%d: loss %.4f",
                                                 round_, step, total_steps, stats["loss"]))
    sft_flops = 3.0 * config.sft.epochs * flops.sequence_flops(model_config, rows["mask"].sum(1))
  else:
    logging.warning("round %d: the top-%d vote is right on no train example; nothing to "
                    "distil, the base is kept", round_, config.K)
  search_flops = float(sum(r["forward_flops"] for r in records))
  return {"round": round_, "top_k": top, "targets": len(targets),
          "teacher_train_vote_accuracy": teacher["voted_accuracy"],
          "teacher_test_vote_accuracy": vote,
          "flops": {"search": search_flops, "teacher": teacher["forward_flops"],
                    "fine_tuning": sft_flops,
                    "total": search_flops + teacher["forward_flops"] + sft_flops}}, params


def _plot(run_dir: RunDir, config: DistillConfig, rounds: list[dict]) -> None:
  x = np.asarray([max(r["training_flops"], 1.0) for r in rounds])
  se = lambda accuracies: np.asarray([metrics.binomial_se(a, config.test_size)
                                      for a in accuracies])
  student = [r["test_accuracy"] for r in rounds]
  teacher = [r["teacher_test_vote_accuracy"] for r in rounds[1:]]
  plotting.metric_vs_flops(
      run_dir.figure("accuracy_by_round"),
      {"distilled base (greedy)": (x, np.asarray(student), se(student)),
       f"round's top-{config.K} vote": (x[1:], np.asarray(teacher), se(teacher))},
      {"round-0 base": (student[0], float(se(student[:1])[0]))}, "test accuracy",
      f"{config.model} on {config.task}: {config.rounds} rounds of search → distil")
