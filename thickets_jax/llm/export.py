"""A RandOpt member, or the averaged-weights model of its top K, as a Hugging Face checkpoint
that `transformers` loads as it is, or a low-rank member as a PEFT LoRA adapter
(`thickets_jax.llm.adapter`).

The member (each averaged member) is rebuilt from its run's `topk.json` (`(seed, sigma)` and
the `PerturbSpec`) on the base weights the run used, in the run's dtype, so its bits are the
ones that were scored; it is then written as `model.safetensors` (Hugging Face tensor names and
layout of its architecture, float32 or bfloat16), `config.json` (`architectures.to_hf`),
`generation_config.json` (greedy, stopping at the tokens our generator stops at), the tokenizer
files and `thickets_member.json` (where it came from).
"""

import dataclasses
import os
import shutil
import tempfile
from typing import Optional

import jax.numpy as jnp

from thickets_jax import configs, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm import adapter, architectures, randopt, registry, session, weights
from thickets_jax.llm.codec import PromptCodec
from thickets_jax.llm.config import ModelConfig
from thickets_jax.perturb import averaged_member, rebuild_member


FORMATS = ("checkpoint", "lora")


@dataclasses.dataclass(frozen=True)
class ExportConfig(configs.Config):
  """Which member of which run, written where, in which dtype."""
  run_dir: Optional[str] = configs.setting(
      None, "A finished randopt run (holding topk.json); required.")
  out: Optional[str] = configs.setting(None, "A new directory for the checkpoint; required.")
  member: str = configs.setting(
      "top1", "top1, a rank k of the saved top-K, or mean (mean:k): the averaged-weights model "
      "θ + the mean displacement of the saved top-K (of its first k).")
  dtype: str = configs.setting("float32", "Dtype of the written weights.",
                               choices=tuple(session.DTYPES))
  format: str = configs.setting(  # pylint: disable=redefined-builtin
      "checkpoint", "checkpoint (the member's weights) or lora (a low-rank member as a PEFT "
      "adapter on its base checkpoint, written to OUT/base when the run read no checkpoint "
      "directory).", choices=FORMATS)

  def validate(self) -> None:
    if not self.run_dir or not self.out:
      raise InputError("--run_dir and --out are required.")
    if self.dtype not in session.DTYPES:
      raise InputError(f"unknown --dtype {self.dtype!r}; known: {', '.join(session.DTYPES)}.")
    if self.format not in FORMATS:
      raise InputError(f"unknown --format {self.format!r}; known: {', '.join(FORMATS)}.")


def pick_members(saved: dict, member: str) -> tuple[str, list[dict]]:
  """`member` -> (what it is, the records of the members it is built from): "top1" or a rank k
  in 1..K of the saved top-K is one member; "mean" (or "mean:k") averages the top K (k)."""
  members = saved["members"]
  head, _, count = member.partition(":")
  mean = head == "mean"
  try:
    rank = (int(count) if count else len(members)) if mean else (
        1 if member == "top1" else int(member))
  except ValueError:
    raise InputError(f"--member takes top1, a rank 1..{len(members)}, mean or mean:k, got "
                     f"{member!r}.") from None
  if not 1 <= rank <= len(members):
    raise InputError(f"--member {member} is outside the saved top-{len(members)}.")
  if mean:
    return f"mean of the top {rank}", members[:rank]
  return f"rank {rank}", [members[rank - 1]]


