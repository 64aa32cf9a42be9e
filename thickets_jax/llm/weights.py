"""Checkpoints -> parameter trees of `llm.model.Transformer`.

Both loaders go tensor by tensor: each Hugging Face / GGUF tensor is read, converted to the
target dtype and written into its slot of a preallocated leaf (layer i of a stacked
`[layers, ...]` leaf), and each finished leaf is placed on its device(s) before the next one is
built, so the host never holds a second full copy of the model.

On a mesh (`sharding_of`), a safetensors checkpoint is read shard by shard: every process reads
only the slices its own devices hold (`jax.make_array_from_callback` over safetensors' lazy
slices), so no process ever holds a full leaf it does not keep and nothing is gathered across
hosts (`device_put` of a host array onto a multi-host sharding all-gathers it to check that
every process passed the same values). Quantised GGUF tensors are read whole onto a mesh, then
cut into each device's shards the same way.

A GGUF tensor is dequantised a block of rows at a time straight into its leaf (`Rows`), so
the host never holds a dequantised copy of a whole tensor beside the leaf (Qwen2.5-Coder-0.5B's
151936 x 896 embedding: 0.5 GB of float32 temporaries, each freed to the kernel and faulted in
again by the next tensor). On a 2-core VM that model now loads in 6-9 s (12-30 s before), with
a 0.9 GB lower peak.
"""

import dataclasses
import json
import math
import os
from typing import Any, Callable, Iterator, Optional

import jax
import numpy as np

from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm import architectures, gguf_file
from thickets_jax.llm.config import ModelConfig
from thickets_jax.tree import path_name

PyTree = Any
Placer = Callable[[str, np.ndarray], jax.Array]
BLOCK_ELEMENTS = 1 << 20  # elements of a GGUF tensor dequantised at once (4 MB of float32)


