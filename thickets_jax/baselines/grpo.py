"""GRPO: full-parameter group-relative policy optimisation of our Flax language model.

One step: B prompts, G samples each at temperature 1 (the generator's sampling path, one
explicit key per step); rewards from the task's grader on the decoded text; advantages
normalised within each group; then, per mini-batch of prompts, one optimiser step on

    L = Σ_tokens [ −min(ρ·A, clip(ρ, 1 − ε, 1 + ε)·A) + β·KL₃(π ‖ π_ref) ] / tokens

(ρ = π/π_old per completion token, token-mean over the completion tokens of the mini-batch:
prompt and padding are masked; KL₃ the low-variance k3 estimator, off when β = 0, as in the
reference run). Log-probabilities come from one teacher-forced forward of `llm.model.forward`,
the model that generates. Gradients are summed over micro-batches inside one jitted scan, so
the token mean is exact and memory is one micro-batch's activations. With one mini-batch per
step the policy is still the rollout policy, so π_old is π with its gradient stopped and the
old-policy pass is skipped; with several, π_old is computed once before the first update.

Defaults are the reference's (verl): G = 8, B = 1024, mini-batch 64 prompts, AdamW lr 1e-6,
weight decay 0.01, global-norm clip 1.0, ε = 0.2, constant schedule.
"""

import dataclasses
from typing import Any, Callable, ClassVar, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thickets_jax import checkpoint, configs, flops, rng
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, teacher_forcing
from thickets_jax.llm.config import ModelConfig
from thickets_jax.llm.generator import Generator
from thickets_jax.tasks import Example, Task

PyTree = Any


@dataclasses.dataclass(frozen=True)
class GRPOConfig(configs.Config):
  """GRPO hyperparameters (flags `--grpo_<field>`, `--group_size` and `--kl_coef`)."""
  FLAG_PREFIX: ClassVar[str] = "grpo_"
  group_size: int = configs.setting(8, "GRPO samples per prompt G.", flag="group_size")
  prompts_per_step: int = configs.setting(1024, "GRPO prompts per step B.", flag="grpo_prompts")
  mini_batch: int = configs.setting(
      64, "GRPO prompts per optimiser step (B / mini_batch updates per step, one epoch).")
  micro_batch: int = configs.setting(
      8, "GRPO sequences per forward and backward (gradient accumulation; no effect on the "
      "numbers beyond float rounding).")
  learning_rate: float = configs.setting(1e-6, "GRPO AdamW learning rate (constant schedule).")
  weight_decay: float = configs.setting(0.01, "GRPO AdamW weight decay.")
  grad_clip: float = configs.setting(1.0, "GRPO global-norm gradient clip.")
  clip_eps: float = configs.setting(0.2, "GRPO ε of the clipped ratio.")
  kl_coef: float = configs.setting(
      0.0, "GRPO β of the k3 KL to the initial policy (0: off).", flag="kl_coef")
  temperature: float = configs.setting(1.0, "GRPO rollout sampling temperature.")

  def validate(self) -> None:
    flag = lambda field: configs.flag_name(self, field)
    for name in ("group_size", "prompts_per_step", "mini_batch", "micro_batch"):
      if getattr(self, name) <= 0:
        raise InputError(f"{flag(name)} must be positive, got {getattr(self, name)}.")
    if self.group_size < 2:
      raise InputError(f"{flag('group_size')} must be at least 2 (samples per prompt), got "
                       f"{self.group_size}.")
    if self.prompts_per_step % self.mini_batch:
      raise InputError(f"{flag('prompts_per_step')} {self.prompts_per_step} must be a multiple "
                       f"of {flag('mini_batch')} {self.mini_batch}.")
    if (self.mini_batch * self.group_size) % self.micro_batch:
      raise InputError(f"{flag('micro_batch')} {self.micro_batch} must divide the "
                       f"{self.mini_batch * self.group_size} sequences of a mini-batch.")
    for name in ("learning_rate", "clip_eps", "temperature", "grad_clip"):
      if not getattr(self, name) > 0:
        raise InputError(f"{flag(name)} must be positive, got {getattr(self, name)}.")
    for name in ("kl_coef", "weight_decay"):
      if not getattr(self, name) >= 0:
        raise InputError(f"{flag(name)} must be >= 0, got {getattr(self, name)}.")

  @property
  def updates_per_step(self) -> int:
    return self.prompts_per_step // self.mini_batch

  def transform(self) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(self.grad_clip),
                       optax.adamw(self.learning_rate, weight_decay=self.weight_decay))


def group_advantages(rewards: jax.Array, eps: float = 1e-6) -> jax.Array:
  """(r − group mean) / (group std + eps), [B, G] -> [B, G]; the std is the unbiased one (as
  torch.std in the reference)."""
  rewards = jnp.asarray(rewards, jnp.float32)
  mean = rewards.mean(axis=1, keepdims=True)
  return (rewards - mean) / (rewards.std(axis=1, ddof=1, keepdims=True) + eps)


