"""End to end: `experiments.signals1d` (its command line) and the 1D regimes and width sweep
(in-process) on tiny configs."""

import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from thickets_jax import configs, population, presets
from thickets_jax.errors import InputError
from thickets_jax.signals import regimes, runs, scaling

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--width", "16", "--depth", "3", "--pretrain_steps", "20", "--posttrain_size", "32",
        "--test_size", "8", "--fut", "12"]


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=600)


def _lines(path):
  with open(path) as f:
    return f.read().splitlines()


def test_signals1d_custom_run_resumes_without_rescoring(tmp_path):
  workdir = str(tmp_path / "w")
  args = ["--regime", "custom", "--pretrain", "mixed", "--posttrain", "sinusoid", "--N", "12",
          "--K", "2,4", "--chunk_size", "4", "--seeds", "0", "--workdir", workdir, *TINY]
  first = _run("signals1d", *args)
  assert first.returncode == 0, first.stderr[-3000:]
  run_dir = os.path.join(workdir, "runs", "mixed_to_sinusoid_seed0")
  with open(os.path.join(workdir, "results.json")) as f:
    results = json.load(f)
  (result,) = results["runs"][0]["runs"]
  assert set(result["ensemble_test_mse"]) == {"2", "4"}
  assert len(result["top_members"]) == 4
  for name in ("bars.png", "log.txt", "config.json"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert os.path.getsize(os.path.join(run_dir, "rollouts.png")) > 0
  candidates = os.path.join(run_dir, "candidates.jsonl")
  assert len(_lines(candidates)) == 12

  # A kill after 5 candidates: the rerun (in-process, the same flags as experiments.signals1d
  # reads them) scores the other 7 and reproduces every figure.
  kept = _lines(candidates)[:5]
  with open(candidates, "w") as f:
    f.write("\n".join(kept) + "\n")
  logged = os.path.getsize(os.path.join(workdir, "log.txt"))
  values = toys.flag_values((regimes.RegimesConfig, runs.RunSpec),
                            [a for a in args if a not in ("--workdir", workdir)])
  config = configs.from_flags(regimes.RegimesConfig, values)
  config = dataclasses.replace(config, run_specs=tuple(
      configs.from_flags(runs.RunSpec, values, base=spec) for spec in config.specs()))
  mesh, chunk_size = population.chunk_mesh(config.chunk_size)
  regimes.run_regimes(config, workdir, mesh=mesh, chunk_size=chunk_size)
  with open(os.path.join(workdir, "log.txt")) as f:
    assert "resuming: 5 of 12 candidates already scored" in f.read()[logged:]
  assert len(_lines(candidates)) == 12
  with open(os.path.join(workdir, "results.json")) as f:
    again = json.load(f)["runs"][0]["runs"][0]
  for key in ("train_mse", "test_mse", "ensemble_test_mse", "density", "top_members"):
    assert again[key] == result[key], key


TINY_SETTINGS = dict(width=16, depth=3, pretrain_steps=20, posttrain_size=32, test_size=8, fut=12)


def _tiny(config, **settings):
  return dataclasses.replace(config, run_specs=tuple(
      dataclasses.replace(spec, **TINY_SETTINGS, **settings) for spec in config.specs()))


def test_signals1d_refuses_to_resume_with_other_settings(tmp_path):
  workdir = str(tmp_path / "w")
  config = regimes.RegimesConfig(regime="custom", pretrain="xavier", posttrain="one_line",
                                 seeds="0")
  regimes.run_regimes(_tiny(config, n=4, ks=(2,)), workdir)
  with pytest.raises(InputError, match=r"holds a run with other settings \(n\);"):
    regimes.run_regimes(_tiny(config, n=6, ks=(2,)), workdir)


def test_the_figure5_preset_tiny_reports_its_regime_over_seeds(tmp_path):
  result = regimes.run_regimes(presets.get("figure5:tiny"), str(tmp_path / "w"))
  summaries = result["runs"]
  assert [s["name"] for s in summaries] == ["xavier_to_one_line", "mixed_to_one_line",
                                             "line_to_one_line"]
  for s in summaries:
    assert s["seeds"] == [0, 1, 2] and [r["spec"]["seed"] for r in s["runs"]] == [0, 1, 2]
    base = s["across_seeds"]["test_mse/base"]
    per_seed = [r["test_mse"]["base"]["mean"] for r in s["runs"]]
    assert base["per_seed"] == per_seed and len(set(per_seed)) == 3  # seeds change the base
    assert base["median"] == sorted(per_seed)[1]
    assert base["mean"] == pytest.approx(sum(per_seed) / 3)
    assert base["se"] == pytest.approx(float(np.std(per_seed, ddof=1) / np.sqrt(3)))
  table = regimes.table(result)
  assert "xavier_to_one_line" in table and "mean ± SE over seeds" in table


def test_scaling1d_tiny(tmp_path):
  workdir = str(tmp_path / "w")
  config = scaling.ScalingConfig(widths=(16, 8), N=10, pretrain_steps=20, fut=12, samples=16)
  points = scaling.run_scaling(config, workdir)["points"]
  assert [(p["base"], p["width"]) for p in points] == [
      ("mixed", 8), ("mixed", 16), ("xavier", 8), ("xavier", 16)]
  for p in points:
    assert set(p["density"]) == {"one_line", "one_sinusoid", "one_squarewave"}
    assert p["discordance"]["upper_bound"] == 1.5
  for name in ("density_vs_width.png", "discordance_vs_width.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
  assert "one_line" in scaling.table(config, {"points": points})
