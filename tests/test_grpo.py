"""GRPO: advantages, clipping, KL and masking on hand-made batches; learning a toy task; resume."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import checkpoint
from thickets_jax.baselines import grpo
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, roofline
from thickets_jax.llm.generator import Generator
from thickets_jax.tasks import Example, Task

import toys


def test_group_advantages_by_hand():
  adv = np.asarray(grpo.group_advantages(jnp.array([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])))
  std = np.sqrt(1 / 3)  # unbiased std of (1, 0, 0, 1)
  np.testing.assert_allclose(adv[0], np.array([0.5, -0.5, -0.5, 0.5]) / (std + 1e-6), rtol=1e-6)
  np.testing.assert_array_equal(adv[1], 0.0)  # a group that agrees teaches nothing


def test_clipped_objective_by_hand():
  old = jnp.zeros((4, 1))
  logp = jnp.log(jnp.array([[1.5], [1.5], [0.5], [1.1]]))
  adv = jnp.array([1.0, -1.0, 1.0, 1.0])
  loss, clipped = grpo.clipped_objective(logp, old, adv, clip_eps=0.2)
  np.testing.assert_allclose(loss[:, 0], [-1.2, 1.5, -0.5, -1.1], rtol=1e-6)
  np.testing.assert_array_equal(clipped[:, 0], [True, False, False, False])


def test_k3_kl_by_hand():
  kl = grpo.k3_kl(jnp.log(jnp.array([0.5, 0.3])), jnp.log(jnp.array([0.25, 0.3])))
  np.testing.assert_allclose(kl, [0.5 - np.log(0.5) - 1, 0.0], atol=1e-7)


def _params(seed=0):
  return roofline.random_params(toys.TINY_CONFIG, jax.random.key(seed))


def _batch(micro_batch, rows=4, prompt=3, completion=4, seed=0):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(2, 60, size=(rows, prompt + completion)).astype(np.int32)
  lengths = np.array([4, 2, 1, 3])[:rows]
  done = np.arange(completion)[None] < lengths[:, None]  # [rows, T]
  mask = np.concatenate([np.ones((rows, prompt), bool), done], axis=1)
  mask[0, 0] = False  # a left-padded prompt
  arrays = {"tokens": tokens, "mask": mask, "completion": done,
            "advantages": np.array([1.0, -0.5, 2.0, -1.0])[:rows].astype(np.float32)}
  return {k: jnp.asarray(v.reshape(-1, micro_batch, *v.shape[1:])) for k, v in arrays.items()}


def _update(config, params, batch, ref=None):
  update = grpo.make_update(toys.TINY_CONFIG, config, prompt_len=3)
  return update(params, config.transform().init(params), ref, batch)


_CONFIG = grpo.GRPOConfig(group_size=2, prompts_per_step=2, mini_batch=2, micro_batch=2,
                          learning_rate=1e-3)


def test_on_policy_loss_is_the_token_mean_of_minus_advantages():
  _, _, stats = _update(_CONFIG, _params(), _batch(2))
  lengths, adv = np.array([4, 2, 1, 3]), np.array([1.0, -0.5, 2.0, -1.0])
  np.testing.assert_allclose(stats["loss"], -(lengths * adv).sum() / lengths.sum(), rtol=1e-6)
  assert float(stats["clip_fraction"]) == 0.0


def test_micro_batches_accumulate_to_the_same_update():
  params = _params()
  whole, _, _ = _update(_CONFIG.__class__(**{**_CONFIG.__dict__, "micro_batch": 4}), params,
                        _batch(4))
  split, _, _ = _update(_CONFIG, params, _batch(2))
  # Adam's first step is lr·g/(|g| + ε): where g is near 0, summing the micro-batches in another
  # order moves the step by up to ~0.2% of lr (2.4e-6 under XLA's elemental emitters); a wrong
  # accumulation moves it by up to 2·lr (one micro-batch counted twice: 2.0e-3).
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(split)):
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_tokens_outside_the_completion_do_not_change_the_update():
  params = _params()
  batch = _batch(2)
  changed = dict(batch)
  tokens = np.asarray(batch["tokens"]).copy()
  tokens[0, 1, 3 + 2:] = 7  # row 1 generated 2 tokens: what follows is padding
  tokens[0, 0, 0] = 9  # row 0's first prompt position is left padding
  changed["tokens"] = jnp.asarray(tokens)
  a, _, _ = _update(_CONFIG, params, batch)
  b, _, _ = _update(_CONFIG, params, changed)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(x, y, atol=1e-7)


def test_a_positive_kl_coefficient_changes_the_update():
  params, ref = _params(0), _params(1)
  without, _, stats0 = _update(_CONFIG, params, _batch(2), ref)
  with_kl, _, stats1 = _update(grpo.GRPOConfig(**{**_CONFIG.__dict__, "kl_coef": 0.5}), params,
                               _batch(2), ref)
  assert float(stats0["kl"]) == 0.0 and float(stats1["kl"]) > 0.0
  assert any(not np.allclose(x, y) for x, y in zip(jax.tree.leaves(without),
                                                   jax.tree.leaves(with_kl)))


def _emit_c_task():
  """Reward: the fraction of generated characters that are "C" (token 2)."""
  reward = lambda text, gold: text.count("C") / max(len(text), 1)
  return Task("emit_c", splits=None, reward=reward, correct=lambda t, g: reward(t, g) > 0.5,
              vote_key=lambda t, g: t)


def _trainer(config, seed=0):
  gen = Generator(toys.TINY_CONFIG, _params(), toys.CharTokenizer(),
                  generate.Sampling(max_new_tokens=6, temperature=1.0,
                                             ignore_eos=True),
                  batch_size=16, chat=False)
  examples = [Example(prompt=p, gold=None) for p in ("ab", "xyz", "hello", "q")]
  return gen, grpo.Trainer(gen, _emit_c_task(), examples, config, seed=seed)


def test_grpo_raises_the_reward_of_a_tiny_random_policy():
  config = grpo.GRPOConfig(group_size=8, prompts_per_step=4, mini_batch=4, micro_batch=16,
                           learning_rate=1e-2, weight_decay=0.0)
  gen, trainer = _trainer(config)
  rewards = []
  grpo.train(gen.params, trainer, steps=20,
             on_step=lambda step, params, record: rewards.append(record["reward_mean"]))
  assert np.mean(rewards[-5:]) > np.mean(rewards[:5]) + 0.25, rewards


def test_killed_run_resumes_to_the_same_parameters(tmp_path):
  config = grpo.GRPOConfig(group_size=4, prompts_per_step=4, mini_batch=2, micro_batch=4,
                           learning_rate=1e-3, kl_coef=0.1)
  gen, trainer = _trainer(config)
  whole = grpo.train(gen.params, trainer, steps=3)
  seen = []

  def kill_at_two(step, params, record):
    seen.append((step, record["reward_mean"]))
    if step == 2:
      raise KeyboardInterrupt
  with pytest.raises(KeyboardInterrupt):
    grpo.train(gen.params, trainer, steps=3, on_step=kill_at_two,
               checkpoints=checkpoint.TrainingCheckpoints(str(tmp_path)))
  again = grpo.train(gen.params, trainer, steps=3,
                     on_step=lambda step, params, record: seen.append((step, record["reward_mean"])),
                     checkpoints=checkpoint.TrainingCheckpoints(str(tmp_path)))
  assert [s for s, _ in seen] == [1, 2, 2, 3]  # step 2 ran again: killed before its checkpoint
  assert seen[1] == seen[2]  # the same prompts and samples
  for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)


def test_step_prompts_cover_each_epoch_once():
  picks = np.concatenate([grpo.step_prompts(10, 4, seed=3, step=s) for s in range(5)])
  assert sorted(picks[:10]) == list(range(10)) and sorted(picks[10:20]) == list(range(10))


def test_bad_settings_are_one_sentence():
  """At construction, naming the flag."""
  with pytest.raises(InputError, match="--grpo_prompts 10 must be a multiple of --grpo_mini_batch"):
    grpo.GRPOConfig(prompts_per_step=10, mini_batch=4)
  with pytest.raises(InputError, match="--group_size must be at least 2"):
    grpo.GRPOConfig(group_size=1)
