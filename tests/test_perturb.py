"""Noise independence, upstream mode, relative sigma, include filter, bit-identical rebuilds."""

import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import perturb as P
from thickets_jax import rng, tree
from thickets_jax.errors import InputError


def _params():
  return {
      "embed": jnp.zeros((64, 32)),
      "layers": {"q": jnp.zeros((4, 32, 32)), "k": jnp.zeros((4, 32, 32))},
      "head": {"a": jnp.zeros((32, 32)), "b": jnp.zeros((32, 32)), "bias": jnp.zeros((32,))},
      "step": jnp.zeros((), jnp.int32),
  }


def _noise(params, seed=3, sigma=1.0, **kw):
  return P.rebuild_member(params, seed, sigma, P.PerturbSpec(**kw))


def _corr(a, b):
  return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


def test_equal_shaped_leaves_get_independent_noise():
  out = _noise(_params())
  assert abs(_corr(out["head"]["a"], out["head"]["b"])) < 0.1
  assert abs(_corr(out["layers"]["q"], out["layers"]["k"])) < 0.05
  assert abs(_corr(out["head"]["a"], out["layers"]["q"][0])) < 0.1


def test_stacked_leaf_gets_independent_noise_per_layer():
  q = _noise(_params(), stacked="layers")["layers"]["q"]
  for i in range(1, 4):
    assert abs(_corr(q[0], q[i])) < 0.1


def test_upstream_mode_shares_noise_between_equal_shapes_and_layers():
  out = _noise(_params(), mode="upstream", stacked="layers")
  np.testing.assert_array_equal(out["head"]["a"], out["head"]["b"])
  np.testing.assert_array_equal(out["layers"]["q"], out["layers"]["k"])
  for i in range(1, 4):
    np.testing.assert_array_equal(out["layers"]["q"][0], out["layers"]["q"][i])
  np.testing.assert_array_equal(out["layers"]["q"][0], out["head"]["a"])


def test_noise_is_standard_normal_times_sigma():
  out = _noise({"w": jnp.full((256, 256), 2.0)}, sigma=0.01)["w"] - 2.0
  assert abs(float(out.mean())) < 2e-4
  assert float(out.std()) == pytest.approx(0.01, rel=0.02)


def test_rebuild_is_bit_identical_and_seeds_differ():
  params = {"w": jax.random.normal(jax.random.key(0), (64, 64))}
  a = _noise(params, seed=11, sigma=1e-3)
  b = _noise(params, seed=11, sigma=1e-3)
  chex.assert_trees_all_equal(a, b)
  c = _noise(params, seed=12, sigma=1e-3)
  assert abs(_corr(a["w"] - params["w"], c["w"] - params["w"])) < 0.1


def test_relative_sigma_scales_by_leaf_std_per_layer():
  scales = jnp.array([1.0, 10.0])[:, None, None]
  params = {"big": 5.0 * jax.random.normal(jax.random.key(1), (128, 128)),
            "layers": scales * jax.random.normal(jax.random.key(2), (2, 128, 128))}
  out = _noise(params, sigma=0.1, relative=True, stacked="layers")
  delta_big = out["big"] - params["big"]
  assert float(delta_big.std()) == pytest.approx(0.1 * float(params["big"].std()), rel=0.05)
  for i, scale in enumerate([1.0, 10.0]):
    delta = out["layers"][i] - params["layers"][i]
    assert float(delta.std()) == pytest.approx(0.1 * scale, rel=0.05)


def test_include_filter_perturbs_only_matching_leaves_with_unchanged_noise():
  params = _params()
  full = _noise(params)
  only_head = _noise(params, include=r"^head/")
  np.testing.assert_array_equal(only_head["head"]["a"], full["head"]["a"])
  np.testing.assert_array_equal(only_head["embed"], params["embed"])
  np.testing.assert_array_equal(only_head["layers"]["q"], params["layers"]["q"])


def test_dtypes_are_kept_and_integer_leaves_untouched():
  params = {"w": jnp.ones((8, 8), jnp.bfloat16), "count": jnp.arange(4)}
  out = _noise(params, sigma=0.1)
  assert out["w"].dtype == jnp.bfloat16
  np.testing.assert_array_equal(out["count"], params["count"])
  assert not np.array_equal(np.asarray(out["w"], np.float32), np.ones((8, 8)))


