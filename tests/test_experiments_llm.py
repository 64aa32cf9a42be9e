"""End to end: experiments.randopt and experiments.density on a tiny random checkpoint."""

import json
import os
import socket
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
  """tiny-random-llama's shapes as a safetensors checkpoint, with SmolLM2's tokenizer."""
  from thickets_jax.llm import assets, registry, tokenizer  # pylint: disable=g-import-not-at-top
  c = registry.MODELS.get("tiny-random-llama").config
  torch.manual_seed(0)
  model = transformers.LlamaForCausalLM(transformers.LlamaConfig(
      vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
      num_hidden_layers=c.num_layers, num_attention_heads=c.num_heads,
      num_key_value_heads=c.num_kv_heads, rope_theta=c.rope_theta, rms_norm_eps=c.rms_norm_eps,
      tie_word_embeddings=True))
  directory = str(tmp_path_factory.mktemp("tiny"))
  model.save_pretrained(directory, safe_serialization=True)
  gguf = assets.gguf_path(assets.SMOLLM2_135M_INSTRUCT)
  tokenizer.from_gguf(gguf, os.path.join(assets.cache_dir(), "smollm2-135m-instruct-tokenizer")
                      ).save_pretrained(directory)
  return directory


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=900)


def _read(path):
  with open(path) as f:
    return json.load(f)


SMALL = ["--model", "tiny-random-llama", "--task", "countdown", "--N", "4", "--sigmas", "0.01,0.05",
         "--train_size", "2", "--max_new_tokens", "8", "--batch_size", "2", "--members_per_batch", "2"]


def test_randopt_runs_resumes_and_reevaluates(tmp_path, tiny_weights):
  workdir = str(tmp_path / "ro")
  args = [*SMALL, "--weights", tiny_weights, "--K", "1,2", "--test_size", "3", "--workdir", workdir]
  first = _run("randopt", *args)
  assert first.returncode == 0, first.stderr[-3000:]
  result = _read(os.path.join(workdir, "results.json"))
  assert set(result["ensemble_accuracy"]) == {"1", "2"} and result["test_size"] == 3
  top = _read(os.path.join(workdir, "topk.json"))
  assert [set(m) >= {"seed", "sigma", "train_score"} for m in top["members"]] == [True, True]
  assert top["perturbation"]["mode"] == "independent"
  assert "K=2" in first.stdout

  candidates = os.path.join(workdir, "candidates.jsonl")
  with open(candidates) as f:
    lines = f.read().splitlines()
  assert len(lines) == 4
  for line in lines:  # the first --keep_completions (default 2) train completions, as text
    (completions,) = json.loads(line)["completions"]
    assert len(completions) == 2 and all(isinstance(c, str) for c in completions)
  assert len(_read(os.path.join(workdir, "base.json"))["completions"][0]) == 2
  with open(candidates, "w") as f:  # as if killed after the first chunk
    f.write("\n".join(lines[:2]) + "\n")
  second = _run("randopt", *args)
  assert second.returncode == 0, second.stderr[-3000:]
  assert "resuming: 2 of 4 candidates already scored" in second.stderr
  assert _read(os.path.join(workdir, "results.json")) == result

  again = str(tmp_path / "again")
  third = _run("randopt", "--resume_dir", workdir, "--weights", tiny_weights, "--test_size", "2",
               "--seed", "1", "--K", "1,2", "--max_new_tokens", "8", "--batch_size", "2",
               "--train_size", "2", "--workdir", again)
  assert third.returncode == 0, third.stderr[-3000:]
  resumed = _read(os.path.join(again, "results.json"))
  assert resumed["members"] == top["members"] and set(resumed["ensemble_accuracy"]) == {"1", "2"}
  assert not os.path.exists(os.path.join(again, "candidates.jsonl"))  # nothing re-scored


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_randopt_on_two_processes_equals_one_process(tmp_path, tiny_weights):
  """--distributed: two processes with one CPU device each score, rank and write exactly what
  one process with two devices does; only process 0 writes."""
  args = ["-m", "experiments.randopt", *SMALL, "--weights", tiny_weights, "--K", "1,2",
          "--test_size", "2", "--model_parallel", "1", "--member_axis", "vmap"]
  env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # --host_devices decides
  run = lambda *more, **kw: subprocess.Popen([sys.executable, *args, *more], cwd=ROOT, env=env,
                                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                             text=True, **kw)
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  single = run("--host_devices", "2", "--workdir", one)
  coordinator = f"localhost:{_free_port()}"
  hosts = [run("--host_devices", "1", "--distributed", "--coordinator", coordinator,
               "--num_processes", "2", "--process_id", str(i), "--workdir", two) for i in (0, 1)]
  for process in (single, *hosts):
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
  for name in ("results.json", "topk.json", "base.json", "base_test.json"):
    assert _read(os.path.join(two, name)) == _read(os.path.join(one, name)), name
  for name in ("candidates.jsonl", "test_members.jsonl"):
    with open(os.path.join(one, name)) as a, open(os.path.join(two, name)) as b:
      assert a.read() == b.read(), name  # written once, by process 0
  assert len(_read(os.path.join(two, "flags.json"))) == 1


