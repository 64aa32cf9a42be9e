"""Rotary position embeddings (rotate-half, as Hugging Face) and the RoPE scalings we implement.

A scaling changes the inverse frequencies (and, for YaRN, scales cos and sin by an attention
factor); it is read from `config.json`'s `rope_parameters` (transformers ≥ 5) or `rope_scaling`
(`config.rope_scaling`: the settings as sorted `(key, value)` pairs, hashable). Each one follows
transformers' `modeling_rope_utils` (5.x) formula for formula:
  default  1 / θ^(2i/d)
  linear   the default ÷ factor (position interpolation)
  llama3   Llama 3.1: wavelengths beyond original_context / low_freq_factor ÷ factor, those
           below original_context / high_freq_factor kept, a smooth blend in between
  yarn     NTK-by-parts: interpolated (÷ factor) and extrapolated frequencies blended by a
           linear ramp over the dimensions between the corrections of beta_fast and beta_slow
           rotations; cos and sin × attention_factor (0.1 ln(factor) + 1 unless given)
Any other `rope_type` (dynamic, longrope, ...) is refused in one sentence.
"""

import math
from typing import Any, Mapping

import jax
import jax.numpy as jnp

from thickets_jax.errors import InputError

ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def rope_type(hf: Mapping[str, Any]) -> str:
  """The RoPE variant a Hugging Face config asks for: `rope_parameters` (transformers ≥ 5) or
  the older `rope_scaling`, whose key is `rope_type` (or `type` in early Llama-2 files)."""
  return str(_settings(hf).get("rope_type", "default"))


def _settings(hf: Mapping[str, Any]) -> dict:
  for field in ("rope_parameters", "rope_scaling"):
    settings = hf.get(field)
    if isinstance(settings, Mapping) and ("rope_type" in settings or "type" in settings):
      settings = dict(settings)
      settings.setdefault("rope_type", settings.pop("type", None))
      return settings
  return {}


def scaling_from_hf(hf: Mapping[str, Any]) -> tuple:
  """`ModelConfig.rope_scaling` of a Hugging Face config: () for plain RoPE, else its settings
  as sorted pairs (YaRN's missing factor resolved from the context lengths); one sentence for
  a variant we do not implement or a missing setting."""
  settings = _settings(hf)
  kind = str(settings.get("rope_type", "default"))
  if kind not in ROPE_TYPES:
    raise InputError(f"rope_type {kind!r} (RoPE scaling) is not implemented; supported: "
                     f"{', '.join(ROPE_TYPES)}, so this checkpoint would load with wrong positions.")
  if kind == "default":
    return ()
  settings.pop("rope_theta", None)
  needed = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                              "original_max_position_embeddings"),
            "yarn": ("original_max_position_embeddings",)}[kind]
  missing = [k for k in needed if settings.get(k) is None]
  if missing:
    raise InputError(f"rope_type {kind!r} needs {', '.join(missing)} in config.json.")
  if kind == "yarn" and settings.get("factor") is None:
    settings["factor"] = hf["max_position_embeddings"] / settings["original_max_position_embeddings"]
  return tuple(sorted((k, v) for k, v in settings.items() if v is not None))


def scaling_to_hf(scaling: tuple) -> dict:
  """The `rope_scaling` field of a Hugging Face config ({} for plain RoPE)."""
  return {"rope_scaling": dict(scaling)} if scaling else {}


def frequencies(head_dim: int, theta: float, scaling: tuple = ()) -> tuple[jax.Array, float]:
  """(inverse frequencies [head_dim / 2] float32, attention factor) of a scaling."""
  half = head_dim // 2
  inv_freq = 1.0 / theta ** (jnp.arange(0, 2 * half, 2, dtype=jnp.float32) / (2 * half))
  settings = dict(scaling)
  kind = settings.get("rope_type", "default")
  if kind == "default":
    return inv_freq, 1.0
  if kind == "linear":
    return inv_freq / settings["factor"], 1.0
  if kind == "llama3":
    return _llama3(inv_freq, settings), 1.0
  return _yarn(head_dim, theta, settings)


def _llama3(inv_freq: jax.Array, s: dict) -> jax.Array:
  context, low, high = s["original_max_position_embeddings"], s["low_freq_factor"], s["high_freq_factor"]
  wavelen = 2 * math.pi / inv_freq
  scaled = jnp.where(wavelen > context / low, inv_freq / s["factor"], inv_freq)
  smooth = (context / wavelen - low) / (high - low)
  smoothed = (1 - smooth) * scaled / s["factor"] + smooth * scaled
  medium = ~(wavelen < context / high) & ~(wavelen > context / low)
  return jnp.where(medium, smoothed, scaled)


def _yarn(head_dim: int, theta: float, s: dict) -> tuple[jax.Array, float]:
  factor, context = s["factor"], s["original_max_position_embeddings"]
  mscale = lambda scale, m=1.0: 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0
  attention = s.get("attention_factor")
  if attention is None:
    attention = (mscale(factor, s["mscale"]) / mscale(factor, s["mscale_all_dim"])
                 if s.get("mscale") and s.get("mscale_all_dim") else mscale(factor))
  fast, slow = s.get("beta_fast") or 32, s.get("beta_slow") or 1
  correction = lambda rotations: (head_dim * math.log(context / (rotations * 2 * math.pi))
                                  / (2 * math.log(theta)))
  low, high = correction(fast), correction(slow)
  if s.get("truncate", True):
    low, high = math.floor(low), math.ceil(high)
  low, high = max(low, 0), min(high, head_dim - 1)
  high = high + 0.001 if low == high else high
  pos_freqs = theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
  ramp = jnp.clip((jnp.arange(head_dim // 2, dtype=jnp.float32) - low) / (high - low), 0, 1)
  extrapolation = 1 - ramp
  inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation) + (1.0 / pos_freqs) * extrapolation
  return inv_freq, float(attention)


def apply(x: jax.Array, positions: jax.Array, inv_freq: jax.Array,
          attention_factor=1.0) -> jax.Array:
  """Rotary embedding, rotate-half convention. x [b, t, heads, hd], positions [b, t];
  `attention_factor` a float or a traced scalar (a layer's, inside the layer scan)."""
  half = x.shape[-1] // 2
  freqs = positions[..., None].astype(jnp.float32) * inv_freq  # [b, t, hd/2]
  angles = jnp.concatenate([freqs, freqs], axis=-1)[:, :, None, :]  # [b, t, 1, hd]
  cos, sin = jnp.cos(angles), jnp.sin(angles)
  if not isinstance(attention_factor, float) or attention_factor != 1.0:  # traced per layer
    cos, sin = cos * attention_factor, sin * attention_factor
  cos, sin = cos.astype(x.dtype), sin.astype(x.dtype)
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  return x * cos + rotated * sin
