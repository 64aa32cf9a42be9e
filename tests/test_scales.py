"""Perturbation scales: each tensor's displacement has the norm its scale promises."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import perturb as P
from thickets_jax import scales
from thickets_jax.errors import InputError


def _params():
  return {
      "embed": {"embedding": jnp.zeros((64, 16))},
      "layers": {"attn": {"q": {"kernel": jnp.zeros((3, 16, 24))}},
                 "mlp": {"up": {"kernel": jnp.zeros((3, 16, 40))}},
                 "attn_norm": {"scale": jnp.ones((3, 16))}},
      "final_norm": {"scale": jnp.ones((16,))},
      "lm_head": {"kernel": jnp.zeros((16, 64))},
  }


def _displacement(scale, sigma=0.5, **kw):
  params = _params()
  spec = P.PerturbSpec(stacked=r"^layers/", scale=scale, **kw)
  member = P.rebuild_member(params, 7, sigma, spec)
  return jax.tree.map(lambda a, b: np.asarray(a - b, np.float64), member, params)


def _tensors(d):
  """(name, one tensor) per layer of a stacked leaf, else per leaf."""
  for path, leaf in jax.tree_util.tree_flatten_with_path(d)[0]:
    name = "/".join(k.key for k in path)
    for tensor in (leaf if name.startswith("layers/") else [leaf]):
      yield name, tensor


def test_frobenius_moves_every_tensor_by_sigma():
  for name, tensor in _tensors(_displacement("frobenius")):
    assert np.linalg.norm(tensor) == pytest.approx(0.5, rel=1e-5), name


def test_natural_norm_is_row_max_spectral_or_max_entry():
  for name, tensor in _tensors(_displacement("natural")):
    if name.startswith("embed/"):
      assert np.linalg.norm(tensor, axis=1).max() == pytest.approx(0.5, rel=1e-5)
    elif tensor.ndim == 2:  # power iteration estimates from below: the norm is >= sigma
      assert 0.5 * (1 - 1e-5) <= np.linalg.norm(tensor, 2) <= 0.5 * 1.15, name
    else:
      assert np.abs(tensor).max() == pytest.approx(0.5, rel=1e-5), name


def test_modular_divides_the_natural_displacement_by_each_groups_factor():
  natural, modular = _displacement("natural"), _displacement("modular")
  # Tensors: embedding 1, attention 3, mlp 3, norm 3 + 1, head 1. Masses present:
  # 1 + 0.5 + 0.5 + 0.1 + 1 = 3.1; s = 3.1 · n_g / m_g.
  factors = {"embed/": 3.1 / 1, "layers/attn/": 3.1 * 3 / 0.5, "layers/mlp/": 3.1 * 3 / 0.5,
             "layers/attn_norm/": 3.1 * 4 / 0.1, "final_norm/": 3.1 * 4 / 0.1,
             "lm_head/": 3.1 / 1}
  for (name, n), (_, m) in zip(_tensors(natural), _tensors(modular)):
    s = next(v for k, v in factors.items() if name.startswith(k))
    # (a norm scale of 1 + 0.004 keeps float32 rounding of 1: about 1e-5 after times s)
    np.testing.assert_allclose(m * s, n, rtol=1e-4, atol=3e-5, err_msg=name)


def test_a_massless_group_is_not_perturbed_and_masses_are_part_of_the_member():
  d = _displacement("modular", masses="mlp=0")
  assert not np.any(d["layers"]["mlp"]["up"]["kernel"])
  assert np.any(d["layers"]["attn"]["q"]["kernel"])
  other = _displacement("modular", masses="attention=2")
  assert not np.allclose(other["embed"]["embedding"], d["embed"]["embedding"])


def test_direction_is_the_unit_sigma_displacement_under_every_scale():
  params = _params()
  for scale in scales.SCALES:
    spec = P.PerturbSpec(stacked=r"^layers/", scale=scale)
    key = jax.random.key(5)
    moved = P.perturb(params, key, 0.25, spec)
    direction = P.direction(params, key, spec)
    for a, b, d in zip(*map(jax.tree.leaves, (moved, params, direction))):
      np.testing.assert_allclose(a - b, 0.25 * d, rtol=1e-5, atol=1e-7)


def test_isotropic_members_keep_their_bits_and_old_records_read_as_isotropic():
  params = _params()
  plain = P.rebuild_member(params, 7, 0.5, P.PerturbSpec(stacked=r"^layers/"))
  spelled = P.rebuild_member(params, 7, 0.5, P.PerturbSpec(stacked=r"^layers/",
                                                           scale="isotropic", masses="mlp=0"))
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(plain),
                                                  jax.tree.leaves(spelled)))
  spec = P.PerturbSpec(scale="modular", masses="attention=2")
  assert P.PerturbSpec.from_json(spec.to_json()) == spec
  old = {k: v for k, v in spec.to_json().items() if k not in ("scale", "masses")}
  assert P.PerturbSpec.from_json(old) == P.PerturbSpec()


@pytest.mark.parametrize("fields, sentence", [
    (dict(scale="modular_radial"), "unknown --scale 'modular_radial'"),
    (dict(scale="frobenius", relative=True), "give one of them"),
    (dict(scale="natural", noise="lowrank"), "needs full-rank noise"),
    (dict(scale="modular", masses="ffn=1"), "groups among embedding"),
    (dict(scale="modular", masses="mlp=-1"), "masses >= 0"),
    (dict(scale="modular", masses="mlp=inf"), "masses >= 0"),
    (dict(scale="modular", masses=",".join(f"{g}=0" for g in scales.GROUPS)),
     "at least one positive"),
])
def test_bad_scale_settings_get_one_sentence(fields, sentence):
  with pytest.raises(InputError, match=sentence):
    P.PerturbSpec(**fields)


def test_groups_of_the_models_leaf_names():
  assert [scales.group(n) for n in (
      "embed/embedding", "lm_head/kernel", "layers/attn/q/kernel", "layers/attn/q_norm/scale",
      "layers/mlp/down/kernel", "layers/attn_norm/scale", "final_norm/scale", "w")] == [
          "embedding", "head", "attention", "attention", "mlp", "norm", "norm", "other"]
