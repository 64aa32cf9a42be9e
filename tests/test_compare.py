"""RandOpt vs ES vs GRPO end to end: the tiny LLM run, a killed run resumed, the 1D variant."""

import dataclasses
import json
import os

import jax
import numpy as np
import pytest

from thickets_jax import checkpoint, configs, halving, perturb, population, search
from thickets_jax.baselines import es
from thickets_jax.errors import InputError
from thickets_jax.llm import compare, scoring
from thickets_jax.signals import compare as signals_compare
from thickets_jax.signals import model as signal_model
from thickets_jax.signals import runs as signal_runs
from thickets_jax.workdir import RunDir

import toys


@compare.METHODS.register("halving_top1")
def _halving_top1(session: compare.Session) -> list[dict]:
  """A baseline added by one registration: successive halving's best member, through the
  scorer every member-based method shares."""
  config = session.config
  seeds, sigmas = population.draw_candidates(config.seed, config.N, config.sigmas)
  rungs = halving.schedule(config.N, config.train_size, eta=2, min_examples=1, keep=1)
  method = search.run(halving.Halving(seeds, sigmas, rungs),
                      session.train_scorer(session.run_dir.child("halving_top1")))
  best = method.result()["order"][0]
  params = perturb.rebuild_member(session.loaded.params, int(seeds[best]), float(sigmas[best]),
                                  session.gen.perturb)
  spent = sum(r["forward_flops"] for records in method.records for r in records)
  return [session.evaluate("halving_top1", "halving_top1", params, spent)]


def test_compare_on_the_tiny_model(tmp_path, tiny_weights):
  config = compare.CompareConfig.tiny(tiny_weights, methods=tuple(compare.METHODS))
  result = compare.run_compare(config, str(tmp_path))
  assert [row["method"] for row in result["table"]] == [
      "base", "randopt", "es", "grpo", "halving_top1"]
  rungs = [RunDir(str(tmp_path / "runs" / "halving_top1")).store(f"rung{i}").records
           for i in range(2)]
  assert [len(r) for r in rungs] == [4, 2]  # N = 4 on one example, the best 2 on the other
  assert 0 < result["methods"]["halving_top1"]["points"][0]["train_flops"] < \
      result["methods"]["randopt"]["points"][-1]["train_flops"]
  methods = result["methods"]
  assert methods["base"]["points"][0]["train_flops"] == 0.0
  assert [p["members"] for p in methods["randopt"]["points"]] == [2, 4]
  members = RunDir(str(tmp_path / "runs" / "randopt")).store().records.values()
  assert methods["randopt"]["points"][-1]["train_flops"] == pytest.approx(
      sum(r["forward_flops"] for r in members))
  assert [p["iteration"] for p in methods["es"]["points"]] == [1, 2]
  assert [p["step"] for p in methods["grpo"]["points"]] == [1, 2]
  for method in ("randopt", "es", "grpo"):
    flops = [p["train_flops"] for p in methods[method]["points"]]
    assert 0 < flops[0] < flops[1]
  for row in result["table"]:
    assert 0 <= row["vote_accuracy"] <= 1 and row["test_flops_vote"] > 0
  assert os.path.exists(tmp_path / "accuracy_vs_flops.png")


