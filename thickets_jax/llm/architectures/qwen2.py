"""Qwen2 / Qwen2.5: Llama's block with biases on q, k and v (none on o); layers past
`max_window_layers` use a sliding window when `use_sliding_window` is set."""

from thickets_jax.llm import assets
from thickets_jax.llm.architectures import base, llama
from thickets_jax.llm.config import ModelConfig

BIASES = ("q", "k", "v")
HF_NAMES = {**llama.HF_NAMES, **{f"layers/attn/{n}/bias": base.HF_LAYER + f"self_attn.{n}_proj.bias"
                                 for n in BIASES}}
GGUF_NAMES = {**llama.GGUF_NAMES, **{f"layers/attn/{n}/bias": f"blk.{{i}}.attn_{n}.bias"
                                     for n in BIASES}}


def windows(hf) -> dict:
  """Qwen2/Qwen3's sliding window: on layers from `max_window_layers` on, when enabled."""
  if not hf.get("use_sliding_window"):
    return {}
  start = hf.get("max_window_layers", hf["num_hidden_layers"])
  types = base.layer_types(hf, lambda i: "sliding_attention" if i >= start else "full_attention")
  if "sliding" not in types:
    return {}
  local_theta, local_scaling = base.rope_for(hf, "sliding_attention", 1e4)
  return dict(layer_types=types, sliding_window=int(hf["sliding_window"]),
              local_rope_theta=local_theta, local_rope_scaling=local_scaling)


def read_options(hf) -> dict:
  base.refuse_if(hf, "hidden_act", ("silu", None))
  return dict(qkv_bias=True, **windows(hf))


ARCHITECTURE = base.Architecture(
    name="qwen2", model_types=("qwen2",), read_options=read_options, hf_names=HF_NAMES,
    gguf_names=GGUF_NAMES, write_options=lambda c: {}, gguf_arch="qwen2")


def _qwen25(layers, hidden, mlp, heads, kv_heads, vocab, tied) -> ModelConfig:
  return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                     head_dim=hidden // heads, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
                     tie_embeddings=tied, architecture="qwen2")


SHAPES = {  # from the published Hugging Face configs of each size
    "0.5b": (24, 896, 4864, 14, 2, 151936, True),
    "1.5b": (28, 1536, 8960, 12, 2, 151936, True),
    "3b": (36, 2048, 11008, 16, 2, 151936, True),
    "7b": (28, 3584, 18944, 28, 4, 152064, False),
    "14b": (48, 5120, 13824, 40, 8, 152064, False),
    "32b": (64, 5120, 27648, 40, 8, 152064, False),
}
PRESETS = tuple(
    base.Preset(f"qwen2.5-{size}" + ("-instruct" if instruct else ""),
                f"Qwen/Qwen2.5-{size.upper()}" + ("-Instruct" if instruct else ""),
                _qwen25(*shape), instruct)
    for size, shape in SHAPES.items() for instruct in (False, True)) + (
    base.Preset("qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
                _qwen25(*SHAPES["0.5b"]), instruct=True, gguf=assets.QWEN25_CODER_05B_INSTRUCT),)
