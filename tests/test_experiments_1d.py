"""End to end: `experiments.signals1d` and `experiments.scaling1d` on tiny configs."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from thickets_jax.llm import registry

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

  # A kill after 5 candidates: the rerun scores the other 7 and reproduces every figure.
  kept = _lines(candidates)[:5]
  with open(candidates, "w") as f:
    f.write("\n".join(kept) + "\n")
  second = _run("signals1d", *args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resuming: 5 of 12 candidates already scored" in second.stderr
  assert len(_lines(candidates)) == 12
  with open(os.path.join(workdir, "results.json")) as f:
    again = json.load(f)["runs"][0]["runs"][0]
  for key in ("train_mse", "test_mse", "ensemble_test_mse", "density", "top_members"):
    assert again[key] == result[key], key


def test_signals1d_refuses_to_resume_with_other_settings(tmp_path):
  workdir = str(tmp_path / "w")
  args = ["--regime", "custom", "--pretrain", "xavier", "--posttrain", "one_line", "--K", "2",
          "--seeds", "0", "--workdir", workdir, *TINY]
  assert _run("signals1d", "--N", "4", *args).returncode == 0
  clash = _run("signals1d", "--N", "6", *args)
  assert clash.returncode == 2
  assert "holds a run with other settings (n);" in clash.stderr


def test_signals1d_approximation_regime_over_seeds(tmp_path):
  workdir = str(tmp_path / "w")
  out = _run("signals1d", "--regime", "approximation", "--N", "8", "--K", "2", "--seeds", "0-2",
             "--workdir", workdir, *TINY)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    summaries = json.load(f)["runs"]
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
  assert "xavier_to_one_line" in out.stdout and "mean ± SE over seeds" in out.stdout


def test_scaling1d_tiny(tmp_path):
  workdir = str(tmp_path / "w")
  out = _run("scaling1d", "--widths", "8,16", "--N", "10", "--pretrain_steps", "20",
             "--fut", "12", "--samples", "16", "--workdir", workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  with open(os.path.join(workdir, "results.json")) as f:
    points = json.load(f)["points"]
  assert [(p["base"], p["width"]) for p in points] == [
      ("mixed", 8), ("mixed", 16), ("xavier", 8), ("xavier", 16)]
  for p in points:
    assert set(p["density"]) == {"one_line", "one_sinusoid", "one_squarewave"}
    assert p["discordance"]["upper_bound"] == 1.5
  for name in ("density_vs_width.png", "discordance_vs_width.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.parametrize("args, sentence", [
    (["--regime", "needle"], "unknown --regime 'needle'"),
    (["--regime", "custom", "--pretrain", "zigzag", "--posttrain", "one_line"], "unknown --pretrain 'zigzag'"),
    (["--regime", "custom", "--pretrain", "mixed", "--posttrain", "zigzag"], "unknown signal family 'zigzag'"),
    (["--N", "10", "--K", "20"], "K=20 is larger than the population N=10"),
    (["--sigma", "0"], "sigma must be a positive finite number, got 0.0"),
    (["--sigma", "-0.01"], "sigma must be a positive finite number, got -0.01"),
    (["--width", "0"], "--width must be at least 1, got 0"),
    (["--K", "five"], "--K takes integers"),
    (["--seeds", "0-x"], "--seeds takes integers and ranges like 0-4"),
    (["--seeds", "1,1"], "--seeds must name distinct integers"),
])
def test_signals1d_bad_input_is_one_sentence_before_any_compute(tmp_path, args, sentence):
  workdir = str(tmp_path / "never_created")
  out = _run("signals1d", *args, "--workdir", workdir)
  assert out.returncode == 2
  assert "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines() == [f"error: {out.stderr.strip()[len('error: '):]}"]
  assert sentence in out.stderr
  assert not os.path.exists(workdir)


@pytest.mark.parametrize("module, flags", [
    ("signals1d", ["--regime", "approximation"]), ("scaling1d", []), ("fuzz_graders", [])])
def test_another_experiments_workdir_is_refused_untouched(tiny_randopt_run, module, flags):
  """Pointed at a finished RandOpt workdir, a 1D experiment writes nothing there."""
  _, workdir, _ = tiny_randopt_run
  before = {f: os.path.getmtime(os.path.join(workdir, f)) for f in os.listdir(workdir)}
  out = subprocess.run([sys.executable, "-m", f"experiments.{module}", "--workdir", workdir,
                        *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
  assert out.returncode == 2, out.stderr[-2000:]
  assert f"holds a RandOptConfig run, not a {module} run; use a new --workdir." in out.stderr
  assert "Traceback" not in out.stderr
  assert {f: os.path.getmtime(os.path.join(workdir, f)) for f in os.listdir(workdir)} == before


def test_unwritable_workdir_is_one_sentence(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  for module in ("signals1d", "scaling1d"):
    out = _run(module, "--workdir", str(blocker / "sub"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.startswith("error: cannot write to --workdir")


@pytest.mark.parametrize("args, sentence", [
    (["--bench", "B1", "--chunk_size", "0"], "--chunk_size must be positive, got 0"),
    (["--bench", "B9"], "unknown --bench 'B9'; known: B1, B2, B3, B4, B5, B6, ES, B7, B8, P1"),
    (["--bench", "B4", "--b4_sizes", "4,-1"], "--b4_sizes must be positive, got -1"),
    (["--bench", "B6", "--b6_ranks", "4,0"], "--b6_ranks must be positive, got 0"),
    (["--bench", "P1", "--p1_device_memory", "lots"],
     "--p1_device_memory takes a size like 80GB or 16GiB, got 'lots'"),
    (["--bench", "P1", "--p1_models", "qwen9"],
     "unknown model 'qwen9'; known: " + ", ".join(sorted(registry.MODELS.names()))),
])
def test_benchmark_bad_flags_are_refused_before_any_measurement(args, sentence):
  out = _run("benchmark", *args)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert out.stderr.strip().splitlines() == [f"error: {sentence}."]
