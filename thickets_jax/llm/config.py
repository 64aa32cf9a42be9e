"""Decoder-only transformer shapes (Qwen2/Qwen2.5 and Llama/SmolLM2, RoPE scaling included),
from HF configs or GGUF."""

import dataclasses
from typing import Any, Mapping

import jax.numpy as jnp

from thickets_jax.errors import InputError
from thickets_jax.llm import rope


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes and constants of one model; `dtype` is the parameter and activation dtype."""
  vocab_size: int
  hidden_size: int
  intermediate_size: int
  num_layers: int
  num_heads: int
  num_kv_heads: int
  head_dim: int
  rope_theta: float
  rms_norm_eps: float
  qkv_bias: bool
  tie_embeddings: bool
  rope_scaling: tuple = ()  # `rope.scaling_from_hf`: () is plain RoPE
  dtype: Any = jnp.float32

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def num_params(self) -> int:
    """Parameters as the published counts give them (tied embeddings counted once)."""
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    q, kv = self.num_heads * hd, self.num_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.qkv_bias else 0)
    layer = attn + 3 * d * f + 2 * d
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * layer + d + head

  def to_hf(self) -> dict[str, Any]:
    """The Hugging Face config fields of these shapes: `model_type` ("qwen2" with q/k/v
    biases, else "llama") and the keyword arguments of its config class."""
    return {"model_type": "qwen2" if self.qkv_bias else "llama",
            "vocab_size": self.vocab_size, "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size, "num_hidden_layers": self.num_layers,
            "num_attention_heads": self.num_heads, "num_key_value_heads": self.num_kv_heads,
            "head_dim": self.head_dim, "rope_theta": self.rope_theta,
            "rms_norm_eps": self.rms_norm_eps, "tie_word_embeddings": self.tie_embeddings,
            "max_position_embeddings": 32768, **rope.scaling_to_hf(self.rope_scaling)}

  @property
  def flops_per_token(self) -> int:
    """2 × parameters: the model-FLOP convention of docs/benchmarks.md (attention scores excluded)."""
    return 2 * self.num_params


def from_hf_config(hf: Mapping[str, Any], dtype=jnp.float32) -> ModelConfig:
  """From a Hugging Face `config.json` of a Qwen2 or Llama model, its RoPE scaling included
  (`rope.scaling_from_hf`: one we do not implement is refused, never ignored)."""
  model_type = hf.get("model_type")
  if model_type not in ("qwen2", "llama"):
    raise InputError(f"unsupported model_type {model_type!r} in config.json; supported: qwen2, llama.")
  heads = hf["num_attention_heads"]
  return ModelConfig(
      vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
      intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
      num_heads=heads, num_kv_heads=hf.get("num_key_value_heads", heads),
      head_dim=hf.get("head_dim") or hf["hidden_size"] // heads,
      rope_theta=float(hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta", 10000.0))),
      rms_norm_eps=float(hf["rms_norm_eps"]),
      qkv_bias=model_type == "qwen2" or bool(hf.get("attention_bias", False)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
      rope_scaling=rope.scaling_from_hf(hf), dtype=dtype)
