"""Low-rank members as PEFT LoRA adapters on their base checkpoint.

A low-rank member moves each weight matrix by σ·A Bᵀ/√r (`perturb.member_factors`), which is a
LoRA update: for a kernel (ours [in, out], Hugging Face [out, in]) `lora_A` = (σA/√r)ᵀ [r, in]
and `lora_B` = B [out, r]; for the embedding table [vocab, d] `lora_embedding_A` = (σA/√r)ᵀ
[r, vocab] and `lora_embedding_B` = B [d, r]; `lora_alpha` = r, so PEFT's scaling α/r is 1. A
tied head reads the embedding table, so it gets the same update as an `lm_head` LoRA. The
mean of K members is one adapter of rank K·r (the members' factors side by side, A divided
by K).

Vector noise (norm scales, biases; `vector_noise=True`, the default) cannot be a rank-r
update, so it is exported alongside, in the adapter file PEFT reads: a norm's new weight as a
`modules_to_save` module, a bias's displacement as the LoRA's `lora_B` bias (`lora_bias`).
PEFT gives Embedding layers no LoRA bias, so a model with bias noise (Qwen2) carries its
perturbed embedding table whole, as a `modules_to_save` module (vocab × d floats; the tied
head still gets its LoRA).
PEFT and transformers then load `adapter_model.safetensors` on the base checkpoint and give
the member's tokens (tests/test_export.py). The files are written here with safetensors, not
through PEFT, so exporting needs no torch.
"""

import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from thickets_jax import perturb, rng, tree, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import weights
from thickets_jax.llm.config import ModelConfig
from thickets_jax.perturb import PerturbSpec

PREFIX = "base_model.model."  # PEFT's prefix of the wrapped causal LM's tensor names


def check_exportable(spec: PerturbSpec) -> None:
  """One sentence unless the run's members are low-rank: only they have rank-r factors."""
  if spec.noise != "lowrank":
    raise InputError("--format lora needs a run with low-rank members (--noise lowrank): a "
                     "full-rank member's displacement has no rank-r factors.")


def adapter_tensors(config: ModelConfig, params, members: Sequence[dict],
                    spec: PerturbSpec) -> tuple[dict[str, np.ndarray], dict]:
  """The adapter of the mean of `members` ({"seed", "sigma"}; one member is itself).

  Returns:
    (tensors by PEFT name, float32, [out, in] layout; the adapter_config.json fields that
     depend on them: r, lora_alpha, target_modules, modules_to_save, lora_bias).
  """
  check_exportable(spec)
  factors = [_by_leaf(_factors(params, jnp.int32(m["seed"]), jnp.float32(m["sigma"]), spec))
             for m in members]
  names = weights.hf_names(config)
  flat = {tree.path_name(path): leaf
          for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]}
  tensors, targets, saved = {}, [], []
  biased = {}  # module -> its bias displacement
  leaves = sorted(factors[0])
  # PEFT's LoRA biases exclude Embedding layers: a model with bias noise keeps its table whole
  whole_table = spec.vector_noise and any(leaf.endswith("/bias") for leaf in leaves)
  for leaf in leaves:
    parts = [f[leaf] for f in factors]
    for i in range(config.num_layers) if leaf.startswith("layers/") else [None]:
      layer = (lambda x: x) if i is None else (lambda x, i=i: x[i])
      module = names[leaf].format(i=i).rsplit(".", 1)[0]
      if isinstance(parts[0], dict):
        a = np.concatenate([np.asarray(layer(p["a"])) for p in parts], axis=-1) / len(parts)
        b = np.concatenate([np.asarray(layer(p["b"])) for p in parts], axis=-1)
        if leaf == "embed/embedding" and whole_table:
          tensors[f"{PREFIX}{module}.weight"] = np.asarray(flat[leaf], np.float32) + a @ b.T
          saved.append(module)
        else:
          _lora(tensors, module, a, b, embedding=not weights.transposed(leaf))
          targets.append(module)
        if leaf == "embed/embedding" and config.tie_embeddings:
          _lora(tensors, "lm_head", a, b, embedding=False, head=True)
          targets.append("lm_head")
        continue
      if not spec.vector_noise:  # the member leaves its vectors alone
        continue
      delta = np.mean([np.asarray(layer(p)) for p in parts], axis=0)
      if leaf.endswith("/bias"):
        biased[module] = delta
      else:
        tensors[f"{PREFIX}{module}.weight"] = np.asarray(layer(flat[leaf]), np.float32) + delta
        saved.append(module)
  for module, delta in biased.items():
    if module not in targets:
      raise InputError(f"{module}'s bias is perturbed but its weight is not, so no LoRA can "
                       "carry its noise; export the member as a checkpoint.")
    tensors[f"{PREFIX}{module}.lora_B.bias"] = delta
  if biased:  # every LoRA's lora_B then has a bias; the unbiased ones add zero
    for module in targets:
      key = f"{PREFIX}{module}.lora_B.bias"
      if module not in biased and f"{PREFIX}{module}.lora_B.weight" in tensors:
        tensors[key] = np.zeros(tensors[f"{PREFIX}{module}.lora_B.weight"].shape[0], np.float32)
  rank = spec.rank * len(members)
  return tensors, {"r": rank, "lora_alpha": rank, "target_modules": sorted(set(targets)),
                   "modules_to_save": sorted(saved) or None, "lora_bias": bool(biased)}


