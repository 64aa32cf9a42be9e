"""Qwen3: Llama's block with a per-head RMSNorm on q and k before RoPE, no biases, and an
explicit head_dim (128 at every size)."""

from thickets_jax.llm.architectures import base, llama, qwen2
from thickets_jax.llm.config import ModelConfig

HF_NAMES = {**llama.HF_NAMES, **base.QK_NORM_HF}
GGUF_NAMES = {**llama.GGUF_NAMES, **base.QK_NORM_GGUF}


def read_options(hf) -> dict:
  base.refuse_if(hf, "attention_bias")
  base.refuse_if(hf, "hidden_act", ("silu", None))
  return dict(qkv_bias=False, qk_norm="head", **qwen2.windows(hf))


ARCHITECTURE = base.Architecture(
    name="qwen3", model_types=("qwen3",), read_options=read_options, hf_names=HF_NAMES,
    gguf_names=GGUF_NAMES, write_options=lambda c: {}, gguf_arch="qwen3")


def _qwen3(layers, hidden, mlp, heads, tied) -> ModelConfig:
  return ModelConfig(vocab_size=151936, hidden_size=hidden, intermediate_size=mlp,
                     num_layers=layers, num_heads=heads, num_kv_heads=8, head_dim=128,
                     rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=False, tie_embeddings=tied,
                     architecture="qwen3", qk_norm="head")


SHAPES = {  # from the published Hugging Face configs of each size
    "0.6b": (28, 1024, 3072, 16, True),
    "1.7b": (28, 2048, 6144, 16, True),
    "4b": (36, 2560, 9728, 32, True),
    "8b": (36, 4096, 12288, 32, False),
    "14b": (40, 5120, 17408, 40, False),
    "32b": (64, 5120, 25600, 64, False),
}
# Qwen3 checkpoints are hybrid thinking models (instruction-tuned); "-base" are pretrained only.
PRESETS = tuple(
    base.Preset(f"qwen3-{size}" + ("-base" if pretrained else ""),
                f"Qwen/Qwen3-{size.upper()}" + ("-Base" if pretrained else ""),
                _qwen3(*shape), instruct=not pretrained)
    for size, shape in SHAPES.items() for pretrained in (False, True))
