"""Supervised fine-tuning on (prompt, completion) token rows: full parameters or a LoRA adapter.

The loss is the token mean of −log π(completion token) under teacher forcing
(`teacher_forcing.token_logprobs`, the pass GRPO uses too), over the completion tokens of a
whole optimiser step; gradients are summed over micro-batches in one jitted `lax.scan`
(`teacher_forcing.summed_gradients`), so the mean is exact whatever the micro-batch. The
optimiser is optax AdamW with global-norm clipping.

LoRA (Hu et al. 2021) is a reparametrisation, not a model change: every perturbable 2-D kernel
W [.., in, out] of the layers gets A [.., in, r] (Gaussian, std 1/√in) and B [.., r, out]
(zeros), and the forward runs on W + (α/r)·A B. Only A and B train; the merged weights are
what a later round searches around and what `merge` returns.
"""

import dataclasses
import re
from typing import Any, Callable, Iterator, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thickets_jax import checkpoint, configs, tree
from thickets_jax.llm import teacher_forcing
from thickets_jax.errors import InputError
from thickets_jax.llm.config import ModelConfig

PyTree = Any
FINETUNES = ("full", "lora")
LORA_LEAVES = r"^layers/.*/kernel$"  # the attention and MLP kernels of every layer


@dataclasses.dataclass(frozen=True)
class SFTConfig(configs.Config):
  """Supervised fine-tuning: full parameters or a LoRA adapter, AdamW with a global-norm clip."""
  finetune: str = configs.setting("full", "Fine-tune full parameters or a LoRA adapter.",
                                  choices=FINETUNES)
  lora_rank: int = configs.setting(8, "LoRA rank r.")
  lora_alpha: float = configs.setting(16.0, "LoRA scale α (the update is α/r · BA).")
  learning_rate: float = configs.setting(1e-5, "Fine-tuning AdamW learning rate.")
  weight_decay: float = configs.setting(0.0, "Fine-tuning AdamW weight decay.")
  max_grad_norm: float = configs.setting(1.0, "Fine-tuning global-norm gradient clip.")
  epochs: int = configs.setting(4, "Passes over the fine-tuning targets.")
  batch_size: int = configs.setting(8, "Fine-tuning sequences per optimiser step.",
                                    flag="sft_batch_size")
  micro_batch: int = configs.setting(
      8, "Fine-tuning sequences per forward/backward (divides --sft_batch_size).",
      flag="sft_micro_batch")

  def validate(self) -> None:
    flag = lambda field: configs.flag_name(self, field)
    if self.finetune not in FINETUNES:
      raise InputError(f"unknown {flag('finetune')} {self.finetune!r}; known: "
                       f"{', '.join(FINETUNES)}.")
    for name in ("lora_rank", "lora_alpha", "learning_rate", "max_grad_norm", "epochs",
                 "batch_size", "micro_batch"):
      if not getattr(self, name) > 0:
        raise InputError(f"{flag(name)} must be positive, got {getattr(self, name)}.")
    if not self.weight_decay >= 0:
      raise InputError(f"{flag('weight_decay')} must be >= 0, got {self.weight_decay}.")
    if self.batch_size % self.micro_batch:
      raise InputError(f"{flag('micro_batch')} {self.micro_batch} must divide "
                       f"{flag('batch_size')} {self.batch_size}.")

  def transform(self) -> optax.GradientTransformation:
    return optax.chain(optax.clip_by_global_norm(self.max_grad_norm),
                       optax.adamw(self.learning_rate, weight_decay=self.weight_decay))


def lora_init(params: PyTree, rank: int, key: jax.Array) -> dict:
  """{leaf path: {"a": [.., in, r], "b": [.., r, out]}} for the kernels `LORA_LEAVES` names."""
  adapters = {}
  for index, (path, leaf) in zip(tree.stable_leaf_indices(params),
                                 jax.tree_util.tree_flatten_with_path(params)[0]):
    name = tree.path_name(path)
    if re.search(LORA_LEAVES, name) and leaf.ndim >= 2:
      *lead, fan_in, fan_out = leaf.shape
      a = jax.random.normal(jax.random.fold_in(key, index), (*lead, fan_in, rank), jnp.float32)
      adapters[name] = {"a": a / np.sqrt(fan_in),
                        "b": jnp.zeros((*lead, rank, fan_out), jnp.float32)}
  return adapters


