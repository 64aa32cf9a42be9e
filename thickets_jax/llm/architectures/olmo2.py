"""OLMo-2: no pre-norms; the attention and MLP outputs are RMS-normed before their residual
add, and q and k are RMS-normed over the whole projection width (all heads together).

Hugging Face calls the norm after attention `post_attention_layernorm`, the name Llama gives
its pre-MLP norm: here it maps to `attn_post_norm`, never to `mlp_norm`.
"""

from thickets_jax.llm.architectures import base
from thickets_jax.llm.config import ModelConfig

HF_NAMES = {**base.COMMON_HF, **base.QK_NORM_HF,
            "layers/attn_post_norm/scale": base.HF_LAYER + "post_attention_layernorm.weight",
            "layers/mlp_post_norm/scale": base.HF_LAYER + "post_feedforward_layernorm.weight"}
OPTIONS = dict(qkv_bias=False, qk_norm="full", norm_placement="post")


def read_options(hf) -> dict:
  base.refuse_if(hf, "attention_bias")
  base.refuse_if(hf, "hidden_act", ("silu", None))
  return dict(OPTIONS)


# GGUF is not read: transformers' GGUF loader, the reference a GGUF reader is tested against,
# has no OLMo.
ARCHITECTURE = base.Architecture(
    name="olmo2", model_types=("olmo2",), read_options=read_options, hf_names=HF_NAMES,
    write_options=lambda c: {})

PRESETS = (
    base.Preset("olmo-2-1124-7b-instruct", "allenai/OLMo-2-1124-7B-Instruct",
                ModelConfig(vocab_size=100352, hidden_size=4096, intermediate_size=11008,
                            num_layers=32, num_heads=32, num_kv_heads=32, head_dim=128,
                            rope_theta=5e5, rms_norm_eps=1e-6, tie_embeddings=False,
                            architecture="olmo2", **OPTIONS),
                instruct=True),
)