def clipped_objective(logp: jax.Array, old_logp: jax.Array, advantages: jax.Array,
                      clip_eps: float) -> tuple[jax.Array, jax.Array]:
  """Per-token loss −min(ρA, clip(ρ)A) and whether the clip was active. [n, T], [n] -> [n, T]."""
  ratio = jnp.exp(logp - old_logp)
  a = advantages[:, None]
  unclipped, clipped = ratio * a, jnp.clip(ratio, 1 - clip_eps, 1 + clip_eps) * a
  return -jnp.minimum(unclipped, clipped), clipped < unclipped


def k3_kl(logp: jax.Array, ref_logp: jax.Array) -> jax.Array:
  """Low-variance KL(π ‖ π_ref) estimate per token: exp(r) − r − 1 with r = ref − logp (>= 0)."""
  r = ref_logp - logp
  return jnp.exp(r) - r - 1


def make_update(model_config: ModelConfig, config: GRPOConfig, prompt_len: int) -> Callable:
  """The jitted optimiser step on one mini-batch.

  `update(params, opt_state, ref_params, batch) -> (params, opt_state, stats)`, where batch holds
  [micro_batches, micro_batch, ...] arrays: tokens, mask [.., p + T]; completion [.., T] bool;
  advantages [..]; old_logp [.., T] (ignored with one mini-batch per step). `ref_params` is
  used only when `kl_coef > 0`.
  """
  transform = config.transform()
  on_policy = config.updates_per_step == 1

  def micro_loss(params, ref_params, micro, total_tokens):
    logp = teacher_forcing.token_logprobs(model_config, params, micro["tokens"], micro["mask"],
                                          prompt_len)
    old = jax.lax.stop_gradient(logp) if on_policy else micro["old_logp"]
    loss, clipped = clipped_objective(logp, old, micro["advantages"], config.clip_eps)
    kl = jnp.zeros_like(loss)
    if config.kl_coef > 0:
      ref = jax.lax.stop_gradient(teacher_forcing.token_logprobs(
          model_config, ref_params, micro["tokens"], micro["mask"], prompt_len))
      kl = k3_kl(logp, ref)
    where = micro["completion"]
    total = jnp.sum(jnp.where(where, loss + config.kl_coef * kl, 0.0)) / total_tokens
    stats = {"kl": jnp.sum(jnp.where(where, kl, 0.0)),
             "clipped": jnp.sum(where & clipped)}
    return total, stats

  @jax.jit
  def update(params, opt_state, ref_params, batch):
    total_tokens = jnp.maximum(batch["completion"].sum(), 1).astype(jnp.float32)
    grads, loss, stats = teacher_forcing.summed_gradients(
        lambda p, micro: micro_loss(p, ref_params, micro, total_tokens), params, batch,
        {"kl": jnp.float32(0), "clipped": jnp.int32(0)})
    updates, opt_state = transform.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, {
        "loss": loss, "grad_norm": optax.global_norm(grads),
        "kl": stats["kl"] / total_tokens, "clip_fraction": stats["clipped"] / total_tokens}

  return update


@dataclasses.dataclass
class Rollouts:
  """One step's B·G samples. Arrays are [B·G, ...], rows of a prompt consecutive."""
  tokens: np.ndarray  # [rows, p + T] int32: left-padded prompt, then the completion
  mask: np.ndarray  # [rows, p + T] bool: real tokens (prompt and generated)
  completion: np.ndarray  # [rows, T] bool: generated tokens, the stop token included
  rewards: np.ndarray  # [B, G] float


def rollout(generator: Generator, params: PyTree, task: Task,
            examples: Sequence[Example], group_size: int, key: jax.Array) -> Rollouts:
  """Samples G completions of each example's prompt with `params` and grades them."""
  texts = [e.prompt for e in examples for _ in range(group_size)]
  ids = generator.base_token_ids(texts, key, params=params)  # [rows, T]
  rows = generate.training_rows(generator.codec, texts, ids)
  decoded = [generator.codec.decode(row) for row in ids]
  golds = [e.gold for e in examples for _ in range(group_size)]
  if task.prepare is not None:
    task.prepare(decoded, golds)
  rewards = np.asarray([task.reward(t, g) for t, g in zip(decoded, golds)], np.float32)
  return Rollouts(**rows, rewards=rewards.reshape(len(examples), group_size))


