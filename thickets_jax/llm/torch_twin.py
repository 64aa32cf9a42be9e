"""The same parameters inside a transformers PyTorch model: for parity tests and the B3 peer.

Needs torch (the `test` extra); nothing else in the package imports this module.
"""

import warnings

import jax
import numpy as np

from thickets_jax.llm import architectures, weights
from thickets_jax.llm.config import ModelConfig


def state_dict(config: ModelConfig, params) -> dict:
  """Our parameter tree as a Hugging Face state dict: torch tensors in [out, in] shape that view
  `params`' host buffers (transposed views of our [in, out] kernels; nothing is copied)."""
  import torch  # pylint: disable=g-import-not-at-top
  host = jax.tree.map(np.asarray, params)
  with warnings.catch_warnings():  # read-only views, by design: see `transformers_model`
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    state = {name: torch.from_numpy(tensor) for name, tensor in weights.hf_tensors(config, host)}
  if config.tie_embeddings:
    state["lm_head.weight"] = state["model.embed_tokens.weight"]
  return state


def transformers_model(config: ModelConfig, params, contiguous: bool = False):
  """The architecture's transformers `...ForCausalLM` (eval mode) holding exactly `params`.

  Built without its random initialisation (`no_init_weights`), which every weight loaded next
  would overwrite, and given the tensors themselves (`assign=True`) rather than copies: for
  Qwen2.5-Coder-0.5B on CPU the initialisation took 15 s and copying 2 GB into it 11-17 s
  (first-touch page faults), of a build that now takes a few seconds.

  Args:
    contiguous: hold copies in Hugging Face's own [out, in] layout, as `from_pretrained` would
      (the peer benchmarks time this model, and load each member into it with
      `load_state_dict`). Otherwise its weights are read-only views of `params`' buffers:
      replace them only with `load_state_dict(..., assign=True)`, never copy into them.
  """
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  from transformers.initialization import no_init_weights  # pylint: disable=g-import-not-at-top
  hf_config = transformers.AutoConfig.for_model(**architectures.to_hf(config))
  with no_init_weights():
    model = transformers.AutoModelForCausalLM.from_config(hf_config)
  state = state_dict(config, params)
  if contiguous:  # copies, even of tensors already contiguous (views of our buffers too)
    copies = {id(t): t.clone(memory_format=torch.contiguous_format) for t in state.values()}
    state = {name: copies[id(t)] for name, t in state.items()}  # a tied head stays one tensor
  model.load_state_dict(state, strict=True, assign=True)
  return model.eval()
