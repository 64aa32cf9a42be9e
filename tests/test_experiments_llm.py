"""End to end on a tiny random checkpoint: the library runs in-process, the command lines, and
a two-process run."""

import dataclasses
import json
import os
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from thickets_jax import configs
from thickets_jax.errors import InputError
from thickets_jax.llm import density, discordance, generate, randopt, registry, session
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.generator import Generator
from thickets_jax.perturb import PerturbSpec, rebuild_member

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _run(module, *args):
  return subprocess.run([sys.executable, "-m", f"experiments.{module}", *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=900)


def _read(path):
  with open(path) as f:
    return json.load(f)


SMALL = ["--model", "tiny-random-llama", "--task", "countdown", "--N", "4", "--sigmas", "0.01,0.05",
         "--train_size", "2", "--max_new_tokens", "8", "--batch_size", "2", "--members_per_batch", "2"]


def test_run_randopt_resumes_and_reevaluates(tmp_path, tiny_weights):
  workdir = str(tmp_path / "ro")
  config = randopt.RandOptConfig.tiny(tiny_weights)
  result = randopt.run_randopt(config, workdir)
  assert set(result["ensemble_accuracy"]) == {"1", "2"} and result["test_size"] == 3
  averaged = _read(os.path.join(workdir, "averaged_weights_top2_test.json"))  # K = 1: top-1
  assert result["averaged_weights_accuracy"] == {"2": averaged["accuracy"][0]}
  assert "probability_average_accuracy" not in result  # an option
  flops = result["test_flops"]
  assert flops["vote"]["2"] > flops["top1"] > 0 and flops["averaged_weights"]["2"] > 0
  assert _read(os.path.join(workdir, "results.json")) == json.loads(json.dumps(result))
  top = _read(os.path.join(workdir, "topk.json"))
  assert [set(m) >= {"seed", "sigma", "train_score"} for m in top["members"]] == [True, True]
  assert PerturbSpec.from_json(top["perturbation"]) == config.perturb_spec()
  assert top["perturbation"]["stacked"] == llm_model.STACKED_LEAVES
  assert result["perturbation"] == top["perturbation"]  # one identity, in both files

  candidates = os.path.join(workdir, "candidates.jsonl")
  with open(candidates) as f:
    lines = f.read().splitlines()
  assert len(lines) == 4
  for line in lines:  # the first keep_completions (default 2) train completions, as text
    (completions,) = json.loads(line)["completions"]
    assert len(completions) == 2 and all(isinstance(c, str) for c in completions)
  assert len(_read(os.path.join(workdir, "base.json"))["completions"][0]) == 2
  with open(candidates, "w") as f:  # as if killed after the first chunk
    f.write("\n".join(lines[:2]) + "\n")
  assert randopt.run_randopt(config, workdir) == result
  with open(os.path.join(workdir, "log.txt")) as f:
    assert "resuming: 2 of 4 candidates already scored" in f.read()
  assert len(_read(os.path.join(workdir, "config.json"))) == 2  # one entry per invocation

  again = str(tmp_path / "again")
  resumed = randopt.reevaluate_randopt(dataclasses.replace(config, test_size=2, seed=1), workdir,
                                    again)
  assert resumed["members"] == top["members"] and set(resumed["ensemble_accuracy"]) == {"1", "2"}
  assert not os.path.exists(os.path.join(again, "candidates.jsonl"))  # nothing re-scored
  # --resume_dir: the saved run's settings (max_new_tokens 8, not the default), but the flags given.
  _, saved = randopt.saved_config(workdir)
  assert (saved.max_new_tokens, saved.train_size, saved.test_size) == (8, 2, 3)
  assert saved.identity() == config.planned().identity()
  with pytest.raises(InputError, match="--N cannot change in a re-evaluation"):
    randopt.reevaluate_randopt(dataclasses.replace(saved, N=5), workdir, str(tmp_path / "n5"), ["N"])
  assert not os.path.exists(tmp_path / "n5")
  with pytest.raises(InputError, match="holds a run with other settings"):
    randopt.run_randopt(dataclasses.replace(config, N=5), workdir)


def test_a_member_rebuilt_from_topk_json_alone_writes_what_it_wrote_in_the_search(
    tmp_path, tiny_weights):
  workdir = str(tmp_path / "ro")
  config = randopt.RandOptConfig.tiny(tiny_weights, sigmas=(0.2,), keep_completions=2)
  randopt.run_randopt(config, workdir)
  topk = randopt.load_topk(workdir)  # model, weights, dtype, perturbation and members
  loaded = registry.load(topk["model"], topk["weights"], session.DTYPES[topk["dtype"]])
  best = topk["members"][0]
  member = rebuild_member(loaded.params, best["seed"], best["sigma"], topk["perturbation"])
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
                  generate.Sampling(max_new_tokens=config.max_new_tokens),
                  batch_size=config.batch_size, chat=loaded.entry.instruct,
                  perturb=topk["perturbation"])
  train, _ = config.splits(topk["task"], 0)
  searched = next(json.loads(line) for line in open(os.path.join(workdir, "candidates.jsonl"))
                  if json.loads(line)["seed"] == best["seed"])
  rebuilt = gen.generate([e.prompt for e in train[:2]], params=member)
  assert rebuilt == searched["completions"][0]
  assert rebuilt != gen.generate([e.prompt for e in train[:2]])  # sigma 0.2 changes the text


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_randopt_on_two_processes_equals_one_process(tmp_path, tiny_weights):
  """--distributed: two processes with one CPU device each score, rank and write exactly what
  one process with two devices (this one, from the same flags) does; only process 0 writes."""
  settings = [*SMALL, "--weights", tiny_weights, "--K", "1,2", "--test_size", "2",
              "--model_parallel", "1", "--member_axis", "vmap"]
  one, two = str(tmp_path / "one"), str(tmp_path / "two")
  coordinator = f"localhost:{_free_port()}"
  hosts = [subprocess.Popen(
      [sys.executable, "-m", "experiments.randopt", *settings, "--host_devices", "1",
       "--distributed", "--coordinator", coordinator, "--num_processes", "2", "--process_id",
       str(i), "--workdir", two], cwd=ROOT, env=toys.child_env(), stdout=subprocess.PIPE,
      stderr=subprocess.PIPE, text=True) for i in (0, 1)]
  config = configs.from_flags(randopt.RandOptConfig, toys.flag_values(randopt.RandOptConfig,
                                                                     settings))
  randopt.run_randopt(config.planned(None), one)
  for process in hosts:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
  plans = [_read(os.path.join(d, "results.json")).pop("execution_plan") for d in (one, two)]
  assert [p["machine"]["processes"] for p in plans] == [1, 2]
  assert all(p["machine"]["devices"] == 2 and p["model_parallel"] == 1 for p in plans)
  for name in ("results.json", "topk.json", "base.json", "base_test.json"):
    strip = lambda record: {k: v for k, v in record.items() if k != "execution_plan"}
    assert strip(_read(os.path.join(two, name))) == strip(_read(os.path.join(one, name))), name
  for name in ("candidates.jsonl", "test_members.jsonl"):
    with open(os.path.join(one, name)) as a, open(os.path.join(two, name)) as b:
      assert a.read() == b.read(), name  # written once, by process 0
  assert len(_read(os.path.join(two, "config.json"))) == 1