def write(directory: str, tensors: dict[str, np.ndarray], fields: dict, base_path: str,
          dtype) -> None:
  """`adapter_model.safetensors` (in `dtype`) and `adapter_config.json` for the base checkpoint
  at `base_path`."""
  from safetensors import flax as safetensors_flax  # pylint: disable=g-import-not-at-top
  safetensors_flax.save_file({k: jnp.asarray(v, dtype) for k, v in tensors.items()},
                             os.path.join(directory, "adapter_model.safetensors"),
                             metadata={"format": "pt"})
  workdir.write_json(os.path.join(directory, "adapter_config.json"), {
      "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_path,
      "bias": "none", "fan_in_fan_out": False, "use_rslora": False, "use_dora": False,
      "lora_dropout": 0.0, "inference_mode": True, "init_lora_weights": True, **fields})


def _lora(tensors: dict, module: str, a: np.ndarray, b: np.ndarray, *, embedding: bool,
          head: bool = False) -> None:
  """Writes the LoRA of the update a bᵀ (a [m, r], b [n, r], m x n as our leaf)."""
  if head:  # the tied head's [vocab, d] update is the embedding's a bᵀ, as a Linear
    tensors[f"{PREFIX}{module}.lora_A.weight"], tensors[f"{PREFIX}{module}.lora_B.weight"] = (
        np.ascontiguousarray(b.T), a)
  elif embedding:  # [vocab, d] = (lora_embedding_B lora_embedding_A)ᵀ
    tensors[f"{PREFIX}{module}.lora_embedding_A"] = np.ascontiguousarray(a.T)
    tensors[f"{PREFIX}{module}.lora_embedding_B"] = b
  else:  # a kernel [in, out]: the [out, in] update is b aᵀ
    tensors[f"{PREFIX}{module}.lora_A.weight"] = np.ascontiguousarray(a.T)
    tensors[f"{PREFIX}{module}.lora_B.weight"] = b


_factors = jax.jit(lambda params, seed, sigma, spec: perturb.member_factors(
    params, rng.member_key(seed), sigma, spec), static_argnums=3)


def _by_leaf(factors: dict) -> dict:
  """`member_factors`' nested dict keyed by leaf path name, an {"a", "b"} pair one leaf."""
  pair = lambda x: isinstance(x, dict) and set(x) == {"a", "b"}
  return {tree.path_name(path): value for path, value
          in jax.tree_util.tree_flatten_with_path(factors, is_leaf=pair)[0]}