def test_leaf_indices_follow_sorted_paths():
  assert tree.stable_leaf_indices({"b": 1.0, "a": {"z": 2.0, "c": 3.0}}) == [0, 1, 2]
  assert tree.leaf_names({"b": 1.0, "a": {"z": 2.0, "c": 3.0}}) == ["a/c", "a/z", "b"]
  # List positions sort as strings: "0" < "1" < "10" < "2".
  indices = tree.stable_leaf_indices([1.0] * 11)
  assert indices[:3] == [0, 1, 3] and indices[10] == 2


@pytest.mark.parametrize("fields, sentence", [
    (dict(mode="shared"), "unknown perturbation mode 'shared'"),
    (dict(noise_dtype="int8"), "unknown noise dtype 'int8'"),
    (dict(include="(["), "is not a valid regular expression"),
])
def test_bad_specs_are_refused_with_one_sentence(fields, sentence):
  with pytest.raises(InputError, match=sentence):
    P.PerturbSpec(**fields)


def test_spec_round_trips_through_json_and_refuses_partial_records():
  spec = P.PerturbSpec(mode="upstream", relative=True, include="^head/", stacked="^layers/")
  assert P.PerturbSpec.from_json(json.loads(json.dumps(spec.to_json()))) == spec
  partial = {k: v for k, v in spec.to_json().items() if k != "stacked"}
  with pytest.raises(InputError, match="needs exactly the fields"):
    P.PerturbSpec.from_json(partial)


def test_bfloat16_noise_is_a_different_member_of_the_right_scale():
  params = {"w": jnp.zeros((128, 128))}
  f32 = _noise(params, sigma=0.1)["w"]
  bf16 = _noise(params, sigma=0.1, noise_dtype="bfloat16")["w"]
  assert bf16.dtype == jnp.float32 and float(bf16.std()) == pytest.approx(0.1, rel=0.05)
  assert not np.array_equal(np.asarray(f32), np.asarray(bf16))


def test_member_key_is_the_member_purpose_of_rng():
  a = P.perturb({"w": jnp.zeros(4)}, rng.member_key(5), 1.0)
  b = P.perturb_member({"w": jnp.zeros(4)}, 5, 1.0, P.PerturbSpec())
  np.testing.assert_array_equal(a["w"], b["w"])
  with pytest.raises(ValueError, match="unknown PRNG purpose"):
    rng.key(0, "dropout")


def test_low_rank_noise_has_rank_r_unit_variance_and_its_own_draw_per_leaf_and_layer():
  params = {"w": jnp.zeros((256, 192)), "layers": {"k": jnp.zeros((3, 64, 48))},
            "bias": jnp.zeros(512)}
  spec = P.PerturbSpec(noise="lowrank", rank=4, stacked="^layers/")
  noise = P.perturb(params, rng.member_key(5), 0.5, spec)
  assert np.linalg.matrix_rank(np.asarray(noise["w"])) == 4
  assert [np.linalg.matrix_rank(np.asarray(layer)) for layer in noise["layers"]["k"]] == [4] * 3
  assert np.var(np.asarray(noise["w"])) == pytest.approx(0.25, rel=0.15)  # σ² per entry
  assert np.var(np.asarray(noise["bias"])) == pytest.approx(0.25, rel=0.2)  # vectors: full rank
  layers = np.asarray(noise["layers"]["k"]).reshape(3, -1)
  assert np.abs(np.corrcoef(layers)[np.triu_indices(3, 1)]).max() < 0.1  # layers independent
  assert np.abs(np.corrcoef(np.asarray(noise["w"])[:64, :48].ravel(),
                            layers[0])[0, 1]) < 0.1  # leaves independent
  rebuilt = P.rebuild_member(params, 5, 0.5, spec)
  for a, b in zip(jax.tree.leaves(noise), jax.tree.leaves(rebuilt)):
    np.testing.assert_array_equal(a, b)
  quiet = P.perturb(params, rng.member_key(5), 0.5, dataclasses.replace(spec, vector_noise=False))
  assert not np.asarray(quiet["bias"]).any()
  np.testing.assert_array_equal(quiet["w"], noise["w"])
  full = P.perturb(params, rng.member_key(5), 0.5, P.PerturbSpec(stacked="^layers/"))
  np.testing.assert_array_equal(full["bias"], noise["bias"])  # vectors draw as before


