"""Tokenizers and chat templates through `transformers`, from an HF directory or a GGUF file.

`AutoTokenizer.from_pretrained(dir, gguf_file=...)` imports torch to read the file. We read the
GGUF metadata with `llm.gguf_file` instead and hand it to transformers' own GGUF tokenizer
converter, so no torch is needed; the result is saved once as a fast tokenizer in the cache.
"""

import os
import shutil
import tempfile

from thickets_jax.errors import InputError
from thickets_jax.llm import gguf_file

# tokenizer.ggml.* metadata -> the names transformers' GGUF converter expects.
_GGUF_TOKENIZER_FIELDS = {
    "model": "tokenizer_type", "pre": "pre_tokenizer_type", "tokens": "tokens",
    "scores": "scores", "token_type": "token_type", "merges": "merges",
    "bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id",
    "unknown_token_id": "unk_token_id", "padding_token_id": "pad_token_id",
    "add_space_prefix": "add_prefix_space",
}
_SPECIAL = {"bos_token": "bos_token_id", "eos_token": "eos_token_id",
            "unk_token": "unknown_token_id", "pad_token": "padding_token_id"}


def from_directory(directory: str):
  from transformers import AutoTokenizer  # pylint: disable=g-import-not-at-top
  try:
    return AutoTokenizer.from_pretrained(directory)
  except (OSError, ValueError) as e:
    raise InputError(f"cannot build a tokenizer from {directory}: {e}") from None


def from_gguf(path: str, cache: str):
  """The tokenizer (with chat template, and BOS first when the file says llama.cpp adds it)
  described by a GGUF file, cached under `cache`."""
  from transformers import PreTrainedTokenizerFast  # pylint: disable=g-import-not-at-top
  if os.path.isdir(cache):
    return PreTrainedTokenizerFast.from_pretrained(cache)
  from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer  # pylint: disable=g-import-not-at-top
  fields = gguf_file.read(path).metadata
  value = fields.get

  tokenizer_dict = {name: value(f"tokenizer.ggml.{key}")
                    for key, name in _GGUF_TOKENIZER_FIELDS.items()
                    if f"tokenizer.ggml.{key}" in fields}
  backend, _ = convert_gguf_tokenizer(value("general.architecture"), tokenizer_dict)
  tokens = tokenizer_dict["tokens"]
  specials = {name: tokens[value(f"tokenizer.ggml.{key}")] for name, key in _SPECIAL.items()
              if value(f"tokenizer.ggml.{key}") is not None}
  tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend,
                                      chat_template=value("tokenizer.chat_template"),
                                      add_bos_token=bool(value("tokenizer.ggml.add_bos_token")),
                                      **specials)
  parent = os.path.dirname(cache)
  os.makedirs(parent, exist_ok=True)
  staging = tempfile.mkdtemp(dir=parent, suffix=".partial")
  tokenizer.save_pretrained(staging)
  try:
    os.replace(staging, cache)
  except OSError:  # another process published the same tokenizer first; it is the same one
    if not os.path.isdir(cache):
      raise
    shutil.rmtree(staging)
  return tokenizer
