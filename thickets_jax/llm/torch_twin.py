"""The same parameters inside a transformers PyTorch model: for parity tests and the B3 peer.

Needs torch (the `test` extra); nothing else in the package imports this module.
"""

import jax
import numpy as np

from thickets_jax.llm import weights
from thickets_jax.llm.config import ModelConfig
from thickets_jax.tree import path_name


def state_dict(config: ModelConfig, params) -> dict:
  """Our parameter tree as a Hugging Face state dict (torch tensors, [out, in] layout)."""
  import torch  # pylint: disable=g-import-not-at-top
  state = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    hf_name, transposed = weights._HF_NAMES[name]  # pylint: disable=protected-access
    leaf = np.asarray(leaf)
    for i in range(config.num_layers) if name.startswith("layers/") else [None]:
      tensor = leaf if i is None else leaf[i]
      state[hf_name.format(i=i)] = torch.from_numpy(np.ascontiguousarray(tensor.T if transposed else tensor))
  if config.tie_embeddings:
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
  return state


def transformers_model(config: ModelConfig, params):
  """A Qwen2ForCausalLM / LlamaForCausalLM (eval mode) holding exactly `params`."""
  import transformers  # pylint: disable=g-import-not-at-top
  kwargs = dict(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                intermediate_size=config.intermediate_size, num_hidden_layers=config.num_layers,
                num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
                head_dim=config.head_dim, rope_theta=config.rope_theta,
                rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=config.tie_embeddings,
                max_position_embeddings=32768)
  if config.qkv_bias:
    model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**kwargs))
  else:
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs))
  model.load_state_dict(state_dict(config, params), strict=True)
  return model.eval()
