"""What an architecture module declares, and the `config.json` reading they share.

An `Architecture` says which Hugging Face `model_type`s it reads, how a `config.json` becomes a
`ModelConfig` (its block options), where each of our leaves lives in its Hugging Face and GGUF
checkpoints, and what `config.json` it writes back. `Preset`s are its published sizes.

The tensor-name maps go from our leaf path (`layers/...` leaves carry `{i}` for the layer) to
the checkpoint's name. A Hugging Face name holds `{p}` for the model prefix ("model.", or the
language model's prefix inside a multimodal checkpoint). Kernels are stored [out, in] there and
[in, out] here.
"""

import dataclasses
from typing import Any, Callable, Mapping, Optional

from thickets_jax.errors import InputError
from thickets_jax.llm import rope
from thickets_jax.llm.config import ModelConfig

HF_LAYER = "{p}layers.{i}."
# Leaves every architecture has, and their Hugging Face / GGUF names.
COMMON_HF = {
    "embed/embedding": "{p}embed_tokens.weight",
    "final_norm/scale": "{p}norm.weight",
    "lm_head/kernel": "lm_head.weight",
    "layers/attn/q/kernel": HF_LAYER + "self_attn.q_proj.weight",
    "layers/attn/k/kernel": HF_LAYER + "self_attn.k_proj.weight",
    "layers/attn/v/kernel": HF_LAYER + "self_attn.v_proj.weight",
    "layers/attn/o/kernel": HF_LAYER + "self_attn.o_proj.weight",
    "layers/mlp/gate/kernel": HF_LAYER + "mlp.gate_proj.weight",
    "layers/mlp/up/kernel": HF_LAYER + "mlp.up_proj.weight",
    "layers/mlp/down/kernel": HF_LAYER + "mlp.down_proj.weight",
}
COMMON_GGUF = {
    "embed/embedding": "token_embd.weight",
    "final_norm/scale": "output_norm.weight",
    "lm_head/kernel": "output.weight",
    "layers/attn/q/kernel": "blk.{i}.attn_q.weight",
    "layers/attn/k/kernel": "blk.{i}.attn_k.weight",
    "layers/attn/v/kernel": "blk.{i}.attn_v.weight",
    "layers/attn/o/kernel": "blk.{i}.attn_output.weight",
    "layers/mlp/gate/kernel": "blk.{i}.ffn_gate.weight",
    "layers/mlp/up/kernel": "blk.{i}.ffn_up.weight",
    "layers/mlp/down/kernel": "blk.{i}.ffn_down.weight",
}
QK_NORM_HF = {"layers/attn/q_norm/scale": HF_LAYER + "self_attn.q_norm.weight",
              "layers/attn/k_norm/scale": HF_LAYER + "self_attn.k_norm.weight"}
QK_NORM_GGUF = {"layers/attn/q_norm/scale": "blk.{i}.attn_q_norm.weight",
                "layers/attn/k_norm/scale": "blk.{i}.attn_k_norm.weight"}


@dataclasses.dataclass(frozen=True)
class Architecture:
  """One architecture's declarations (module docstring).

  Attributes:
    name: `ModelConfig.architecture`.
    model_types: the `config.json` `model_type`s it reads; the first is the one it writes.
    read_options: `config.json` -> its `ModelConfig` fields beyond `shape_fields`; refuses
      settings the shared transformer does not implement.
    hf_names, gguf_names: our leaf path -> checkpoint tensor name (module docstring).
    hf_prefixes: model prefixes a Hugging Face checkpoint may use, tried in order.
    gguf_arch: `general.architecture` of its GGUF files, or None when GGUF is not read.
    gguf_norm_shift: llama.cpp stores Gemma's norm weights as 1 + w; subtracted on reading.
    default_theta: the RoPE θ a `config.json` without one means.
    text_config: `config.json` -> the settings of the language model it holds (a multimodal
      file keeps them apart).
    write_options: `ModelConfig` -> the `config.json` fields beyond `shape_fields_to_hf`.
  """
  name: str
  model_types: tuple[str, ...]
  read_options: Callable[[Mapping[str, Any]], dict]
  hf_names: Mapping[str, str]
  write_options: Callable[[ModelConfig], dict]
  hf_prefixes: tuple[str, ...] = ("model.",)
  gguf_names: Mapping[str, str] = dataclasses.field(default_factory=dict)
  gguf_arch: Optional[str] = None
  gguf_norm_shift: float = 0.0
  default_theta: float = 10000.0
  text_config: Callable[[Mapping[str, Any]], dict] = dict


