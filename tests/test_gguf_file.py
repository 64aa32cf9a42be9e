"""Our GGUF reader against the `gguf` package's own reader and writer."""

import os

import numpy as np
import pytest

from thickets_jax.errors import InputError
from thickets_jax.llm import gguf_file

gguf = pytest.importorskip("gguf")


def _write(path):
  """Every metadata value type, arrays of each, and plain and quantised tensors."""
  writer = gguf.GGUFWriter(str(path), "llama")
  for add, key, value in (
      (writer.add_uint8, "t.u8", 200), (writer.add_int8, "t.i8", -7),
      (writer.add_uint16, "t.u16", 60000), (writer.add_int16, "t.i16", -300),
      (writer.add_uint32, "t.u32", 4_000_000_000), (writer.add_int32, "t.i32", -5),
      (writer.add_float32, "t.f32", 0.1), (writer.add_uint64, "t.u64", 2**40),
      (writer.add_int64, "t.i64", -(2**40)), (writer.add_float64, "t.f64", 1 / 3),
      (writer.add_bool, "t.bool", True), (writer.add_string, "t.str", "Grüße <|im_end|>"),
      (writer.add_array, "t.ints", [3, -1, 2]), (writer.add_array, "t.floats", [0.5, -2.25]),
      (writer.add_array, "t.strs", ["a", "", "Ġthe", "日本"]),
      (writer.add_array, "t.bools", [True, False])):
    add(key, value)
  rng = np.random.default_rng(0)
  writer.add_tensor("plain.f32", rng.standard_normal((3, 5)).astype(np.float32))
  writer.add_tensor("plain.f16", rng.standard_normal((2, 4)).astype(np.float16))
  weight = rng.standard_normal((4, 64)).astype(np.float32)
  writer.add_tensor("quant.q8_0", gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0),
                    raw_dtype=gguf.GGMLQuantizationType.Q8_0)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_metadata_and_tensors_are_what_the_gguf_package_reads(tmp_path):
  path = tmp_path / "model.gguf"
  _write(path)
  ours, theirs = gguf_file.read(str(path)), gguf.GGUFReader(str(path))
  expected = {k: f.contents() for k, f in theirs.fields.items() if not k.startswith("GGUF.")}
  assert ours.metadata == expected
  assert {k: type(v) for k, v in ours.metadata.items()} == {k: type(v) for k, v in expected.items()}
  assert ours.data_offset == theirs.data_offset and len(ours.tensors) == len(theirs.tensors) == 3
  for a, b in zip(ours.tensors, theirs.tensors):
    assert (a.name, a.shape, a.tensor_type) == (b.name, tuple(b.shape.tolist()), b.tensor_type)
    assert a.data.dtype == b.data.dtype and np.array_equal(a.data, b.data)
    np.testing.assert_array_equal(gguf.quants.dequantize(a.data, a.tensor_type),
                                  gguf.quants.dequantize(b.data, b.tensor_type))
  first, last = ours.spans["general.architecture"], ours.spans[list(ours.metadata)[-1]]
  assert first[0] == 24 and last[1] == ours.tensor_infos[0] < ours.tensor_infos[1] <= ours.data_offset


@pytest.mark.parametrize("cut", [0, 3, 40, -20])
def test_a_cut_or_foreign_file_is_refused_naming_it(tmp_path, cut):
  path = tmp_path / "model.gguf"
  _write(path)
  data = path.read_bytes()
  path.write_bytes(data[:cut] if cut >= 0 else data[:cut])
  with pytest.raises(InputError, match=r"model.gguf is not a readable GGUF file \(.+\)\.$"):
    gguf_file.read(str(path))


def test_another_version_is_refused(tmp_path):
  path = tmp_path / "model.gguf"
  _write(path)
  data = bytearray(path.read_bytes())
  data[4:8] = (1).to_bytes(4, "little")
  path.write_bytes(bytes(data))
  with pytest.raises(InputError, match="GGUF version 1; this reader takes versions 2 and 3"):
    gguf_file.read(str(path))


def test_a_tokenizer_another_process_cached_first_is_kept(tmp_path, monkeypatch):
  """Two processes on a fresh machine both build the tokenizer; the second to finish keeps the
  first's cache and leaves no staging directory behind."""
  from thickets_jax.llm import assets, tokenizer  # pylint: disable=g-import-not-at-top
  path, cache = assets.gguf_path(assets.SMOLLM2_135M_INSTRUCT), str(tmp_path / "tokenizer")
  first = tokenizer.from_gguf(path, cache)
  isdir, checks = os.path.isdir, []

  def missed_once(name):  # the other process had not finished when this one looked
    checks.append(name)
    return False if name == cache and len(checks) == 1 else isdir(name)
  monkeypatch.setattr(os.path, "isdir", missed_once)
  second = tokenizer.from_gguf(path, cache)
  assert checks[0] == cache and len(checks) >= 2
  assert second("7 * 6 = 42")["input_ids"] == first("7 * 6 = 42")["input_ids"]
  assert os.listdir(tmp_path) == ["tokenizer"]
