"""The same parameters inside a transformers PyTorch model: for parity tests and the B3 peer.

Needs torch (the `test` extra); nothing else in the package imports this module.
"""

import numpy as np

from thickets_jax.llm import architectures, weights
from thickets_jax.llm.config import ModelConfig


def state_dict(config: ModelConfig, params) -> dict:
  """Our parameter tree as a Hugging Face state dict (torch tensors, [out, in] layout)."""
  import torch  # pylint: disable=g-import-not-at-top
  state = {name: torch.from_numpy(np.ascontiguousarray(np.asarray(tensor)))
           for name, tensor in weights.hf_tensors(config, params)}
  if config.tie_embeddings:
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
  return state


def transformers_model(config: ModelConfig, params):
  """The architecture's transformers `...ForCausalLM` (eval mode) holding exactly `params`.

  Built without its random initialisation (`no_init_weights`), which every weight loaded next
  overwrites: for Qwen2.5-0.5B on CPU that initialisation alone took 15 s of a 15 s build.
  """
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.initialization import no_init_weights  # pylint: disable=g-import-not-at-top
  hf_config = transformers.AutoConfig.for_model(**architectures.to_hf(config))
  with no_init_weights():
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
  model.load_state_dict(state_dict(config, params), strict=True)
  return model.eval()
