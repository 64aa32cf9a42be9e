"""The shapes and block options of one decoder-only transformer (`llm.model.Transformer`).

Every architecture we load (`llm.architectures`: Llama, Qwen2, Qwen3, OLMo-2, OLMo-3, Gemma-3)
is this one transformer with its options set: where the norms sit, q/k norms, the activation,
embedding and attention scales, and per-layer sliding windows with their own RoPE.
"""

import dataclasses
from typing import Any

import jax.numpy as jnp

from thickets_jax.errors import InputError

QK_NORMS = ("none", "head", "full")  # per head over head_dim (Qwen3, Gemma-3); whole width (OLMo)
NORM_PLACEMENTS = ("pre", "post", "sandwich")  # Llama; OLMo-2/3; Gemma-3 (pre and post)
ACTIVATIONS = ("silu", "gelu_tanh")
LAYER_TYPES = ("full", "sliding")
FULL_WINDOW = 1 << 30  # the window of a full-attention layer: every earlier position


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """Shapes, constants and block options of one model; `dtype` is the parameter and
  activation dtype.

  Block options (defaults: Llama):
    architecture: the `llm.architectures` module that reads and writes its checkpoints.
    qk_norm: RMSNorm on queries and keys before RoPE, per head ("head") or over the whole
      projection ("full").
    norm_placement: "pre" norms each branch's input; "post" its output (OLMo-2/3);
      "sandwich" both (Gemma-3: four norms per block).
    norm_offset: an RMSNorm multiplies by (norm_offset + w) (Gemma: 1).
    activation: of the gated MLP.
    embed_scale: embeddings × √hidden_size (Gemma), rounded to `dtype` as Hugging Face does.
    query_pre_attn_scalar: scores are q·k / √(this); 0 means head_dim.
    sliding_window, layer_types: a "sliding" layer attends to the last `sliding_window`
      positions only and uses `local_rope_theta` / `local_rope_scaling`; () is all "full".
  """
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
  architecture: str = "llama"
  qk_norm: str = "none"
  norm_placement: str = "pre"
  norm_offset: float = 0.0
  activation: str = "silu"
  embed_scale: bool = False
  query_pre_attn_scalar: float = 0
  sliding_window: int = 0
  layer_types: tuple = ()
  local_rope_theta: float = 0.0
  local_rope_scaling: tuple = ()

  def __post_init__(self):
    for field, value, known in (("qk_norm", self.qk_norm, QK_NORMS),
                                ("norm_placement", self.norm_placement, NORM_PLACEMENTS),
                                ("activation", self.activation, ACTIVATIONS)):
      if value not in known:
        raise InputError(f"{field} {value!r} is not implemented; known: {', '.join(known)}.")
    if self.layer_types:
      if len(self.layer_types) != self.num_layers or set(self.layer_types) - set(LAYER_TYPES):
        raise InputError(f"layer_types must give one of {', '.join(LAYER_TYPES)} for each of "
                         f"the {self.num_layers} layers, got {list(self.layer_types)}.")
      if "sliding" in self.layer_types and self.sliding_window <= 0:
        raise InputError("sliding-window layers need a positive sliding_window.")

  def replace(self, **changes) -> "ModelConfig":
    return dataclasses.replace(self, **changes)

  @property
  def has_sliding_layers(self) -> bool:
    return "sliding" in self.layer_types

  @property
  def layer_windows(self) -> tuple[int, ...]:
    """Per layer, how many positions back a query sees (itself included)."""
    types = self.layer_types or ("full",) * self.num_layers
    return tuple(self.sliding_window if t == "sliding" else FULL_WINDOW for t in types)

  @property
  def attention_scalar(self):
    """Scores are divided by √(this): `query_pre_attn_scalar`, else head_dim."""
    return self.query_pre_attn_scalar or self.head_dim

  @property
  def num_params(self) -> int:
    """Parameters as the published counts give them (tied embeddings counted once)."""
    d, f, hd = self.hidden_size, self.intermediate_size, self.head_dim
    q, kv = self.num_heads * hd, self.num_kv_heads * hd
    attn = d * q + 2 * d * kv + q * d + ((q + 2 * kv) if self.qkv_bias else 0)
    attn += {"none": 0, "head": 2 * hd, "full": q + kv}[self.qk_norm]
    norms = (4 if self.norm_placement == "sandwich" else 2) * d
    layer = attn + 3 * d * f + norms
    head = 0 if self.tie_embeddings else d * self.vocab_size
    return self.vocab_size * d + self.num_layers * layer + d + head
