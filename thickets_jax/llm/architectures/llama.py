"""Llama (Llama 2/3.x, SmolLM2, deepseek-llm): pre-norm blocks, SwiGLU, no biases; Llama 3's
RoPE scaling through `rope`."""

from thickets_jax.llm import assets
from thickets_jax.llm.architectures import base
from thickets_jax.llm.config import ModelConfig

HF_NAMES = {**base.COMMON_HF,
            "layers/attn_norm/scale": base.HF_LAYER + "input_layernorm.weight",
            "layers/mlp_norm/scale": base.HF_LAYER + "post_attention_layernorm.weight"}
GGUF_NAMES = {**base.COMMON_GGUF,
              "layers/attn_norm/scale": "blk.{i}.attn_norm.weight",
              "layers/mlp_norm/scale": "blk.{i}.ffn_norm.weight"}


def read_options(hf) -> dict:
  # Llama's attention_bias also puts a bias on o_proj, which the shared transformer lacks.
  for field in ("attention_bias", "mlp_bias"):
    base.refuse_if(hf, field)
  base.refuse_if(hf, "hidden_act", ("silu", None))
  return dict(qkv_bias=False)


ARCHITECTURE = base.Architecture(
    name="llama", model_types=("llama",), read_options=read_options, hf_names=HF_NAMES,
    gguf_names=GGUF_NAMES, write_options=lambda c: {}, gguf_arch="llama")


def _llama3(layers, hidden, mlp, heads, head_dim, tied, rope_factor) -> ModelConfig:
  """Llama 3.x: 8 KV heads, θ = 500000, Llama 3.1's RoPE scaling."""
  scaling = (("factor", rope_factor), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
             ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))
  return ModelConfig(vocab_size=128256, hidden_size=hidden, intermediate_size=mlp,
                     num_layers=layers, num_heads=heads, num_kv_heads=8, head_dim=head_dim,
                     rope_theta=5e5, rms_norm_eps=1e-5, qkv_bias=False, tie_embeddings=tied,
                     rope_scaling=scaling)


PRESETS = (  # shapes from the published Hugging Face configs
    base.Preset("smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
                ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                            num_layers=30, num_heads=9, num_kv_heads=3, head_dim=64,
                            rope_theta=1e5, rms_norm_eps=1e-5, qkv_bias=False,
                            tie_embeddings=True),
                instruct=True, gguf=assets.SMOLLM2_135M_INSTRUCT),
    # A tiny random Llama with SmolLM2's vocabulary and chat template, for smoke tests and
    # local dry runs; its weights only ever come from --weights (tests write them).
    base.Preset("tiny-random-llama", "",
                ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64,
                            num_layers=2, num_heads=4, num_kv_heads=2, head_dim=8,
                            rope_theta=1e5, rms_norm_eps=1e-5, qkv_bias=False,
                            tie_embeddings=True),
                instruct=True),
    base.Preset("llama-3.1-8b-instruct", "meta-llama/Llama-3.1-8B-Instruct",
                _llama3(32, 4096, 14336, 32, 128, False, 8.0), instruct=True),
    base.Preset("llama-3.2-1b-instruct", "meta-llama/Llama-3.2-1B-Instruct",
                _llama3(16, 2048, 8192, 32, 64, True, 32.0), instruct=True),
    base.Preset("llama-3.2-3b-instruct", "meta-llama/Llama-3.2-3B-Instruct",
                _llama3(28, 3072, 8192, 24, 128, True, 32.0), instruct=True),
    base.Preset("deepseek-llm-7b-chat", "deepseek-ai/deepseek-llm-7b-chat",
                ModelConfig(vocab_size=102400, hidden_size=4096, intermediate_size=11008,
                            num_layers=30, num_heads=32, num_kv_heads=32, head_dim=128,
                            rope_theta=1e4, rms_norm_eps=1e-6, qkv_bias=False,
                            tie_embeddings=False),
                instruct=True),
)
