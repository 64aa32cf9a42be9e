"""One module per architecture; this package finds them by name or `config.json` model type.

Adding an architecture is one module: its `ARCHITECTURE` (how it reads `config.json`, its
Hugging Face and GGUF tensor names, the block options it sets) and its `PRESETS`, listed in
`MODULES` below.
"""

from typing import Any, Mapping

import jax.numpy as jnp

from thickets_jax.errors import InputError
from thickets_jax.llm.architectures import base, gemma3, llama, olmo2, olmo3, qwen2, qwen3
from thickets_jax.llm.config import ModelConfig

MODULES = (llama, qwen2, qwen3, olmo2, olmo3, gemma3)
ARCHITECTURES = {m.ARCHITECTURE.name: m.ARCHITECTURE for m in MODULES}
_BY_MODEL_TYPE = {t: m.ARCHITECTURE for m in MODULES for t in m.ARCHITECTURE.model_types}
PRESETS = tuple(p for m in MODULES for p in m.PRESETS)


def get(name: str) -> base.Architecture:
  return ARCHITECTURES[name]


def for_model_type(model_type: Any) -> base.Architecture:
  if model_type not in _BY_MODEL_TYPE:
    raise InputError(f"unsupported model_type {model_type!r} in config.json; supported: "
                     f"{', '.join(sorted(_BY_MODEL_TYPE))}.")
  return _BY_MODEL_TYPE[model_type]


def from_hf_config(hf: Mapping[str, Any], dtype=jnp.float32) -> ModelConfig:
  """A Hugging Face `config.json` (as a dict) -> `ModelConfig`, through its architecture's
  module; a setting the shared transformer does not implement is refused in one sentence."""
  arch = for_model_type(hf.get("model_type"))
  hf = arch.text_config(hf)
  fields = base.shape_fields(hf, default_theta=arch.default_theta)
  return ModelConfig(**{**fields, "architecture": arch.name, **arch.read_options(hf)},
                     dtype=dtype)


def to_hf(config: ModelConfig) -> dict:
  """The `config.json` fields (`model_type` first among them) of a config, for transformers'
  `AutoConfig.for_model`."""
  arch = get(config.architecture)
  return {"model_type": arch.model_types[0], **base.shape_fields_to_hf(config),
          **arch.write_options(config)}
