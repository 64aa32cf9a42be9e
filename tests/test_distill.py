"""Fine-tuning (full and LoRA), the top-K teacher, and rounds of search → distil, resumable."""

import os
import shutil

import jax
import numpy as np
import pytest

from thickets_jax import checkpoint, population, randopt
from thickets_jax.llm import distill, generate, roofline, scoring, sft
from thickets_jax.llm.generator import Generator
from thickets_jax.tasks import TASKS, Example, Task

import toys

PROMPTS = ["ab", "xyz", "hello"]
TARGETS = np.array([[4, 5, 6, 1], [7, 7, 1, 0], [9, 1, 0, 0]], np.int32)  # 1 = EOS, 0 = pad


def _generator(params=None, new_tokens=4):
  params = roofline.random_params(toys.TINY_CONFIG, jax.random.key(0)) if params is None else params
  return Generator(toys.TINY_CONFIG, params, toys.CharTokenizer(),
                   generate.Sampling(max_new_tokens=new_tokens), batch_size=4,
                   chat=False)


def test_lora_starts_at_the_base_and_adapts_only_layer_kernels():
  gen = _generator()
  adapters = sft.lora_init(gen.params, 2, jax.random.key(1))
  assert adapters and all(name.startswith("layers/") and name.endswith("kernel")
                          for name in adapters)
  for a, b in zip(jax.tree.leaves(sft.merge(gen.params, adapters, 8.0)),
                  jax.tree.leaves(gen.params)):
    np.testing.assert_array_equal(a, b)  # B = 0


@pytest.mark.parametrize("finetune, learning_rate", [("full", 3e-2), ("lora", 1e-2)])
def test_fine_tuning_teaches_the_targets(finetune, learning_rate):
  params = roofline.random_params(toys.TINY_CONFIG, jax.random.key(0))
  # Tied embeddings of std 0.02 bound every logit near 0; a LoRA of the layers alone needs room.
  gen = _generator({**params, "embed": {"embedding": params["embed"]["embedding"] * 50}})
  rows = generate.training_rows(gen.codec, PROMPTS, TARGETS)
  assert rows["completion"].sum(1).tolist() == [4, 3, 2]  # up to and including EOS
  config = sft.SFTConfig(finetune=finetune, lora_rank=4, learning_rate=learning_rate, epochs=40,
                         batch_size=4, micro_batch=2)
  assert not np.array_equal(gen.base_token_ids(PROMPTS) * rows["completion"], TARGETS)
  tuned = sft.fine_tune(toys.TINY_CONFIG, gen.params, rows, config, seed=0)
  ids = gen.base_token_ids(PROMPTS, params=tuned)
  np.testing.assert_array_equal(ids * rows["completion"], TARGETS)


def test_micro_batches_accumulate_to_the_same_update():
  gen = _generator()
  rows = generate.training_rows(gen.codec, PROMPTS + ["q"], np.concatenate([TARGETS,
                                                                            TARGETS[:1]]))
  prompt_len = rows["tokens"].shape[1] - rows["completion"].shape[1]
  results = []
  for micro in (1, 4):
    config = sft.SFTConfig(learning_rate=1e-3, batch_size=4, micro_batch=micro)
    update = sft.make_update(toys.TINY_CONFIG, config, prompt_len)
    (batch,) = list(sft.batches(rows, sft.SFTConfig(epochs=1, batch_size=4, micro_batch=micro),
                                seed=0))
    results.append(update(gen.params, config.transform().init(gen.params), batch))
  np.testing.assert_allclose(results[0][2]["loss"], results[1][2]["loss"], rtol=1e-5)
  for a, b in zip(jax.tree.leaves(results[0][0]), jax.tree.leaves(results[1][0])):
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_killed_fine_tuning_resumes_to_the_same_parameters(tmp_path):
  gen = _generator()
  rows = generate.training_rows(gen.codec, PROMPTS, TARGETS)
  config = sft.SFTConfig(finetune="lora", learning_rate=1e-2, epochs=3, batch_size=2,
                         micro_batch=1)
  whole = sft.fine_tune(toys.TINY_CONFIG, gen.params, rows, config, seed=0)

  def kill(step, stats):
    if step == 4:
      raise KeyboardInterrupt
  ckpts = checkpoint.TrainingCheckpoints(str(tmp_path / "ck"))
  with pytest.raises(KeyboardInterrupt):
    sft.fine_tune(toys.TINY_CONFIG, gen.params, rows, config, seed=0, checkpoints=ckpts,
                  checkpoint_every=2, on_step=kill)
  steps = []
  resumed = sft.fine_tune(toys.TINY_CONFIG, gen.params, rows, config, seed=0,
                          checkpoints=checkpoint.TrainingCheckpoints(str(tmp_path / "ck")),
                          checkpoint_every=2, on_step=lambda s, _: steps.append(s))
  assert steps == [5, 6]  # 3 epochs × 2 steps; step 4 was lost with the kill, 1-4 not redone
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
    np.testing.assert_array_equal(a, b)


