"""Gemma-3 (text): four RMSNorms per block (before and after attention and MLP), each
x·(1 + w) in float32; per-head q/k RMSNorm; scores scaled by 1/√query_pre_attn_scalar;
embeddings × √hidden; GeGLU with tanh GELU; sliding-window layers (five of every six) on a local
RoPE base; tied head.

Multimodal checkpoints (`model_type` "gemma3", 4B and up) hold the text model under a
language-model prefix and its settings under `text_config`; settings that file leaves out are
transformers' `Gemma3TextConfig` defaults. Only the text model is loaded.
"""

from thickets_jax.llm import assets
from thickets_jax.llm.architectures import base
from thickets_jax.llm.config import ModelConfig

HF_NAMES = {**base.COMMON_HF, **base.QK_NORM_HF,
            "layers/attn_norm/scale": base.HF_LAYER + "input_layernorm.weight",
            "layers/attn_post_norm/scale": base.HF_LAYER + "post_attention_layernorm.weight",
            "layers/mlp_norm/scale": base.HF_LAYER + "pre_feedforward_layernorm.weight",
            "layers/mlp_post_norm/scale": base.HF_LAYER + "post_feedforward_layernorm.weight"}
GGUF_NAMES = {**base.COMMON_GGUF, **base.QK_NORM_GGUF,
              "layers/attn_norm/scale": "blk.{i}.attn_norm.weight",
              "layers/attn_post_norm/scale": "blk.{i}.post_attention_norm.weight",
              "layers/mlp_norm/scale": "blk.{i}.ffn_norm.weight",
              "layers/mlp_post_norm/scale": "blk.{i}.post_ffw_norm.weight"}
OPTIONS = dict(architecture="gemma3", qkv_bias=False, qk_norm="head", norm_placement="sandwich",
               norm_offset=1.0, activation="gelu_tanh", embed_scale=True)
GLOBAL_THETA, LOCAL_THETA = 1e6, 1e4


def text_config(hf) -> dict:
  """The text model's settings: `hf` itself, or a multimodal file's `text_config` completed
  with transformers' defaults."""
  if hf.get("model_type") != "gemma3":
    return dict(hf)
  import transformers  # pylint: disable=g-import-not-at-top
  text = dict(hf.get("text_config") or {})
  text.pop("model_type", None)
  return transformers.Gemma3TextConfig(**text).to_dict()


def read_options(hf) -> dict:
  for field in ("attention_bias", "final_logit_softcapping", "attn_logit_softcapping",
                "use_bidirectional_attention"):
    base.refuse_if(hf, field)
  base.refuse_if(hf, "hidden_activation", ("gelu_pytorch_tanh", None))
  pattern = hf.get("sliding_window_pattern") or 6
  types = base.layer_types(hf, lambda i: "sliding_attention" if (i + 1) % pattern
                           else "full_attention")
  if base.per_layer_type(hf) is None:  # transformers 4 files: the local base is its own field
    local_theta, local_scaling = hf.get("rope_local_base_freq", LOCAL_THETA), ()
  else:
    local_theta, local_scaling = base.rope_for(hf, "sliding_attention", LOCAL_THETA)
  return dict(OPTIONS, query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
              layer_types=types, sliding_window=int(hf.get("sliding_window") or 4096),
              local_rope_theta=float(local_theta), local_rope_scaling=local_scaling)


def write_options(c: ModelConfig) -> dict:
  return {"model_type": "gemma3_text", "hidden_activation": "gelu_pytorch_tanh",
          "query_pre_attn_scalar": c.query_pre_attn_scalar, "sliding_window": c.sliding_window,
          "layer_types": base.layer_types_to_hf(c), "rope_local_base_freq": c.local_rope_theta}


ARCHITECTURE = base.Architecture(
    name="gemma3", model_types=("gemma3_text", "gemma3"), read_options=read_options,
    hf_names=HF_NAMES, gguf_names=GGUF_NAMES, write_options=write_options,
    hf_prefixes=("model.", "model.language_model.", "language_model.model."),
    gguf_arch="gemma3", gguf_norm_shift=1.0, default_theta=GLOBAL_THETA,
    text_config=text_config)


def _gemma3(vocab, layers, hidden, mlp, heads, kv_heads, head_dim, scalar, window,
            context_factor) -> ModelConfig:
  return ModelConfig(
      vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_layers=layers,
      num_heads=heads, num_kv_heads=kv_heads, head_dim=head_dim, rope_theta=GLOBAL_THETA,
      rms_norm_eps=1e-6, tie_embeddings=True,
      rope_scaling=(("factor", context_factor), ("rope_type", "linear")) if context_factor else (),
      query_pre_attn_scalar=scalar, sliding_window=window, local_rope_theta=LOCAL_THETA,
      layer_types=tuple("sliding" if (i + 1) % 6 else "full" for i in range(layers)), **OPTIONS)


SHAPES = {  # the text models of the published Hugging Face configs
    "270m": (262144, 18, 640, 2048, 4, 1, 256, 256, 512, None),
    "1b": (262144, 26, 1152, 6912, 4, 1, 256, 256, 512, None),
    "4b": (262208, 34, 2560, 10240, 8, 4, 256, 256, 1024, 8.0),
    "12b": (262208, 48, 3840, 15360, 16, 8, 256, 256, 1024, 8.0),
    "27b": (262208, 62, 5376, 21504, 32, 16, 128, 168, 1024, 8.0),
}
PRESETS = (
    base.Preset("gemma-3-270m", "google/gemma-3-270m", _gemma3(*SHAPES["270m"]),
                instruct=False, gguf=assets.GEMMA3_270M),
    base.Preset("gemma-3-270m-it", "google/gemma-3-270m-it", _gemma3(*SHAPES["270m"]),
                instruct=True),
) + tuple(base.Preset(f"gemma-3-{size}-it", f"google/gemma-3-{size}-it", _gemma3(*SHAPES[size]),
                      instruct=True) for size in ("1b", "4b", "12b", "27b"))