@dataclasses.dataclass(frozen=True)
class Rows:
  """A checkpoint tensor in Hugging Face layout ([out, in]), read by blocks of rows:
  `read(rows: slice) -> array` of those rows, every block but the last a multiple of `multiple`
  rows (e.g. whole attention heads)."""
  shape: tuple[int, ...]
  read: Callable[[slice], np.ndarray]
  multiple: int = 1

  def blocks(self) -> Iterator[tuple[slice, np.ndarray]]:
    per_row = math.prod(self.shape[1:]) * self.multiple
    step = max(1, BLOCK_ELEMENTS // per_row) * self.multiple
    for start in range(0, self.shape[0], step):
      rows = slice(start, min(start + step, self.shape[0]))
      yield rows, self.read(rows)


def transposed(leaf: str) -> bool:
  """Kernels are [in, out] here and [out, in] in Hugging Face and GGUF files."""
  return leaf.endswith("/kernel")


def hf_names(config: ModelConfig, prefix: str = "model.") -> dict[str, str]:
  """Our leaf path -> Hugging Face tensor name (`{i}` for the layer) of `config`'s architecture."""
  return {leaf: name.replace("{p}", prefix)
          for leaf, name in architectures.get(config.architecture).hf_names.items()}


def hf_tensors(config: ModelConfig, params: PyTree) -> Iterator[tuple[str, jax.Array]]:
  """Our parameter tree as Hugging Face tensors (the architecture's text-model layout), one at
  a time: (name, [out, in] array), one per layer for stacked leaves; a tied head is not
  repeated (it is the embedding)."""
  names = hf_names(config)
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    name = path_name(path)
    for i in range(config.num_layers) if name.startswith("layers/") else [None]:
      tensor = leaf if i is None else leaf[i]
      yield names[name].format(i=i), tensor.T if transposed(name) else tensor


Sharder = Callable[[str, tuple[int, ...]], jax.sharding.Sharding]  # leaf name, shape ->


def default_placer(name: str, leaf: np.ndarray) -> jax.Array:
  del name
  return jax.device_put(leaf)


def placer(sharding_of: Optional[Sharder]) -> Placer:
  """Places a whole host leaf: on the default device, or each addressable shard of
  `sharding_of(name, shape)` cut from it locally (no cross-host check or gather)."""
  if sharding_of is None:
    return default_placer
  return lambda name, leaf: jax.make_array_from_callback(
      leaf.shape, sharding_of(name, leaf.shape), lambda index: leaf[index])


def build_params(config: ModelConfig, names: dict[str, str], read: Callable[[str], np.ndarray],
                 place: Placer = default_placer) -> PyTree:
  """Fills every leaf of the model from `read(tensor_name) -> [out, in]-layout array`.

  Args:
    names: our leaf path -> the checkpoint's tensor name, `{i}` for the layer (`hf_names`).
    read: returns one tensor in Hugging Face layout (any float dtype), whole or as `Rows`.
    place: puts a finished host leaf on device(s), e.g. with a sharding; the host copy is then
      dropped before the next leaf is built.
  """
  abstract = llm_model.abstract_params(config)  # vectors float32 (`modules.param_dtype`)

  def fill(path, spec):
    name = path_name(path)
    hf_name, flip = names[name], transposed(name)
    leaf = np.empty(spec.shape, np.dtype(spec.dtype))  # ml_dtypes' numpy bfloat16 for bf16
    layers = range(config.num_layers) if name.startswith("layers/") else [None]
    for i in layers:
      tensor = read(hf_name.format(i=i))
      if not isinstance(tensor, Rows):
        tensor = np.asarray(tensor)
        tensor = Rows(tensor.shape, tensor.__getitem__)
      target = leaf if i is None else leaf[i]
      expected = target.shape[::-1] if flip else target.shape  # in the checkpoint's layout
      if tuple(tensor.shape) != expected:
        raise InputError(f"tensor {hf_name.format(i=i)} has shape {tuple(tensor.shape)}, but "
                         f"the config implies {expected}.")
      for rows, block in tensor.blocks():  # cast on assignment: no converted copy
        if flip:
          target[..., rows] = block.T
        else:
          target[rows] = block
    return place(name, leaf)

  return jax.tree_util.tree_map_with_path(fill, abstract)


def build_params_sharded(config: ModelConfig, names: dict[str, str],
                         read_slice: Callable[[str, tuple, tuple], np.ndarray],
                         sharding_of: Sharder) -> PyTree:
  """Every leaf of the model as a global array sharded by `sharding_of`, built from only the
  slices this process's devices hold.

  Args:
    names: as `build_params`.
    read_slice: `(hf_tensor_name, index, shape)` -> that slice of the tensor in Hugging Face
      layout, `index` a tuple of slices over its axes, `shape` the whole tensor's shape as the
      config implies it.
    sharding_of: the sharding of each leaf (`sharding.leaf_sharding(mesh)`).
  """
  abstract = llm_model.abstract_params(config)

  def fill(path, spec):
    name = path_name(path)
    hf_name, flip = names[name], transposed(name)
    dtype = np.dtype(spec.dtype)
    stacked = name.startswith("layers/")
    shards = {}  # devices of one process that hold the same slice read it once

    def shard(index: tuple) -> np.ndarray:
      key = tuple((s.start, s.stop, s.step) for s in index)
      if key not in shards:
        out = np.empty([len(range(n)[s]) for n, s in zip(spec.shape, index)], dtype)
        layers = range(config.num_layers)[index[0]] if stacked else [None]
        core = index[1:] if stacked else index
        whole = spec.shape[1:] if stacked else spec.shape
        for j, i in enumerate(layers):
          tensor = np.asarray(read_slice(hf_name.format(i=i), core[::-1] if flip else core,
                                         whole[::-1] if flip else whole))
          (out if i is None else out[j])[...] = tensor.T if flip else tensor  # cast here
        shards[key] = out
      return shards[key]

    return jax.make_array_from_callback(spec.shape, sharding_of(name, spec.shape), shard)

  return jax.tree_util.tree_map_with_path(fill, abstract)


# ---------------------------------------------------------------- Hugging Face safetensors

def hf_config(directory: str, dtype) -> ModelConfig:
  """The model config of a Hugging Face checkpoint; one sentence naming the file if it is bad."""
  path = os.path.join(directory, "config.json")
  if not os.path.isfile(path):
    raise InputError(f"{path} is not a file; a Hugging Face checkpoint needs its config.json.")
  try:
    with open(path) as f:
      record = json.load(f)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise InputError(f"{path} is not valid JSON ({e}).") from None
  if not isinstance(record, dict):
    raise InputError(f"{path} holds a JSON {type(record).__name__}, not a model config object.")
  try:
    config = architectures.from_hf_config(record, dtype)
  except InputError as e:  # before ValueError, its base
    raise InputError(f"{path}: {e}") from None
  except KeyError as e:
    raise InputError(f"{path} lacks the field {e.args[0]!r}.") from None
  except (TypeError, ValueError) as e:
    raise InputError(f"{path} has a field of the wrong type ({e}).") from None
  sizes = ("vocab_size", "hidden_size", "intermediate_size", "num_layers", "num_heads",
           "num_kv_heads", "head_dim")
  bad = next((f for f in sizes if type(getattr(config, f)) is not int or getattr(config, f) <= 0),
             None)
  if bad:
    raise InputError(f"{path} gives {bad} = {getattr(config, bad)!r}; it must be a positive "
                     "integer.")
  return config


def _index_files(directory: str, index: str) -> dict[str, str]:
  try:
    with open(index) as f:
      weight_map = json.load(f)["weight_map"]
    if not isinstance(weight_map, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
      raise TypeError("weight_map must map tensor names to file names")
  except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
    raise InputError(f"{index} is not a valid safetensors index ({type(e).__name__}: {e}).") from None
  files = {name: os.path.join(directory, file) for name, file in weight_map.items()}
  missing = sorted({f for f in files.values() if not os.path.isfile(f)})
  if missing:
    raise InputError(f"{index} names {missing[0]}, which is not a file.")
  return files


def _safetensors_files(directory: str) -> dict[str, str]:
  """HF tensor name -> file, from `model.safetensors.index.json` or the files themselves. Every
  file's header is read, so a corrupt file is named here, before any tensor is loaded."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=g-import-not-at-top
  index = os.path.join(directory, "model.safetensors.index.json")
  if os.path.exists(index):
    names = _index_files(directory, index)
    files = sorted(set(names.values()))
  else:
    files = sorted(os.path.join(directory, f) for f in os.listdir(directory)
                   if f.endswith(".safetensors"))
    names = None
  if not files:
    raise InputError(f"{directory} holds no *.safetensors files.")
  found = {}
  for file in files:
    try:
      with safe_open(file, framework="numpy") as f:
        found.update({name: file for name in f.keys()})
    except (SafetensorError, OSError, ValueError) as e:
      raise InputError(f"{file} is not a readable safetensors file ({e}).") from None
  return found if names is None else names


def check_checkpoint(directory: str) -> None:
  """Reads a Hugging Face checkpoint's config and file headers (no tensors): bad files are
  refused with one sentence before any run starts."""
  hf_config(directory, np.float32)
  _safetensors_files(directory)


def load_safetensors(directory: str, config: ModelConfig,
                     sharding_of: Optional[Sharder] = None) -> PyTree:
  """Params from a Hugging Face checkpoint directory (single file or sharded with an index):
  whole tensors on the default device, or with `sharding_of` each process's shards only."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=g-import-not-at-top
  files = _safetensors_files(directory)
  names = hf_names(config, _model_prefix(config, files, directory))
  handles = {}
  if sharding_of is not None:
    return build_params_sharded(config, names, _slice_reader(directory, files), sharding_of)

  def read(name):
    if name not in files:
      raise InputError(f"the checkpoint in {directory} has no tensor {name}.")
    file = files[name]
    try:
      if file not in handles:
        handles[file] = safe_open(file, framework="flax")
      return np.asarray(handles[file].get_tensor(name))
    except (SafetensorError, OSError) as e:
      raise InputError(f"cannot read {name} from {file}: {e}.") from None

  return build_params(config, names, read)


def _model_prefix(config: ModelConfig, files: dict[str, str], directory: str) -> str:
  """The prefix the checkpoint's model tensors carry, among its architecture's (a multimodal
  Gemma-3 keeps its text model under a language-model prefix)."""
  prefixes = architectures.get(config.architecture).hf_prefixes
  found = next((p for p in prefixes if f"{p}embed_tokens.weight" in files), None)
  if found is None:
    raise InputError(f"the checkpoint in {directory} has no {prefixes[0]}embed_tokens.weight "
                     f"(looked under the prefixes {', '.join(prefixes)}).")
  return found


def _slice_reader(directory: str, files: dict[str, str]):
  """`read_slice` over safetensors' lazy slices: only the requested part of a tensor is read;
  a tensor whose shape the config does not imply is refused in one sentence."""
  from safetensors import SafetensorError, safe_open  # pylint: disable=g-import-not-at-top
  handles = {}

  def read_slice(name: str, index: tuple, shape: tuple) -> np.ndarray:
    if name not in files:
      raise InputError(f"the checkpoint in {directory} has no tensor {name}.")
    try:
      if files[name] not in handles:
        handles[files[name]] = safe_open(files[name], framework="numpy")
      lazy = handles[files[name]].get_slice(name)
      if tuple(lazy.get_shape()) != tuple(shape):
        raise InputError(f"tensor {name} has shape {tuple(lazy.get_shape())}, but the config "
                         f"implies {tuple(shape)}.")
      return lazy[index]
    except (SafetensorError, OSError) as e:
      raise InputError(f"cannot read {name} from {files[name]}: {e}.") from None
  return read_slice



# ---------------------------------------------------------------- GGUF (llama.cpp)

def gguf_config(file: gguf_file.GGUFFile, dtype) -> ModelConfig:
  """ModelConfig from a GGUF file's metadata, read as the `config.json` it stands for
  (architectures with `gguf_arch`: llama, qwen2, qwen3, olmo2, gemma3)."""
  fields = file.metadata

  def value(key, default=None):
    if key not in fields:
      if default is None:
        raise InputError(f"the GGUF file lacks the metadata key {key}.")
      return default
    return fields[key]

  arch = value("general.architecture")
  readable = {a.gguf_arch: a for a in architectures.ARCHITECTURES.values() if a.gguf_arch}
  if arch not in readable:
    raise InputError(f"unsupported GGUF architecture {arch!r}; supported: "
                     f"{', '.join(sorted(readable))}.")
  scaling = str(value(f"{arch}.rope.scaling.type", "none"))
  if scaling != "none":
    raise InputError(f"the GGUF file asks for RoPE scaling {scaling!r}, which its loader does not "
                     "read; load the Hugging Face checkpoint instead.")
  tensors = {t.name for t in file.tensors}
  hidden = int(value(f"{arch}.embedding_length"))
  heads = int(value(f"{arch}.attention.head_count"))
  head_dim = int(value(f"{arch}.attention.key_length",
                       value(f"{arch}.rope.dimension_count", hidden // heads)))
  hf = {"model_type": readable[arch].model_types[0],
        "vocab_size": int(value(f"{arch}.vocab_size") if f"{arch}.vocab_size" in fields
                          else len(value("tokenizer.ggml.tokens"))),
        "hidden_size": hidden, "intermediate_size": int(value(f"{arch}.feed_forward_length")),
        "num_hidden_layers": int(value(f"{arch}.block_count")), "num_attention_heads": heads,
        "num_key_value_heads": int(value(f"{arch}.attention.head_count_kv", heads)),
        "head_dim": head_dim, "rope_theta": float(value(f"{arch}.rope.freq_base", 10000.0)),
        "rms_norm_eps": float(value(f"{arch}.attention.layer_norm_rms_epsilon")),
        "tie_word_embeddings": "output.weight" not in tensors}
  if arch == "gemma3":  # llama.cpp fixes what config.json would say: 1/√head_dim, a window
    hf.update(query_pre_attn_scalar=head_dim,  # every sixth layer full, local base 10000
              sliding_window=int(value(f"{arch}.attention.sliding_window")))
  config = architectures.from_hf_config(hf, dtype)
  if arch == "qwen2" and "blk.0.attn_q.bias" not in tensors:
    raise InputError("the qwen2 GGUF file has no q/k/v biases, which Qwen2 has.")
  return config


def _undo_llama_qk_permutation(weight: np.ndarray, heads: int) -> np.ndarray:
  """llama.cpp stores Llama q/k rows interleaved per head for its RoPE; back to rotate-half."""
  rows = weight.shape[0]
  return (weight.reshape(heads, rows // heads // 2, 2, *weight.shape[1:])
          .swapaxes(1, 2).reshape(weight.shape))


def load_gguf(path: str, dtype, place: Placer = default_placer) -> tuple[ModelConfig, PyTree]:
  """Config and params from a GGUF file, every tensor dequantised with `gguf.quants`, a block
  of rows at a time (each row of a quantised tensor is quantised on its own)."""
  from gguf import quants  # pylint: disable=g-import-not-at-top
  file = gguf_file.read(path)
  config = gguf_config(file, dtype)
  arch = architectures.get(config.architecture)
  tensors = {t.name: t for t in file.tensors}

  def read(gguf_name) -> Rows:
    if gguf_name not in tensors:
      raise InputError(f"{path} has no tensor {gguf_name}.")
    tensor = tensors[gguf_name]
    shape = tuple(int(n) for n in reversed(tensor.shape))  # [out, in]; rows are quantised alone
    heads = None
    if arch.gguf_arch == "llama" and gguf_name.endswith(("attn_q.weight", "attn_k.weight")):
      heads = config.num_heads if "attn_q" in gguf_name else config.num_kv_heads
    head_rows = shape[0] // heads if heads else 1

    def rows(block: slice) -> np.ndarray:
      weight = quants.dequantize(tensor.data[block], tensor.tensor_type)
      weight = weight.reshape(-1, *shape[1:])
      if heads:
        weight = _undo_llama_qk_permutation(weight, len(weight) // head_rows)
      if arch.gguf_norm_shift and gguf_name.endswith("norm.weight"):
        weight = weight - arch.gguf_norm_shift
      return weight
    # A 1-D tensor's data is one row of quantised blocks: it is read in one piece.
    return Rows(shape, rows, multiple=head_rows if len(shape) > 1 else shape[0])

  return config, build_params(config, dict(arch.gguf_names), read, place)