@dataclasses.dataclass(frozen=True)
class Preset:
  """A published model: its registry name, Hugging Face repo and shapes (usable before any
  weights exist); `gguf` is an offline asset (`llm.assets`) when one ships."""
  name: str
  hf_repo: str
  config: ModelConfig
  instruct: bool
  gguf: Any = None


def refuse_if(hf: Mapping[str, Any], field: str, supported=(None, False, 0)) -> None:
  """Refuses a `config.json` setting the shared transformer does not implement."""
  if hf.get(field) not in supported:
    raise InputError(f"{field} = {hf[field]!r} in config.json is not implemented for "
                     f"{hf.get('model_type')!r}; the model would load with a wrong forward pass.")


def shape_fields(hf: Mapping[str, Any], default_theta: float = 10000.0) -> dict:
  """The `ModelConfig` fields every architecture reads alike, full-attention RoPE included."""
  heads = hf["num_attention_heads"]
  theta, scaling = rope_for(hf, "full_attention", default_theta)
  return dict(vocab_size=hf["vocab_size"], hidden_size=hf["hidden_size"],
              intermediate_size=hf["intermediate_size"], num_layers=hf["num_hidden_layers"],
              num_heads=heads, num_kv_heads=hf.get("num_key_value_heads") or heads,
              head_dim=hf.get("head_dim") or hf["hidden_size"] // heads, rope_theta=theta,
              rms_norm_eps=float(hf["rms_norm_eps"]),
              tie_embeddings=bool(hf.get("tie_word_embeddings", False)), rope_scaling=scaling)


def shape_fields_to_hf(c: ModelConfig) -> dict:
  """`config.json` fields of `shape_fields` (RoPE as `rope_theta` and `rope_scaling`)."""
  return {"vocab_size": c.vocab_size, "hidden_size": c.hidden_size,
          "intermediate_size": c.intermediate_size, "num_hidden_layers": c.num_layers,
          "num_attention_heads": c.num_heads, "num_key_value_heads": c.num_kv_heads,
          "head_dim": c.head_dim, "rope_theta": c.rope_theta, "rms_norm_eps": c.rms_norm_eps,
          "tie_word_embeddings": c.tie_embeddings, "max_position_embeddings": 32768,
          **rope.scaling_to_hf(c.rope_scaling)}


def per_layer_type(hf: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
  """transformers ≥ 5 writes models with several layer types as `rope_parameters` keyed by
  layer type; None when the file keeps one flat setting."""
  params = hf.get("rope_parameters")
  if isinstance(params, Mapping) and {"full_attention", "sliding_attention"} & set(params):
    return params
  return None


def rope_for(hf: Mapping[str, Any], layer_type: str, default_theta: float,
             flat_applies: bool = True) -> tuple[float, tuple]:
  """(θ, `rope.scaling_from_hf` settings) of one layer type ("full_attention" or
  "sliding_attention").

  A flat `rope_scaling`/`rope_parameters` (transformers 4 files) applies to full-attention
  layers, and to sliding ones only when `flat_applies` (OLMo-3 and Gemma-3 keep their sliding
  layers on plain RoPE).
  """
  by_type = per_layer_type(hf)
  if by_type is not None:
    settings = dict(by_type.get(layer_type) or {"rope_type": "default"})
    theta = settings.get("rope_theta", default_theta)
    context = {"rope_parameters": settings,
               "max_position_embeddings": hf.get("max_position_embeddings")}
    return float(theta), rope.scaling_from_hf(context)
  flat = hf.get("rope_parameters") if isinstance(hf.get("rope_parameters"), Mapping) else {}
  theta = hf.get("rope_theta", flat.get("rope_theta", default_theta))
  if layer_type == "sliding_attention" and not flat_applies:
    return float(theta), ()
  return float(theta), rope.scaling_from_hf(hf)


def layer_types(hf: Mapping[str, Any], default: Callable[[int], str]) -> tuple[str, ...]:
  """Per layer "full" or "sliding", from `layer_types` or, when absent, `default(layer)`
  ("full_attention" / "sliding_attention")."""
  names = hf.get("layer_types") or [default(i) for i in range(hf["num_hidden_layers"])]
  known = {"full_attention": "full", "sliding_attention": "sliding"}
  unknown = sorted(set(names) - set(known))
  if unknown:
    raise InputError(f"layer type {unknown[0]!r} in config.json is not implemented; known: "
                     f"{', '.join(known)}.")
  return tuple(known[n] for n in names)


def layer_types_to_hf(c: ModelConfig) -> list[str]:
  return [f"{t}_attention" for t in (c.layer_types or ("full",) * c.num_layers)]