@pytest.mark.parametrize("relative", [False, True])
def test_member_factors_are_the_low_rank_displacement_unmaterialised(relative):
  params = {"w": jax.random.normal(jax.random.key(0), (24, 16)),
            "layers": {"k": jax.random.normal(jax.random.key(1), (3, 16, 8)),
                       "scale": jnp.ones((3, 16))}, "skip": jnp.ones((4, 4))}
  spec = P.PerturbSpec(noise="lowrank", rank=2, stacked="^layers/", include="^(w|layers)",
                       relative=relative)
  factors = P.member_factors(params, rng.member_key(7), 0.3, spec)
  displaced = jax.tree.map(lambda p, b: p - b, P.rebuild_member(params, 7, 0.3, spec), params)
  assert set(factors) == {"w", "layers"}  # unperturbed leaves absent
  w = factors["w"]
  assert w["a"].shape == (24, 2) and w["b"].shape == (16, 2)
  np.testing.assert_allclose(w["a"] @ w["b"].T, displaced["w"], atol=1e-5)
  k = factors["layers"]["k"]
  np.testing.assert_allclose(np.einsum("lmr,lnr->lmn", k["a"], k["b"]), displaced["layers"]["k"],
                             atol=1e-5)
  np.testing.assert_allclose(factors["layers"]["scale"], displaced["layers"]["scale"], atol=1e-6)
  with pytest.raises(ValueError, match="needs low-rank noise"):
    P.member_factors(params, rng.member_key(7), 0.3, P.PerturbSpec())


def test_records_written_before_low_rank_noise_read_as_full_rank():
  old = {k: v for k, v in P.PerturbSpec().to_json().items()
         if k not in ("noise", "rank", "vector_noise", "scale", "masses")}
  assert P.PerturbSpec.from_json(old) == P.PerturbSpec()
  with pytest.raises(InputError, match="needs the independent mode"):
    P.PerturbSpec(noise="lowrank", mode="upstream")


def test_a_run_directory_written_before_the_later_settings_still_resumes(tmp_path):
  from thickets_jax import workdir  # pylint: disable=g-import-not-at-top
  spec = {"n": 8, "noise": "full", "rank": 4, "perturbation": P.PerturbSpec().to_json()}
  older = {"n": 8, "perturbation": {k: v for k, v in P.PerturbSpec().to_json().items()
                                    if k not in ("noise", "rank", "vector_noise", "scale",
                                                 "masses")}}
  run = workdir.RunDir.prepare(str(tmp_path))
  run.write("spec", older)
  run.claim(spec)  # the same run: older runs drew full-rank noise
  assert run.read("spec") == spec
  with pytest.raises(InputError, match=r"other settings \(noise\)"):
    run.claim({**spec, "noise": "lowrank"})
  run.write("spec", older)
  with pytest.raises(InputError, match=r"other settings \(perturbation.rank\)"):
    run.claim({**spec, "perturbation": {**spec["perturbation"], "rank": 8}})


def test_the_averaged_member_carries_the_mean_displacement():
  params = {**_params(), "step": jnp.zeros((), jnp.int32)}
  spec = P.PerturbSpec(stacked="^layers/")
  seeds, sigmas = jnp.asarray([3, 9, 4], jnp.int32), jnp.asarray([0.1, -0.2, 0.05], jnp.float32)
  averaged = P.averaged_member(params, seeds, sigmas, spec)
  members = [P.rebuild_member(params, int(s), float(g), spec) for s, g in zip(seeds, sigmas)]
  expected = jax.tree.map(lambda base, *m: base + sum(x - base for x in m) / 3, params, *members)
  chex.assert_trees_all_close(averaged, expected, atol=1e-6)
  one = P.averaged_member(params, seeds[:1], sigmas[:1], spec)
  chex.assert_trees_all_close(one, members[0], atol=1e-7)
  assert averaged["step"].dtype == jnp.int32
