"""Perturbation scales: how a member's noise ε on one tensor is divided before σ multiplies it.

Each tensor (each layer of a stacked `[layers, ...]` leaf is its own tensor) gets the
displacement σ·ε/c, where c is (docs/method.md):

  * "isotropic": 1, every entry has std σ (the paper's RandOpt; `PerturbSpec.relative` then
    multiplies by the tensor's std instead);
  * "frobenius": ‖ε‖_F, so every tensor moves by exactly σ in Frobenius norm;
  * "natural": the tensor's natural norm ‖ε‖_nat: the largest row norm of an embedding table
    [vocab, d], the spectral norm of any other matrix (8 power iterations from the all-ones
    vector, an estimate from below), the largest |entry| of a vector (norm scales, biases);
  * "modular": s·‖ε‖_nat, with the module-wise factor s = M / (m_g / n_g) of the modular norm
    under unit sensitivities: m_g the mass of the tensor's group g (embedding, attention, mlp,
    head, norm, other), n_g the number of perturbed tensors in g, and M the sum of the masses
    of the groups present. A group of mass 0 is not perturbed.

These are the scales of the RandOpt reference's Modular-Norm fork (its `modular_shell`; its
`modular_radial`, one denominator for the whole model, is not offered). They are written here
rather than taken from Modula, whose norms act on its own module objects, not on a pytree.
"""

import dataclasses
from typing import Iterable

import jax
import jax.numpy as jnp

from thickets_jax import configs
from thickets_jax.errors import InputError

SCALES = ("isotropic", "frobenius", "natural", "modular")
GROUPS = ("embedding", "attention", "mlp", "head", "norm", "other")
# Input : hidden : output masses 1 : 1 : 1 (the hidden mass split between attention and MLP),
# and a small mass for the rest, as the modular-norm reference allocates them.
DEFAULT_MASSES = "embedding=1,attention=0.5,mlp=0.5,head=1,norm=0.1,other=0.1"
POWER_ITERATIONS = 8
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class ScaleSettings(configs.Config):
  """The scale settings of a config that perturbs (keyword-only, so any config can take them)."""
  scale: str = configs.setting(
      "isotropic", "What each tensor's noise is divided by: isotropic (nothing), frobenius (its "
      "Frobenius norm), natural (its natural norm) or modular (natural norm times the "
      "module-wise factor of --masses).", choices=SCALES, kw_only=True)
  masses: str = configs.setting(
      DEFAULT_MASSES, "--scale modular: the mass of each module group, GROUP=MASS,... (groups "
      f"not named keep these defaults; groups: {', '.join(GROUPS)}).", kw_only=True)


def masses(text: str) -> dict[str, float]:
  """{group: mass} of every group from "GROUP=MASS,...", the groups not named at their
  `DEFAULT_MASSES`; one sentence for an unknown group or a mass that is not finite and >= 0."""
  pairs = {}
  for item in filter(None, (DEFAULT_MASSES + "," + text).split(",")):
    name, _, value = item.partition("=")
    try:
      mass = float(value)
    except ValueError:
      mass = float("nan")
    if name.strip() not in GROUPS or not 0 <= mass < float("inf"):
      raise InputError(f"--masses takes GROUP=MASS,... with masses >= 0 and groups among "
                       f"{', '.join(GROUPS)}; got {item!r}.")
    pairs[name.strip()] = mass
  if not any(pairs.values()):
    raise InputError("--masses needs at least one positive mass.")
  return pairs


def canonical_masses(text: str) -> str:
  """`text` with every group, in `GROUPS` order: "embedding=1,attention=0.5,..."."""
  return ",".join(f"{g}={m:g}" for g, m in masses(text).items())


def group(name: str) -> str:
  """The module group of a leaf path name: `lm_head/...` head, `embed/...` embedding; below
  `layers/`, a module `attn/...` attention (its q/k norms included), `mlp/...` mlp, a module
  named `*norm` norm (`attn_norm`, `final_norm`); anything else other."""
  parts = name.split("/")
  if parts[0] == "layers":
    parts = parts[1:]
  module = parts[0]
  if module == "lm_head":
    return "head"
  if module.startswith("embed"):
    return "embedding"
  if module == "attn":
    return "attention"
  if module == "mlp":
    return "mlp"
  if module.endswith("norm"):
    return "norm"
  return "other"


def modular_factors(tensors: Iterable[tuple[str, int]], mass_text: str) -> dict[str, float]:
  """s of each perturbed leaf (module docstring), from (name, tensors in the leaf) pairs: a
  stacked leaf counts one tensor per layer. A leaf of a massless group gets s = inf."""
  tensors = list(tensors)
  mass = masses(mass_text)
  counts = {g: 0 for g in GROUPS}
  for name, count in tensors:
    counts[group(name)] += count
  total = sum(mass[g] for g in GROUPS if counts[g] and mass[g] > 0)
  return {name: (total * counts[group(name)] / mass[group(name)] if mass[group(name)] > 0
                 else float("inf")) for name, _ in tensors}


def denominator(noise: jax.Array, name: str, scale: str, is_stacked: bool) -> jax.Array:
  """c of `noise` (module docstring) without the modular factor s, float32, broadcastable
  against `noise`: [layers, 1, ...] for a stacked leaf, else [1, ...]."""
  noise = noise.astype(jnp.float32)
  core = noise.shape[1:] if is_stacked else noise.shape
  one = lambda x: _natural_norm(x, name) if scale in ("natural", "modular") else _frobenius(x)
  values = jax.vmap(one)(noise) if is_stacked else one(noise)
  return jnp.maximum(values, _EPS).reshape(values.shape + (1,) * len(core))


def _frobenius(x: jax.Array) -> jax.Array:
  return jnp.sqrt(jnp.sum(jnp.square(x)))


def _natural_norm(x: jax.Array, name: str) -> jax.Array:
  """The natural norm of one tensor x (module docstring); a scalar."""
  if x.ndim == 2 and group(name) == "embedding":
    return jnp.max(jnp.sqrt(jnp.sum(jnp.square(x), axis=1)))
  if x.ndim == 2:
    return _spectral_norm(x)
  if x.ndim <= 1:
    return jnp.max(jnp.abs(x))
  return _frobenius(x)


def _spectral_norm(matrix: jax.Array) -> jax.Array:
  """‖matrix‖₂ by `POWER_ITERATIONS` power iterations from the normalised all-ones vector (a
  second random stream would make the member depend on more than its key)."""
  unit = lambda v: v / jnp.maximum(jnp.linalg.norm(v), _EPS)

  dot = lambda a, b: jnp.dot(a, b, precision=jax.lax.Precision.HIGHEST)

  def step(_, v):
    return unit(dot(matrix.T, unit(dot(matrix, v))))
  v = jax.lax.fori_loop(0, POWER_ITERATIONS, step, unit(jnp.ones(matrix.shape[1], jnp.float32)))
  return jnp.linalg.norm(dot(matrix, v))