def merge(params: PyTree, adapters: dict, scale: float) -> PyTree:
  """W + scale·A B on every adapted kernel, in each leaf's dtype."""
  def merged(path, leaf):
    adapter = adapters.get(tree.path_name(path))
    if adapter is None:
      return leaf
    delta = jnp.einsum("...ir,...ro->...io", adapter["a"], adapter["b"])
    return (leaf.astype(jnp.float32) + scale * delta).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(merged, params)


def make_update(model_config: ModelConfig, config: SFTConfig, prompt_len: int,
                base: Optional[PyTree] = None) -> Callable:
  """The jitted optimiser step: `(trainable, opt_state, batch) -> (trainable, opt_state, stats)`.

  `trainable` is the params (full) or the adapters (LoRA, merged onto `base`). batch holds
  [micro_batches, micro_batch, ...] arrays: tokens, mask [.., p + T]; completion [.., T] bool.
  """
  transform = config.transform()
  scale = config.lora_alpha / config.lora_rank

  def model_params(trainable):
    return trainable if config.finetune == "full" else merge(base, trainable, scale)

  def micro_loss(trainable, micro, total_tokens):
    logp = teacher_forcing.token_logprobs(model_config, model_params(trainable), micro["tokens"],
                               micro["mask"], prompt_len)
    return -jnp.sum(jnp.where(micro["completion"], logp, 0.0)) / total_tokens, {}

  @jax.jit
  def update(trainable, opt_state, batch):
    total_tokens = jnp.maximum(batch["completion"].sum(), 1).astype(jnp.float32)
    grads, loss, _ = teacher_forcing.summed_gradients(
        lambda t, micro: micro_loss(t, micro, total_tokens), trainable, batch, {})
    updates, opt_state = transform.update(grads, opt_state, trainable)
    return optax.apply_updates(trainable, updates), opt_state, {
        "loss": loss, "grad_norm": optax.global_norm(grads)}

  return update


def batches(rows: dict, config: SFTConfig, seed: int) -> Iterator[dict]:
  """Epochs of seeded shuffles of `rows` ([n, ...] arrays) in optimiser steps of
  [batch_size // micro_batch, micro_batch, ...]; a short last step is padded with rows whose
  completion mask is all False (they add nothing to the loss)."""
  n = len(rows["tokens"])
  for epoch in range(config.epochs):
    order = np.random.default_rng([seed, epoch]).permutation(n)
    for start in range(0, n, config.batch_size):
      picks = order[start:start + config.batch_size]
      pad = config.batch_size - len(picks)
      step = {k: np.concatenate([v[picks], np.zeros((pad, *v.shape[1:]), v.dtype)])
              for k, v in rows.items()}
      yield {k: jnp.asarray(v.reshape(-1, config.micro_batch, *v.shape[1:]))
             for k, v in step.items()}


def steps(num_rows: int, config: SFTConfig) -> int:
  return config.epochs * -(-num_rows // config.batch_size)


def fine_tune(model_config: ModelConfig, params: PyTree, rows: dict, config: SFTConfig, *,
              seed: int, checkpoints: Optional[checkpoint.TrainingCheckpoints] = None,
              checkpoint_every: int = 10,
              on_step: Optional[Callable[[int, dict], None]] = None) -> PyTree:
  """Fine-tunes `params` on `rows` (tokens, mask [n, p + T], completion [n, T]); returns the
  new model parameters (LoRA: merged). Resumes from `checkpoints`' latest step."""
  prompt_len = rows["tokens"].shape[1] - rows["completion"].shape[1]
  if config.finetune == "full":
    trainable, base = params, None
  else:
    trainable, base = lora_init(params, config.lora_rank, jax.random.key(seed)), params
  update = make_update(model_config, config, prompt_len, base)
  state = {"trainable": trainable, "opt_state": config.transform().init(trainable),
           "step": jnp.int32(0)}
  state = checkpoint.resume(checkpoints, state)
  total, done = steps(len(rows["tokens"]), config), int(state["step"])
  for index, batch in enumerate(batches(rows, config, seed)):
    if index < done:
      continue
    trainable, opt_state, stats = update(state["trainable"], state["opt_state"], batch)
    state = {"trainable": trainable, "opt_state": opt_state, "step": jnp.int32(index + 1)}
    checkpoint.save_when_due(checkpoints, index + 1, total, checkpoint_every, state)
    if on_step is not None:
      on_step(index + 1, jax.device_get(stats))
  if config.finetune == "full":
    return state["trainable"]
  return merge(params, state["trainable"], config.lora_alpha / config.lora_rank)