@pytest.mark.parametrize("method", ["es", "grpo"])
def test_a_killed_run_resumes_to_the_same_parameters(tmp_path, tiny_weights, monkeypatch, method):
  config = compare.CompareConfig.tiny(tiny_weights, methods=(method,), es_iterations=3,
                                      grpo_steps=3, eval_every=3)
  whole = compare.run_compare(config, str(tmp_path / "whole"))
  calls = {"n": 0}
  real_score, real_step = scoring.score_members, compare.grpo.Trainer.step

  def dies_on_the_second_call(real):
    def wrapped(*args, **kwargs):
      calls["n"] += 1
      if calls["n"] == 2:
        raise KeyboardInterrupt
      return real(*args, **kwargs)
    return wrapped
  target = ("scoring", scoring, "score_members", real_score) if method == "es" else (
      "step", compare.grpo.Trainer, "step", real_step)
  monkeypatch.setattr(target[1], target[2], dies_on_the_second_call(target[3]))
  with pytest.raises(KeyboardInterrupt):
    compare.run_compare(config, str(tmp_path / "killed"))
  monkeypatch.undo()
  resumed = compare.run_compare(config, str(tmp_path / "killed"))
  timeless = lambda result: [{k: v for k, v in p.items() if k != "seconds"}
                             for p in result["methods"][method]["points"]]
  assert timeless(resumed) == timeless(whole)
  restored = []
  for run in ("whole", "killed"):
    ckpt = checkpoint.TrainingCheckpoints(str(tmp_path / run / "runs" / method / "checkpoints"))
    assert ckpt.latest_step() == 3
    restored.append(ckpt._manager.restore(3))  # pylint: disable=protected-access
  for a, b in zip(jax.tree.leaves(restored[0]["params"]), jax.tree.leaves(restored[1]["params"])):
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("argv, sentence", [
    (["--methods", "ppo"], "unknown method 'ppo'"),
    (["--vote_k", "40"], "K > N"),
    (["--es_population", "3", "--es_antithetic"], "even --es_population, got 3"),
    (["--grpo_prompts", "3", "--grpo_mini_batch", "2"], "multiple of --grpo_mini_batch 2"),
    (["--kl_coef", "-1"], "--kl_coef must be >= 0, got -1.0"),
])
def test_bad_settings_are_one_sentence(tiny_weights, argv, sentence):
  flag_values = toys.flag_values(compare.CompareConfig,
                                 ["--weights", tiny_weights, "--model", "tiny-random-llama", *argv])
  with pytest.raises(InputError, match=sentence):
    configs.from_flags(compare.CompareConfig, flag_values)


def test_es_lowers_the_1d_train_mse(tmp_path):
  spec = signal_runs.RunSpec("mixed", "sinusoid", "sinusoid", posttrain_size=32, test_size=8,
                             pretrain_steps=200)
  model, params, _ = signal_runs.build_base(spec.pretrain, str(tmp_path), width=spec.width,
                                            depth=spec.depth, ctx=spec.ctx, seed=0,
                                            pretrain_steps=spec.pretrain_steps)
  (ctx, fut, weights), _ = signal_runs.data(spec)
  train_mse = lambda p: signal_model.weighted_mse(signal_model.rollout(model, p, ctx, spec.fut),
                                                  fut, weights)
  members = population.population_fn(train_mse)
  score = lambda p, it, seeds, sigmas: -population.evaluate_population(members, p, seeds, sigmas,
                                                                       chunk_size=8)
  config = es.ESConfig(population=16, sigma=0.002, learning_rate=2e-3)
  final = es.train(params, score, config, iterations=10, seed=0)
  assert float(train_mse(final)) < 0.9 * float(train_mse(params))


def test_signals_compare_over_two_seeds(tmp_path):
  spec = dataclasses.replace(signals_compare.CompareSpec(), n=32, es=dataclasses.replace(
      signals_compare.CompareSpec().es, population=8), es_iterations=4, gd_steps=(2, 4),
                             posttrain_size=16, test_size=8)
  result = signals_compare.run_compare(spec, (0, 1), str(tmp_path))
  names = [p["point"] for p in result["points"]]
  assert names[0] == "base" and {"randopt_32", "es_4", "gd_4"} <= set(names)
  for p in result["points"]:
    assert len(p["test_mse_per_seed"]) == 2 and p["median"] > 0
  gd = [p for p in result["points"] if p["method"] == "gd"]
  assert gd[0]["train_flops"] * 2 == gd[1]["train_flops"]
  assert os.path.exists(tmp_path / "mse_vs_flops.png")
  again = signals_compare.run_compare(spec, (0, 1), str(tmp_path))  # resumed: nothing recomputed
  assert again["points"] == result["points"]
  held = json.load(open(tmp_path / "spec.json"))  # as written before ES settings were a config
  older = {k: v for k, v in held.items() if k not in (
      "es_sigma", "es_antithetic", "es_fitness", "es_divide_by_sigma", "es_weight_decay",
      "es_optimizer")}
  json.dump(older, open(tmp_path / "spec.json", "w"))
  assert signals_compare.run_compare(spec, (0, 1), str(tmp_path))["points"] == result["points"]
