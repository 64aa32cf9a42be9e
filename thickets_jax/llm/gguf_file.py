"""A GGUF file (llama.cpp's format, versions 2 and 3, little-endian): its metadata as Python
values and its tensors as views of the memory-mapped file.

Why not `gguf.GGUFReader`: it builds a numpy view for every element of every metadata array,
and a vocabulary is three or four such arrays (tokens, scores, types, merges). Opening the
offline models takes it 6 s (SmolLM2, 49k tokens), 18 s (Qwen2.5-Coder, 151k tokens and
merges) and 21 s (Gemma-3, 262k tokens); this reader walks the same layout with `struct` and one
`np.frombuffer` per numeric array, and opens each of them in under a second. The tensors it
returns are what `gguf.quants.dequantize` takes, as GGUFReader's are (uint8 rows of quantised
blocks, or the float array itself), and the layout constants come from the `gguf` package.
"""

import dataclasses
import mmap
import struct
from typing import Any

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFReader, GGUFValueType

from thickets_jax.errors import InputError

_MAGIC = b"GGUF"
_VERSIONS = (2, 3)
_DEFAULT_ALIGNMENT = 32
# The numeric metadata value types (the gguf package's own table), little-endian.
_SCALARS = {kind: np.dtype(t).newbyteorder("<")
            for kind, t in GGUFReader.gguf_scalar_to_np.items()}
# Tensor types stored as plain numpy arrays; every other type is rows of quantised blocks,
# handed over as uint8 `[..., bytes per row]`.
_PLAIN = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16,
          GGMLQuantizationType.F64: np.float64, GGMLQuantizationType.I8: np.int8,
          GGMLQuantizationType.I16: np.int16, GGMLQuantizationType.I32: np.int32,
          GGMLQuantizationType.I64: np.int64}


@dataclasses.dataclass(frozen=True)
class Tensor:
  """One tensor: `shape` in GGUF order (fastest-varying first, as GGUFReader gives it), `data`
  a read-only view of the file in the layout `gguf.quants.dequantize` takes."""
  name: str
  shape: tuple[int, ...]
  tensor_type: Any  # gguf.GGMLQuantizationType
  data: np.ndarray


@dataclasses.dataclass(frozen=True)
class GGUFFile:
  """`metadata`: key -> str | int | float | bool | list; `spans`: key -> (start, end) byte range
  of that key-value pair in the file; `tensor_infos`: the byte range of the tensor directory;
  `data_offset`: where tensor data starts (tensor offsets count from there)."""
  path: str
  version: int
  metadata: dict[str, Any]
  tensors: list[Tensor]
  spans: dict[str, tuple[int, int]]
  tensor_infos: tuple[int, int]
  data_offset: int


class _Cursor:
  """Reads little-endian values from a buffer, advancing an offset."""

  def __init__(self, buffer, offset: int = 0):
    self.buffer, self.offset = buffer, offset

  def scalar(self, fmt: str):
    value, = struct.unpack_from(fmt, self.buffer, self.offset)
    self.offset += struct.calcsize(fmt)
    return value

  def string(self) -> str:
    length = self.scalar("<Q")
    start, self.offset = self.offset, self.offset + length
    if self.offset > len(self.buffer):
      raise ValueError(f"a string of {length} bytes runs past the end of the file")
    return bytes(self.buffer[start:self.offset]).decode("utf-8")

  def numbers(self, dtype: np.dtype, count: int) -> list:
    """`count` numbers in one read, as Python numbers (`.tolist()`, as GGUFReader gives them)."""
    end = self.offset + count * dtype.itemsize
    if end > len(self.buffer):
      raise ValueError(f"{count} values of {dtype} run past the end of the file")
    values = np.frombuffer(self.buffer, dtype, count, self.offset).tolist()
    self.offset = end
    return values

  def value(self, kind: int):
    if kind == GGUFValueType.STRING:
      return self.string()
    if kind in _SCALARS:
      return self.numbers(_SCALARS[kind], 1)[0]
    if kind != GGUFValueType.ARRAY:
      raise ValueError(f"unknown metadata value type {kind}")
    item, count = self.scalar("<I"), self.scalar("<Q")
    if item in _SCALARS:
      return self.numbers(_SCALARS[item], count)
    return [self.value(item) for _ in range(count)]


def read(path: str) -> GGUFFile:
  """The metadata and tensor views of the GGUF file at `path`; a file that is not one (or is
  cut short) is refused naming it."""
  try:
    with open(path, "rb") as f:
      buffer = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
  except (OSError, ValueError) as e:
    raise InputError(f"{path} is not a readable GGUF file ({e}).") from None
  try:
    return _parse(path, buffer)
  except (ValueError, struct.error, UnicodeDecodeError) as e:
    raise InputError(f"{path} is not a readable GGUF file ({e}).") from None


def _parse(path: str, buffer) -> GGUFFile:
  if bytes(buffer[:4]) != _MAGIC:
    raise ValueError("it does not start with the GGUF magic")
  cursor = _Cursor(buffer, 4)
  version = cursor.scalar("<I")
  if version not in _VERSIONS:
    raise ValueError(f"GGUF version {version}; this reader takes versions 2 and 3, "
                     "little-endian")
  tensor_count, kv_count = cursor.scalar("<Q"), cursor.scalar("<Q")
  metadata, spans = {}, {}
  for _ in range(kv_count):
    start = cursor.offset
    key = cursor.string()
    if key in metadata:
      raise ValueError(f"the metadata key {key} appears twice")
    metadata[key] = cursor.value(cursor.scalar("<I"))
    spans[key] = (start, cursor.offset)
  infos_start, infos = cursor.offset, []
  for _ in range(tensor_count):
    name = cursor.string()
    shape = tuple(cursor.scalar("<Q") for _ in range(cursor.scalar("<I")))
    infos.append((name, shape, GGMLQuantizationType(cursor.scalar("<I")), cursor.scalar("<Q")))
  alignment = metadata.get("general.alignment", _DEFAULT_ALIGNMENT)
  if alignment <= 0 or alignment & (alignment - 1):
    raise ValueError(f"general.alignment {alignment} is not a power of two")
  data_offset = -(-cursor.offset // alignment) * alignment
  tensors, seen = [], set()
  for name, shape, kind, offset in infos:
    if name in seen:
      raise ValueError(f"the tensor {name} appears twice")
    seen.add(name)
    block, block_bytes = GGML_QUANT_SIZES[kind]
    rows = tuple(reversed(shape))  # numpy order: slowest first
    count = int(np.prod(shape, dtype=np.int64))
    start = data_offset + offset
    if kind in _PLAIN:
      dtype = np.dtype(_PLAIN[kind])
      size = count * dtype.itemsize
    else:
      dtype, size = np.dtype(np.uint8), count // block * block_bytes
      rows = (*rows[:-1], rows[-1] // block * block_bytes)
    if start + size > len(buffer):
      raise ValueError(f"the tensor {name} runs past the end of the file")
    data = np.frombuffer(buffer, dtype, size // dtype.itemsize, start).reshape(rows)
    tensors.append(Tensor(name, shape, kind, data))
  return GGUFFile(path, version, metadata, tensors, spans, (infos_start, cursor.offset),
                  data_offset)
