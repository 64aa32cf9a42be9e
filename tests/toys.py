"""Tiny stand-ins shared by tests: a one-character-per-token tokenizer, a tiny model config,
a config's flags parsed from a command line, and the environment of a child experiment that
chooses its own device count."""

import os

from absl import flags
import jax.numpy as jnp

from thickets_jax import configs
from thickets_jax.llm.config import ModelConfig


class CharTokenizer:
  """A stand-in tokenizer over a tiny vocabulary: one character per token (ids 0, 1: pad, EOS)."""
  pad_token_id, eos_token_id = 0, 1

  def get_vocab(self):
    return {chr(65 + i): i for i in range(60)}

  def convert_tokens_to_ids(self, token):
    return self.get_vocab()[token]

  def __call__(self, text, add_special_tokens=False):
    return {"input_ids": [2 + (ord(ch) % 50) for ch in text]}

  def decode(self, ids, skip_special_tokens=True):
    return "".join(chr(65 + i) for i in ids if i > 1)


TINY_CONFIG = ModelConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2,
                          num_heads=4, num_kv_heads=2, head_dim=8, rope_theta=1e4,
                          rms_norm_eps=1e-6, qkv_bias=True, tie_embeddings=True,
                          dtype=jnp.float32)


def flag_values(config_classes, argv=()) -> flags.FlagValues:
  """The flags of a config class, or of a tuple of them as one command line defines them
  (`configs.define_flags`, on their own `FlagValues`), parsed from the arguments `argv`."""
  values = flags.FlagValues()
  for config_class in config_classes if isinstance(config_classes, tuple) else (config_classes,):
    configs.define_flags(config_class, values)
  values(["prog", *argv])
  return values


def child_env(**more) -> dict:
  """`os.environ` for a child process whose flags decide its device count: XLA_FLAGS without the
  suite's host device count, its other flags (the optimisation level) kept; `more` added."""
  xla = [f for f in os.environ.get("XLA_FLAGS", "").split()
         if "xla_force_host_platform_device_count" not in f]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
  if xla:
    env["XLA_FLAGS"] = " ".join(xla)
  return {**env, **more}


def paper_task_files(directory) -> str:
  """Small record files of the paper's six dataset tasks, in each dataset's own fields, written
  here (never a copy of a benchmark); returns the `--data TASK=FILE,...` that names them."""
  import json  # pylint: disable=g-import-not-at-top
  records = {
      "gsm8k": [{"question": f"Tom has {i} apples and buys 2. How many?",
                 "answer": f"{i} + 2 = {i + 2}\n#### {i + 2}"} for i in range(4)],
      "math500": [{"problem": f"What is ${i} + 1$?", "answer": str(i + 1)} for i in range(4)],
      "olympiadbench": [{"question": f"Find $x$ with $x - {i} = 0$.", "final_answer": [f"${i}$"]}
                        for i in range(4)],
      "mbpp": [{"text": f"Write a function add_{i}(x) that adds {i}.", "test_setup_code": "",
                "test_list": [f"assert add_{i}(1) == {1 + i}", f"assert add_{i}(5) == {5 + i}"]}
               for i in range(4)],
      "rocstories": [{"title": f"Story {i}", "gold_order": [2, 0, 4, 1, 3],
                      "shuffled_sentences": [f"Story {i}, event {j}." for j in (1, 3, 0, 4, 2)]}
                     for i in range(4)],
      "uspto50k": [{"class": i + 1, "rxn_smiles": f"[CH3:1]C{'C' * i}O>>CC{'C' * i}=O",
                    "prod_smiles": f"CC{'C' * i}=O"} for i in range(4)],
  }
  files = []
  for task, rows in records.items():
    path = os.path.join(str(directory), f"{task}.jsonl")
    with open(path, "w") as f:
      f.write("\n".join(json.dumps(r) for r in rows) + "\n")
    files.append(f"{task}={path}")
  return ",".join(files)


def gguf_without_vocabulary(path: str, directory: str) -> str:
  """`directory/model.gguf`: the GGUF file at `path` without its tokenizer's arrays, with
  `{arch}.vocab_size` written in their place when the file lacks it, byte for byte otherwise.

  The model transformers builds from it is the same (its GGUF loader takes the vocabulary size
  from the token list only when that key is missing), and it loads in seconds: transformers
  reads metadata with `gguf.GGUFReader`, twice per load, one numpy view per array element
  (Gemma-3's 262k-token vocabulary: 43 s)."""
  import struct  # pylint: disable=g-import-not-at-top
  from gguf import GGUFValueType  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import gguf_file  # pylint: disable=g-import-not-at-top
  file = gguf_file.read(path)
  arch = file.metadata["general.architecture"]
  kept = [k for k, v in file.metadata.items()
          if not (k.startswith("tokenizer.ggml.") and isinstance(v, list))]
  vocab_key = f"{arch}.vocab_size"
  added = b""
  if vocab_key not in file.metadata:
    key = vocab_key.encode()
    added = struct.pack(f"<Q{len(key)}sII", len(key), key, GGUFValueType.UINT32,
                        len(file.metadata["tokenizer.ggml.tokens"]))
  with open(path, "rb") as f:
    raw = f.read()
  head = b"GGUF" + struct.pack("<IQQ", file.version, len(file.tensors), len(kept) + bool(added))
  body = head + b"".join(raw[slice(*file.spans[k])] for k in kept) + added
  body += raw[slice(*file.tensor_infos)]
  alignment = file.metadata.get("general.alignment", 32)
  body += b"\0" * (-len(body) % alignment)
  out = os.path.join(directory, "model.gguf")
  with open(out, "wb") as f:
    f.write(body)
    f.write(memoryview(raw)[file.data_offset:])
  return out


def transformers_gguf_model(path: str, directory: str):
  """transformers' own reading of the GGUF file at `path` (float32, eval mode), from
  `gguf_without_vocabulary`'s copy in `directory`. transformers asks gguf for its tensor name
  map once per submodule (SmolLM2: about 400 times, 7 s); here it is built once per load."""
  import functools  # pylint: disable=g-import-not-at-top
  import gguf  # pylint: disable=g-import-not-at-top
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  gguf_without_vocabulary(path, directory)
  build = gguf.get_tensor_name_map
  gguf.get_tensor_name_map = functools.lru_cache(build)
  try:
    return transformers.AutoModelForCausalLM.from_pretrained(
        directory, gguf_file="model.gguf", dtype=torch.float32).eval()
  finally:
    gguf.get_tensor_name_map = build
