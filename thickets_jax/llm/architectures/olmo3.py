"""OLMo-3 (the paper's Figure-1 model): OLMo-2's block, with sliding-window attention (4096) on
three of every four layers and YaRN RoPE on the full-attention layers only; sliding layers keep
plain RoPE at the same θ.

Matched against transformers 5.24's `modeling_olmo3.py`, whose per-layer-type RoPE applies a
file's flat `rope_scaling` to full-attention layers alone.
"""

from thickets_jax.llm.architectures import base, olmo2
from thickets_jax.llm.config import ModelConfig

DEFAULT_THETA = 5e5


def default_layer_type(layer: int) -> str:
  return "full_attention" if (layer + 1) % 4 == 0 else "sliding_attention"


def read_options(hf) -> dict:
  options = olmo2.read_options(hf)
  local_theta, local_scaling = base.rope_for(hf, "sliding_attention", DEFAULT_THETA,
                                             flat_applies=False)
  return dict(options, layer_types=base.layer_types(hf, default_layer_type),
              sliding_window=int(hf.get("sliding_window") or 4096),
              local_rope_theta=local_theta, local_rope_scaling=local_scaling)


def write_options(c: ModelConfig) -> dict:
  return {"sliding_window": c.sliding_window, "layer_types": base.layer_types_to_hf(c)}


ARCHITECTURE = base.Architecture(
    name="olmo3", model_types=("olmo3",), read_options=read_options, hf_names=olmo2.HF_NAMES,
    write_options=write_options, default_theta=DEFAULT_THETA)


def _olmo3_7b() -> ModelConfig:
  yarn = (("attention_factor", 1.2079441541679836), ("beta_fast", 32), ("beta_slow", 1),
          ("factor", 8.0), ("original_max_position_embeddings", 8192), ("rope_type", "yarn"))
  return ModelConfig(vocab_size=100278, hidden_size=4096, intermediate_size=11008,
                     num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
                     rope_theta=DEFAULT_THETA, rms_norm_eps=1e-6, tie_embeddings=False,
                     rope_scaling=yarn, architecture="olmo3", **olmo2.OPTIONS,
                     layer_types=tuple("full" if (i + 1) % 4 == 0 else "sliding"
                                       for i in range(32)),
                     sliding_window=4096, local_rope_theta=DEFAULT_THETA)


PRESETS = (
    base.Preset("olmo-3-7b-instruct", "allenai/Olmo-3-7B-Instruct", _olmo3_7b(), instruct=True),
    base.Preset("olmo-3-1025-7b", "allenai/Olmo-3-1025-7B", _olmo3_7b(), instruct=False),
)
