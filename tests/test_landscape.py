"""The landscape plane: filter normalisation, projections, resumable grids, both domains."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import landscape, presets, storage
from thickets_jax.errors import InputError
from thickets_jax.llm import landscape as llm_landscape
from thickets_jax.llm import randopt
from thickets_jax.perturb import PerturbSpec, rebuild_member
from thickets_jax.signals import landscape as signals_landscape

PARAMS = {"dense": {"kernel": jnp.arange(12.0).reshape(3, 4) + 1, "bias": jnp.ones(4)},
          "layers": {"kernel": jnp.arange(24.0).reshape(2, 3, 4) - 5}}
SPEC = PerturbSpec(stacked="^layers/")


def test_filter_normalisation_gives_each_unit_its_weights_norm():
  d1, _ = landscape.random_directions(PARAMS, 0, SPEC)
  np.testing.assert_allclose(jnp.linalg.norm(d1["dense"]["kernel"], axis=0),
                             jnp.linalg.norm(PARAMS["dense"]["kernel"], axis=0), rtol=1e-5)
  np.testing.assert_allclose(jnp.linalg.norm(d1["layers"]["kernel"], axis=1),
                             jnp.linalg.norm(PARAMS["layers"]["kernel"], axis=1), rtol=1e-5)
  assert not d1["dense"]["bias"].any()  # one-axis leaves: no component (Li et al.)
  _, d2 = landscape.random_directions(PARAMS, 0, SPEC)
  assert not np.allclose(d1["dense"]["kernel"], d2["dense"]["kernel"])


def test_projection_recovers_coordinates_and_the_off_plane_part():
  d1, d2 = landscape.random_directions(PARAMS, 1, SPEC)
  on = jax.tree.map(lambda u, v: 0.3 * u - 0.7 * v, d1, d2)
  got = landscape.project(on, d1, d2)
  assert got["a"] == pytest.approx(0.3, abs=1e-5) and got["b"] == pytest.approx(-0.7, abs=1e-5)
  assert got["residual"] == pytest.approx(0.0, abs=1e-3)
  bias_only = jax.tree.map(jnp.zeros_like, d1)
  bias_only["dense"]["bias"] = jnp.ones(4)  # orthogonal to both directions
  assert landscape.project(bias_only, d1, d2)["residual"] == pytest.approx(1.0)


def test_member_directions_put_the_members_on_the_grid_exactly():
  spec = PerturbSpec(stacked="^layers/")
  d1 = landscape.member_direction(PARAMS, 7, 0.01, spec)
  d2 = landscape.member_direction(PARAMS, 9, 0.02, spec)
  at = jax.jit(landscape.plane_point)
  for (a, b), (seed, sigma) in (((1.0, 0.0), (7, 0.01)), ((0.0, 1.0), (9, 0.02))):
    for x, y in zip(jax.tree.leaves(at(PARAMS, d1, d2, a, b)),
                    jax.tree.leaves(rebuild_member(PARAMS, seed, sigma, spec))):
      np.testing.assert_array_equal(x, y)


def test_a_killed_grid_scores_only_the_missing_points(tmp_path):
  scored = []

  def score_points(ab):
    scored.extend(map(tuple, ab))
    return [{"score": float(a + 10 * b)} for a, b in ab]
  coordinates = landscape.grid(1.0, 3)
  store = storage.CandidateStore(str(tmp_path / "plane.jsonl"), key=landscape.point_key)
  store.append([{"a": -1.0, "b": -1.0, "score": 99.0}])  # scored before the kill
  scores = landscape.score_plane(score_points, coordinates, store, chunk_size=4)
  assert len(scored) == 8 and (-1.0, -1.0) not in scored
  assert scores[0, 0] == 99.0 and scores[2, 1] == pytest.approx(10.0)  # row b=1, column a=0
  summary = landscape.summarize(scores, coordinates, base=0.0, higher_is_better=False)
  assert summary["best"] == {"a": 0.0, "b": -1.0, "score": -10.0}  # (-1, -1) holds 99


def test_the_figure2_preset_tiny_places_the_members_and_resumes(tmp_path):
  spec = presets.get("figure2:tiny")
  result = signals_landscape.run_landscape(spec, str(tmp_path))
  pretrained = result["bases"]["pretrained"]["planes"][0]
  assert np.asarray(pretrained["scores"]).shape == (5, 5)
  assert pretrained["scores"][2][2] == pytest.approx(pretrained["base_mse"], rel=1e-6)
  top1, top2 = pretrained["members"][:2]
  assert (top1["a"], top1["b"], top2["a"], top2["b"]) == pytest.approx((1, 0, 0, 1), abs=1e-4)
  # (1, 0) is the top-1 member; float32 rounding differs between the two compiled paths and
  # grows through the 60-step rollout.
  assert pretrained["scores"][2][3] == pytest.approx(top1["train_mse"], rel=5e-3)
  assert os.path.exists(tmp_path / "landscape.png")
  again = signals_landscape.run_landscape(spec, str(tmp_path))
  assert again == json.loads(json.dumps(result))
  assert "m" in signals_landscape.table(result)


@pytest.mark.parametrize("changes, sentence", [
    (dict(points=4), "must be odd"), (dict(directions="pca"), "unknown --directions"),
    (dict(extent=-1.0), "must be positive"), (dict(k=1), "needs K >= 2")])
def test_bad_signals_settings_are_one_sentence(changes, sentence):
  with pytest.raises(InputError, match=sentence):
    signals_landscape.LandscapeSpec(**changes).validate()


def test_llm_landscape_on_a_finished_tiny_run(tmp_path, tiny_randopt_run):
  _, run, _ = tiny_randopt_run
  config = llm_landscape.LandscapeConfig(run_dir=run, points=3, batch_size=2)
  result = llm_landscape.run_landscape(config, str(tmp_path / "plane"))
  top = randopt.load_topk(run)["members"]
  assert np.asarray(result["reward"]).shape == (3, 3) and result["train_size"] == 2
  assert result["reward"][1][2] == pytest.approx(top[0]["train_score"])  # (1, 0) is the top-1
  assert result["base_reward"] == json.load(open(os.path.join(run, "base.json")))["reward"][0]
  with open(tmp_path / "plane" / "plane.jsonl") as f:
    assert len(f.read().splitlines()) == 9
  assert llm_landscape.run_landscape(config, str(tmp_path / "plane")) == result
  with pytest.raises(InputError, match="holds no topk.json"):
    llm_landscape.run_landscape(llm_landscape.LandscapeConfig(run_dir=str(tmp_path)),
                                str(tmp_path / "x"))