def export_member(config: ExportConfig) -> dict:
  """Writes the member of `config.run_dir` ranked `config.member` to the new directory
  `config.out`.

  Returns the provenance record also written to `out/thickets_member.json`.
  """
  run_dir, out, member, dtype = config.run_dir, config.out, config.member, config.dtype
  saved = randopt.load_topk(run_dir)
  what, records = pick_members(saved, member)
  spec = saved["perturbation"]
  known = saved["model"] in registry.MODELS or saved["model"] == registry.CHECKPOINT
  if spec.stacked != llm_model.STACKED_LEAVES or not known:
    raise InputError(f"{run_dir}/topk.json names a model or perturbation this version cannot "
                     f"rebuild ({saved['model']}, stacked={spec.stacked!r}).")
  if saved["dtype"] not in session.DTYPES:
    raise InputError(f"{run_dir}/topk.json names an unknown dtype {saved['dtype']!r}.")
  workdir.check_new_path(out, "--out", directory=True)
  if os.path.exists(out) and os.listdir(out):
    raise InputError(f"--out {out} exists and is not empty; give a new directory.")
  if config.format == "lora":
    adapter.check_exportable(spec)
  loaded = registry.load(saved["model"], saved["weights"], session.DTYPES[saved["dtype"]])
  randopt.check_rebuildable(saved, loaded, run_dir)
  provenance = {"run_dir": os.path.abspath(run_dir), "model": saved["model"],
                "task": saved["task"], "member": what, "members": records,
                "perturbation": spec.to_json(), "base_weights": saved["weights_source"],
                "search_dtype": saved["dtype"], "dtype": dtype, "format": config.format}
  if config.format == "lora":
    tensors, fields = adapter.adapter_tensors(loaded.config, loaded.params, records, spec)
    base = os.path.abspath(saved["weights"]) if saved["weights"] else None
    provenance["base_checkpoint"] = base or os.path.join(os.path.abspath(out), "base")

    def write(directory):
      if base is None:  # the base read from a GGUF package: written as a checkpoint beside it
        os.makedirs(os.path.join(directory, "base"))
        _write(os.path.join(directory, "base"), loaded, loaded.params, session.DTYPES[dtype],
               {key: provenance[key] for key in ("model", "base_weights")})
      adapter.write(directory, tensors, fields, provenance["base_checkpoint"],
                    session.DTYPES[dtype])
      workdir.write_json(os.path.join(directory, "thickets_member.json"), provenance)
  else:
    if what.startswith("rank"):
      params = rebuild_member(loaded.params, records[0]["seed"], records[0]["sigma"], spec)
    else:
      params = averaged_member(loaded.params, [r["seed"] for r in records],
                               [r["sigma"] for r in records], spec)
    write = lambda directory: _write(directory, loaded, params, session.DTYPES[dtype],
                                     provenance)
  staging = tempfile.mkdtemp(dir=os.path.dirname(os.path.abspath(out)), suffix=".partial")
  try:
    write(staging)
    if os.path.exists(out):
      os.rmdir(out)
    os.replace(staging, out)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return provenance


def write_model(directory: str, config: ModelConfig, params, dtype, **token_ids) -> None:
  """`model.safetensors` and `config.json` of `params` in the Hugging Face layout of
  `config`'s architecture (the text model), stored in `dtype`; `token_ids` (bos_token_id,
  eos_token_id, pad_token_id) go into the config."""
  import transformers  # pylint: disable=g-import-not-at-top
  from safetensors import flax as safetensors_flax  # pylint: disable=g-import-not-at-top
  tensors = {name: jnp.asarray(t, dtype) for name, t in weights.hf_tensors(config, params)}
  safetensors_flax.save_file(tensors, os.path.join(directory, "model.safetensors"),
                             metadata={"format": "pt"})
  transformers.AutoConfig.for_model(**architectures.to_hf(config), dtype=jnp.dtype(dtype).name,
                                    **token_ids).save_pretrained(directory)


def _write(directory: str, loaded: registry.LoadedModel, params, dtype, provenance: dict) -> None:
  import transformers  # pylint: disable=g-import-not-at-top
  codec = PromptCodec(loaded.tokenizer, batch_size=1, chat=loaded.entry.instruct)
  tokenizer = loaded.tokenizer
  write_model(directory, loaded.config, params, dtype, bos_token_id=tokenizer.bos_token_id,
              eos_token_id=tokenizer.eos_token_id, pad_token_id=codec.pad_id)
  transformers.GenerationConfig(eos_token_id=list(codec.stop_ids), pad_token_id=codec.pad_id,
                                do_sample=False).save_pretrained(directory)
  tokenizer.save_pretrained(directory)
  workdir.write_json(os.path.join(directory, "thickets_member.json"), provenance)