def test_run_density_on_the_tiny_model(tmp_path, tiny_weights):
  workdir = str(tmp_path / "density")
  result = density.run_density(density.DensityConfig.tiny(tiny_weights), workdir)
  (point,) = result["points"]
  assert {r["sigma"] for r in point["density_reward"]} == {0.01, 0.05}
  assert all(r["ci_low"] <= r["density"] <= r["ci_high"] for r in point["density_reward"])
  versus = point["versus_base_reward"]
  assert versus["above"]["count"] + versus["tied"]["count"] + versus["below"]["count"] == 4
  # A random tiny model scores 0 on Countdown: the base is at the floor and every member ties.
  assert point["base_reward"] == 0 and versus["base_at"] == "floor"
  # ... and rarely stops within 8 tokens: the run says its completions were cut.
  cut = point["truncated"]
  assert cut["max_new_tokens"] == 8 and cut["base"] > 0.5 and 0 <= cut["members_mean"] <= 1
  assert "of completions were cut at max_new_tokens=8" in cut["warning"]
  assert result["execution_plan"]["dtype"] == "float32"
  assert versus["tied"]["fraction"] == 1.0 and point["density_reward"][0]["density"] == 1.0
  for name in ("density_vs_size.png", "scores_tiny-random-llama.png", "log.txt"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


def test_density_command_line_prints_the_table(tmp_path, tiny_weights):
  """--weights DIR without --model: the checkpoint's own model, read from its config.json;
  a perturbation scale from its flags."""
  workdir = str(tmp_path / "density")
  out = _run("density", *SMALL[2:], "--weights", tiny_weights, "--scale", "modular",
             "--masses", "attention=2", "--workdir", workdir)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "[base at the floor]" in out.stdout and "\ncheckpoint " in out.stdout
  result = _read(os.path.join(workdir, "results.json"))
  assert result["N"] == 4 and result["perturbation"]["scale"] == "modular"
  assert result["perturbation"]["masses"].startswith("embedding=1,attention=2,")


@pytest.mark.parametrize("overrides, sentence", [
    (dict(model="gpt-9"), "unknown model 'gpt-9'"),
    (dict(task="chess"), "unknown task 'chess'"),
    (dict(N=4, ks=(8,)), "K=8 is larger than the population N=4"),
    (dict(sigmas=(0.0,)), "sigma must be a positive finite number, got 0.0"),
    (dict(weights=None), "tiny-random-llama has no published weights; pass --weights DIR"),
    (dict(task="gsm8k", data="/nonexistent.jsonl"), "--data /nonexistent.jsonl is not a file"),
    (dict(model_parallel=2, member_axis="map"), "--model_parallel needs --member_axis vmap"),
    (dict(model_parallel=3), "--model_parallel 3 must divide the 2 devices"),
    (dict(max_new_tokens=0), "--max_new_tokens must be positive, got 0"),
    (dict(keep_completions=-1), "--keep_completions must be >= 0, got -1"),
    (dict(mode="shared"), "unknown perturbation mode 'shared'"),
    (dict(test_size=-1), "--test_size must be >= 0, got -1"),
])
def test_bad_settings_are_one_sentence_before_loading(tmp_path, tiny_weights, overrides, sentence):
  workdir = str(tmp_path / "never")
  with pytest.raises(InputError, match=re.escape(sentence)):
    randopt.run_randopt(dataclasses.replace(randopt.RandOptConfig.tiny(tiny_weights), **overrides), workdir)
  assert not os.path.exists(workdir)


def test_run_discordance_on_the_tiny_model(tmp_path, tiny_weights):
  workdir = str(tmp_path / "disc")
  result = discordance.run_discordance(discordance.DiscordanceConfig.tiny(tiny_weights), workdir)
  (point,) = result["points"]
  assert point["discordance_reward"]["upper_bound"] == 1.5
  assert len(point["clusters"]) == 6 and set(point["clusters"]) <= {0, 1}
  ranks = point["percentile_ranks_reward"]
  assert len(ranks) == 6 and all(len(row) == 3 and all(0 < r <= 1 for r in row) for row in ranks)
  assert set(point["base_at_bound"]) == {"countdown", "basic_arithmetic", "letter_counting"}
  for name in ("spectra_tiny-random-llama.png", "pca_tiny-random-llama.png",
               "discordance_vs_size.png"):
    assert os.path.getsize(os.path.join(workdir, name)) > 0


def test_discordance_over_the_papers_seven_tasks_on_the_tiny_model(tmp_path, tiny_weights):
  """`--tasks paper`: four domains, six of them read from fixture files named per task."""
  data = toys.paper_task_files(tmp_path)
  config = discordance.DiscordanceConfig.tiny(tiny_weights, tasks=("paper",), data=data, N=4,
                                              members_per_batch=4)
  assert config.tasks == discordance.PAPER_TASKS
  result = discordance.run_discordance(config, str(tmp_path / "disc"))
  (point,) = result["points"]
  assert point["discordance_reward"]["upper_bound"] == pytest.approx(7 / 6)
  assert set(point["base_at_bound"]) == set(discordance.PAPER_TASKS)
  assert all(len(row) == 7 for row in point["percentile_ranks_reward"])
  for name in ("spectra_tiny-random-llama.png", "pca_tiny-random-llama.png"):
    assert os.path.getsize(tmp_path / "disc" / name) > 0
  with pytest.raises(InputError, match="one --data file cannot serve gsm8k and math500 and .*; "
                                       "name each task's file: --data gsm8k=FILE,math500=FILE"):
    discordance.DiscordanceConfig.tiny(tiny_weights, tasks=("paper",),
                                       data=data.split(",")[0].split("=")[1]).find_inputs()


def test_a_chunk_is_graded_while_the_next_one_generates(tiny_weights, monkeypatch):
  from thickets_jax.llm import scoring  # pylint: disable=g-import-not-at-top
  from thickets_jax.tasks import TASKS  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  import time  # pylint: disable=g-import-not-at-top
  config = randopt.RandOptConfig.tiny(tiny_weights).planned()
  gen = config.generator(registry.load(session.TINY_MODEL, tiny_weights))
  task_set = scoring.TaskSet(TASKS.get("arithmetic"), config.splits("arithmetic", 1)[0])
  events, real_generate, real_summarize = [], gen.population_token_ids, scoring.summarize

  def generating(*args, **kwargs):
    for i, out in enumerate(real_generate(*args, **kwargs)):
      events.append(("generated", i))
      yield out
      events.append(("generating", i + 1))

  def slow_summarize(*args, **kwargs):
    events.append(("grading", threading.current_thread() is threading.main_thread()))
    time.sleep(0.5)
    return real_summarize(*args, **kwargs)
  monkeypatch.setattr(gen, "population_token_ids", generating)
  monkeypatch.setattr(scoring, "summarize", slow_summarize)
  chunks = scoring.member_chunks(gen, [task_set], members_per_batch=1)
  seeds, sigmas = np.arange(3), np.full(3, 0.05)
  for part, _ in chunks(seeds, sigmas):
    events.append(("scored", part.start))
  assert [e for e in events if e[0] == "scored"] == [("scored", 0), ("scored", 1), ("scored", 2)]
  assert ("grading", True) not in events  # graded on a host thread, not in the loop
  # chunk 0's scores are handed over once chunk 1 is generated: its grading overlapped that
  assert events.index(("generated", 1)) < events.index(("scored", 0))
  assert events.index(("generated", 2)) < events.index(("scored", 1))
  fresh = scoring.member_chunks(config.generator(registry.load(session.TINY_MODEL, tiny_weights)),
                                [task_set], members_per_batch=1)
  monkeypatch.undo()
  assert [out for _, out in chunks(seeds, sigmas)] == [out for _, out in fresh(seeds, sigmas)]


def _garbage_checkpoint(tmp_path, tiny_weights, damage):
  """A copy of the tiny checkpoint with one file made hostile."""
  import shutil  # pylint: disable=g-import-not-at-top
  directory = tmp_path / f"bad_{damage}"
  shutil.copytree(tiny_weights, directory)
  if damage == "config list":
    (directory / "config.json").write_text("[]")
  elif damage == "config directory":
    (directory / "config.json").unlink()
    (directory / "config.json").mkdir()
  elif damage == "config bad size":
    record = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**record, "hidden_size": "big"}))
  elif damage == "random safetensors":
    (directory / "model.safetensors").write_bytes(os.urandom(4096))
  elif damage == "invalid index":
    (directory / "model.safetensors.index.json").write_text('{"weight_map": [1, 2]}')
  elif damage == "index names a missing file":
    (directory / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00002.safetensors"}}))
  return str(directory)


@pytest.mark.parametrize("damage, names, sentence", [
    ("config list", "config.json", "holds a JSON list, not a model config object"),
    ("config directory", "config.json", "is not a file"),
    ("config bad size", "config.json", "hidden_size = 'big'; it must be a positive integer"),
    ("random safetensors", "model.safetensors", "is not a readable safetensors file"),
    ("invalid index", "model.safetensors.index.json", "is not a valid safetensors index"),
    ("index names a missing file", "model.safetensors.index.json",
     "names .*model-00002.safetensors, which is not a file"),
])
def test_a_hostile_weights_directory_is_one_sentence_naming_the_file(tmp_path, tiny_weights,
                                                                    damage, names, sentence):
  weights_dir = _garbage_checkpoint(tmp_path, tiny_weights, damage)
  workdir = str(tmp_path / "never")
  with pytest.raises(InputError, match=sentence) as error:
    randopt.run_randopt(randopt.RandOptConfig.tiny(weights_dir), workdir)
  assert names in str(error.value) and "\n" not in str(error.value)
  assert not os.path.exists(workdir)


def test_a_hostile_weights_directory_exits_2_on_the_command_line(tmp_path, tiny_weights):
  weights_dir = _garbage_checkpoint(tmp_path, tiny_weights, "random safetensors")
  workdir = str(tmp_path / "never")
  out = _run("randopt", *SMALL, "--weights", weights_dir, "--workdir", workdir)
  assert out.returncode == 2 and "Traceback" not in out.stderr
  assert "model.safetensors is not a readable safetensors file" in out.stderr
  assert len(out.stderr.strip().splitlines()) == 1 and not os.path.exists(workdir)


def test_a_second_job_on_a_busy_workdir_is_refused(tmp_path, tiny_weights):
  """A workdir whose lock another job holds is refused in one sentence, before anything is
  written; two identical jobs started together (the command line's tiny preset) never score a
  candidate twice."""
  import fcntl  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "busy"
  workdir.mkdir()
  with open(workdir / ".lock", "a+") as held:
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.write("pid 4242 on elsewhere")
    held.flush()
    with pytest.raises(InputError, match=re.escape(
        f"{workdir} is in use by another running job (pid 4242 on elsewhere)")):
      randopt.run_randopt(randopt.RandOptConfig.tiny(tiny_weights), str(workdir))
  assert os.listdir(workdir) == [".lock"]  # no spec, config, log or scores
  # Both jobs run the paper's Table 1 preset in its tiny variant, a flag on top of it.
  workdir = tmp_path / "shared"
  both = [subprocess.Popen([sys.executable, "-m", "experiments.randopt", "--preset",
                            "table1:tiny", "--K", "1,2,4", "--average_probabilities",
                            "--weights", tiny_weights, "--workdir", str(workdir)], cwd=ROOT,
                           text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for _ in range(2)]
  codes = sorted(p.wait(timeout=900) for p in both)
  assert codes in ([0, 0], [0, 2])  # refused, or started after the first ended (a resume)
  spec = _read(workdir / "spec.json")
  tiny = randopt.RandOptConfig.tiny(tiny_weights)
  assert (spec["ks"], spec["N"], spec["model"]) == ([1, 2, 4], tiny.N, tiny.model)
  result = _read(workdir / "results.json")
  assert set(result["probability_average_accuracy"]) == set(result["averaged_weights_accuracy"])
  printed = next(p for p in both if p.returncode == 0).stdout.read()
  assert "probability average" in printed and "K=4" in printed
  with open(workdir / "candidates.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert len(records) == tiny.N == len({(r["seed"], r["sigma"]) for r in records})
