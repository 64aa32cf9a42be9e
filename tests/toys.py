"""Tiny stand-ins shared by tests: a one-character-per-token tokenizer, a tiny model config, and
the environment of a child experiment that chooses its own device count."""

import os

import jax.numpy as jnp

from thickets_jax.llm.config import ModelConfig


class CharTokenizer:
  """A stand-in tokenizer over a tiny vocabulary: one character per token (ids 0, 1: pad, EOS)."""
  pad_token_id, eos_token_id = 0, 1

  def get_vocab(self):
    return {chr(65 + i): i for i in range(60)}

  def convert_tokens_to_ids(self, token):
    return self.get_vocab()[token]

  def __call__(self, text, add_special_tokens=False):
    return {"input_ids": [2 + (ord(ch) % 50) for ch in text]}

  def decode(self, ids, skip_special_tokens=True):
    return "".join(chr(65 + i) for i in ids if i > 1)


TINY_CONFIG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=1e4,
                          rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                          dtype=jnp.float32)


def child_env(**more) -> dict:
  """`os.environ` for a child process whose flags decide its device count: XLA_FLAGS without the
  suite's host device count, its other flags (the optimisation level) kept; `more` added."""
  xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if "xla_force_host_platform_device_count" not in f]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla:
    env["XLA_FLAGS"] = " ".join(xla)
  return {**env, **more}