def step_prompts(num_examples: int, prompts_per_step: int, seed: int, step: int) -> np.ndarray:
  """Indices of step `step`'s prompts: epochs of seeded permutations of the train examples,
  consumed in order (a step may straddle two epochs). [prompts_per_step] int."""
  start = step * prompts_per_step
  epochs = range(start // num_examples, (start + prompts_per_step - 1) // num_examples + 1)
  order = np.concatenate([np.random.default_rng([seed, e]).permutation(num_examples)
                          for e in epochs])
  offset = start - epochs[0] * num_examples
  return order[offset:offset + prompts_per_step]


def _micro_batches(arrays: dict, micro_batch: int) -> dict:
  return {k: jnp.asarray(v.reshape(-1, micro_batch, *v.shape[1:])) for k, v in arrays.items()}


class Trainer:
  """GRPO steps of one model on one task: rollouts, advantages, mini-batch updates, FLOPs."""

  def __init__(self, generator: Generator, task: Task, examples: Sequence[Example],
               config: GRPOConfig, seed: int):
    if generator.sampling.temperature != config.temperature:
      raise ValueError(f"the rollout generator samples at temperature "
                       f"{generator.sampling.temperature}, GRPO asks for {config.temperature}")
    self.generator, self.task, self.examples = generator, task, list(examples)
    self.config, self.seed = config, seed
    self._updates: dict[int, Callable] = {}  # per prompt width
    self._logprobs = jax.jit(teacher_forcing.token_logprobs, static_argnums=(0, 4))

  def init(self, params: PyTree) -> PyTree:
    return self.config.transform().init(params)

  def step(self, params: PyTree, opt_state: PyTree, ref_params: Optional[PyTree], step: int,
           sampling_key: jax.Array) -> tuple[PyTree, PyTree, dict]:
    """One GRPO step: its prompts depend on (seed, step), its samples on fold_in(key, step)."""
    c = self.config
    picks = step_prompts(len(self.examples), c.prompts_per_step, self.seed, step)
    key = jax.random.fold_in(sampling_key, step)
    out = rollout(self.generator, params, self.task, [self.examples[i] for i in picks],
                  c.group_size, key)
    prompt_len = out.tokens.shape[1] - out.completion.shape[1]
    advantages = np.asarray(group_advantages(out.rewards)).reshape(-1)
    rows = {"tokens": out.tokens, "mask": out.mask, "completion": out.completion,
            "advantages": advantages}
    old_logprob_pass = c.updates_per_step > 1
    if old_logprob_pass:
      rows["old_logp"] = np.concatenate([
          np.asarray(self._logprobs(self.generator.config, params, jnp.asarray(t),
                                    jnp.asarray(m), prompt_len))
          for t, m in zip(np.split(out.tokens, len(out.tokens) // c.micro_batch),
                          np.split(out.mask, len(out.mask) // c.micro_batch))])
    if prompt_len not in self._updates:
      self._updates[prompt_len] = make_update(self.generator.config, c, prompt_len)
    update = self._updates[prompt_len]
    per_update = c.mini_batch * c.group_size
    stats = []
    for start in range(0, len(out.tokens), per_update):
      part = {k: v[start:start + per_update] for k, v in rows.items()}
      params, opt_state, s = update(params, opt_state, ref_params,
                                    _micro_batches(part, c.micro_batch))
      stats.append(jax.device_get(s))
    lengths = out.mask.sum(axis=1)
    cost = flops.grpo_step_flops(self.generator.config, lengths, old_logprob_pass=old_logprob_pass,
                                 reference_pass=c.kl_coef > 0)
    record = {"step": step + 1, "reward_mean": float(out.rewards.mean()),
              "reward_std": float(out.rewards.std()),
              "completion_tokens": int(out.completion.sum()), "flops": cost,
              **{k: float(np.mean([s[k] for s in stats])) for k in stats[0]}}
    return params, opt_state, record


def train(params: PyTree, trainer: Trainer, *, steps: int, checkpoints=None,
          checkpoint_every: int = 1,
          on_step: Callable = lambda step, params, record: None) -> PyTree:
  """Runs `steps` GRPO steps from `params`, or resumes them from `checkpoints`.

  Step t's prompts and sampling key depend only on (seed, t), so a resumed run redoes exactly
  the steps after its last checkpoint. `on_step(steps done, params, record)` runs after each
  step and before its checkpoint (make it idempotent). The reference policy is `params`.
  """
  ref_params = params if trainer.config.kl_coef > 0 else None
  state = {"params": params, "opt_state": trainer.init(params), "step": jnp.int32(0),
           "sampling_key": jax.random.key_data(rng.key(trainer.seed, "sampling"))}
  state = checkpoint.resume(checkpoints, state)
  for step in range(int(state["step"]), steps):
    params, opt_state, record = trainer.step(state["params"], state["opt_state"], ref_params,
                                             step, jax.random.wrap_key_data(state["sampling_key"]))
    state = {**state, "params": params, "opt_state": opt_state, "step": jnp.int32(step + 1)}
    on_step(step + 1, params, record)
    checkpoint.save_when_due(checkpoints, step + 1, steps, checkpoint_every, state)
  return state["params"]