def test_density_on_the_tiny_model(tmp_path, tiny_weights):
  workdir = str(tmp_path / "density")
  out = _run("density", *SMALL[2:], "--model", "tiny-random-llama", "--weights", tiny_weights,
             "--workdir", workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  (point,) = _read(os.path.join(workdir, "results.json"))["points"]
  assert {r["sigma"] for r in point["density_reward"]} == {0.01, 0.05}
  assert all(r["ci_low"] <= r["density"] <= r["ci_high"] for r in point["density_reward"])
  for name in ("density_vs_size.png", "scores_tiny-random-llama.png", "log.txt"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


@pytest.mark.parametrize("args, sentence", [
    (["--model", "gpt-9"], "unknown model 'gpt-9'"),
    (["--task", "chess"], "unknown task 'chess'"),
    (["--N", "4", "--K", "8"], "K=8 is larger than the population N=4"),
    (["--sigmas", "0"], "sigma must be a positive finite number, got 0.0"),
    (["--model", "tiny-random-llama"], "tiny-random-llama has no published weights; pass --weights DIR"),
    (["--task", "gsm8k", "--data", "/nonexistent.jsonl"], "--data /nonexistent.jsonl is not a file"),
    (["--model_parallel", "2"], "--model_parallel needs --member_axis vmap"),
    (["--keep_completions", "-1"], "--keep_completions must be >= 0, got -1"),
    (["--distributed", "--num_processes", "1", "--process_id", "0", "--coordinator",
      "localhost:0"], "--distributed needs --model_parallel M"),
])
def test_randopt_bad_input_is_one_sentence_before_loading(tmp_path, args, sentence):
  workdir = str(tmp_path / "never")
  out = _run("randopt", *args, "--workdir", workdir)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert sentence in out.stderr and len(out.stderr.strip().splitlines()) == 1
  assert not os.path.exists(workdir)


def test_discordance_on_the_tiny_model(tmp_path, tiny_weights):
  workdir = str(tmp_path / "disc")
  out = _run("discordance", "--model", "tiny-random-llama", "--weights", tiny_weights,
             "--tasks", "countdown,basic_arithmetic,letter_counting", "--N", "6", "--train_size", "2",
             "--max_new_tokens", "8", "--batch_size", "6", "--members_per_batch", "3",
             "--sigmas", "0.05,0.2", "--clusters", "2", "--workdir", workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  result = _read(os.path.join(workdir, "results.json"))
  assert result["discordance_reward"]["upper_bound"] == 1.5
  assert len(result["clusters"]) == 6 and set(result["clusters"]) <= {0, 1}
  ranks = result["percentile_ranks_reward"]
  assert len(ranks) == 6 and all(len(row) == 3 and all(0 < r <= 1 for r in row) for row in ranks)
  assert "spectral discordance over 3 tasks" in out.stdout
  for name in ("spectra.png", "pca.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0