def test_teacher_keeps_the_voted_completion_when_it_is_correct():
  gen = _generator(new_tokens=3)
  first = lambda text, gold: text[:1] or None
  task = Task("first_letter", splits=None, reward=lambda t, g: 0.0,
              correct=lambda t, g: first(t, g) == g, vote_key=first)
  members = [{"seed": s, "sigma": 0.5} for s in (3, 4, 5)]
  ids = np.concatenate([out for _, out in gen.population_token_ids(
      np.array([3, 4, 5]), np.array([0.5] * 3), PROMPTS, members_per_batch=3)])  # [K, n, T]
  texts = [[gen.codec.decode(r) for r in member] for member in ids]
  votes = [[first(t, None) for t in member] for member in texts]
  winners = [randopt.majority_vote(v) for v in zip(*votes)]
  golds = [winners[0], "#", winners[2]]  # the vote is right on prompts 0 and 2
  task_set = scoring.TaskSet(task, [Example(p, g) for p, g in zip(PROMPTS, golds)])
  taught = distill.teach(gen, task_set, members, gen.params, members_per_batch=2)
  assert [t["example"] for t in taught["targets"]] == [0, 2]
  assert taught["voted_accuracy"] == pytest.approx(2 / 3)
  for target in taught["targets"]:
    rank = target["rank"]
    i = target["example"]
    assert votes[rank - 1][i] == golds[i] and all(v[i] != golds[i] for v in votes[:rank - 1])
    assert target["ids"] == ids[rank - 1, i].tolist()
  assert taught["forward_flops"] > 0


@pytest.fixture(name="any_answer")
def _any_answer(monkeypatch):
  """A task that is right whenever the model writes anything, so distillation has targets;
  registered for one test only."""
  arithmetic = TASKS.get("arithmetic")
  monkeypatch.setitem(TASKS._entries, "any_answer", Task(  # pylint: disable=protected-access
      "any_answer", splits=arithmetic.splits, reward=lambda t, g: float(bool(t.strip())),
      correct=lambda t, g: bool(t.strip()), vote_key=lambda t, g: t.strip()[:1] or None))


def test_rounds_distil_and_resume(tmp_path, tiny_weights, any_answer):
  del any_answer
  workdir = str(tmp_path / "distill")
  config = distill.DistillConfig.tiny(
      tiny_weights, task="any_answer", sigmas=(0.05,),
      sft=sft.SFTConfig(finetune="lora", learning_rate=1e-2, batch_size=2, micro_batch=1,
                        epochs=2))
  result = distill.run_distill(config, workdir)
  first, second = result["rounds"][1:]
  assert first["targets"] > 0 and first["flops"]["fine_tuning"] > 0
  assert second["training_flops"] == first["flops"]["total"] + second["flops"]["total"]
  assert [m["seed"] for m in first["top_k"]] != [m["seed"] for m in second["top_k"]]
  assert os.path.exists(os.path.join(workdir, "accuracy_by_round.png"))
  # Killed after round 1: round 2's search, teacher and evaluation are redone, round 1 is read.
  shutil.rmtree(os.path.join(workdir, "runs", "round2"))
  os.remove(os.path.join(workdir, "results.json"))
  logged = os.path.getsize(os.path.join(workdir, "log.txt"))
  assert distill.run_distill(config, workdir) == result
  with open(os.path.join(workdir, "log.txt")) as f:
    log = f.read()[logged:]
  assert "resuming: 4 of 4 candidates" in log and "round 2 fine-tuning step" in log
  assert "round 1 fine-tuning step" not in log


def test_round_one_searches_the_members_randopt_would():
  config = distill.DistillConfig()
  seeds, _ = distill.round_candidates(config, 1)
  np.testing.assert_array_equal(seeds, population.draw_candidates(config.seed, config.N,
                                                                  config.sigmas)[0])
  assert not np.array_equal(seeds, distill.round_candidates(config, 2)[0])
