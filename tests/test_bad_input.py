"""Careless command lines over every entry point: one sentence naming the flag and value on
stderr, exit status 2, no traceback, nothing written over existing data.

The table runs each experiment's cases in one process (tests/workers/probe.py), so a new flag or
experiment joins by adding rows. `{tmp}` in an argument is the test's temporary directory, where
`prompts.jsonl` (a prompts file), `file` (a plain file) and `held/` (a workdir holding a
finished RandOpt run) exist beforehand and must be left as they were.
"""

import errno
import json
import os
import subprocess
import sys

import pytest

from thickets_jax import cli, workdir
from thickets_jax.errors import InputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CASES = {
    "density": [
        (["--margins", "nan"], "--margins must be finite numbers, got nan."),
        (["--margins", "x"], "--margins takes numbers, got 'x'."),
        (["--N", "0"], "--N must be positive, got 0."),
        (["--N", "abc"], "flag --N=abc: invalid literal for int()"),
        (["--sigmas", "0"], "sigma must be a positive finite number, got 0.0."),
        (["--sigmas", "-1e-3,1e-3"], "sigma must be a positive finite number, got -0.001."),
        (["--batch_size", "0"], "--batch_size must be positive, got 0."),
        (["--train_size", "-1"], "--train_size must be positive, got -1."),
        (["--dtype", "float16"], "flag --dtype=float16: value should be one of <float32|bfloat16>"),
        (["--model", "nosuch-7b", "--workdir", "{tmp}/w"], "unknown model 'nosuch-7b'"),
        (["--task", "nosuch", "--workdir", "{tmp}/w"], "unknown task 'nosuch'"),
        (["--nosuch_flag"], "Unknown command line flag 'nosuch_flag'"),
        (["positional"], "unexpected arguments 'positional'"),
        (["--host_devices", "0"], "--host_devices must be at least 1, got 0."),
        (["--plan_devices", "8"], "--plan_devices and --plan_device_memory go together"),
        (["--workdir", "{tmp}/held"], "holds a RandOptConfig run, not a DensityConfig run"),
        (["--task", "gsm8k", "--workdir", "{tmp}/w"], "the task needs openai/gsm8k (train)"),
        (["--task", "gsm8k", "--data", "{tmp}/line2.jsonl", "--workdir", "{tmp}/w"],
         "line2.jsonl line 2 is not JSON"),
        (["--task", "gsm8k", "--data", "{tmp}/file", "--workdir", "{tmp}/w"],
         "file line 1 is not JSON"),
    ],
    "randopt": [
        (["--K", "0"], "K must be positive, got K=0."),
        (["--K", "64"], "K=64 is larger than the population N=16"),
        (["--K", "1,x"], "--K takes integers, got '1,x'."),
        (["--test_size", "-1"], "--test_size must be >= 0, got -1."),
        (["--halving_eta", "0.5", "--train_size", "8"], "--halving_eta must be greater than 1"),
        (["--host_devices", "0"], "--host_devices must be at least 1, got 0."),
        (["--resume_dir", "{tmp}/nosuch", "--workdir", "{tmp}/w"], "{tmp}/nosuch"),
        (["--rank", "0"], "--rank must be positive, got 0."),
        (["--scale", "modular", "--masses", "ffn=1"], "groups among embedding, attention"),
        (["--scale", "frobenius", "--relative"], "--relative sets each tensor's σ from its std"),
        (["--scale", "natural", "--noise", "lowrank"], "--scale natural needs full-rank noise"),
        (["--scale", "radial"], "flag --scale=radial: value should be one of"),
        (["--member_axis", "pmap"], "flag --member_axis=pmap: value should be one of"),
        (["--decode", "stream"], "flag --decode=stream: value should be one of <auto|batch|refill>"),
        (["--decode", "refill", "--refill_rows", "17"],
         "--refill_rows must be between 1 and --batch_size (16), got 17."),
        (["--preset", "figure1c"], "--preset figure1c is a CompareConfig, not a RandOptConfig"),
        (["--preset", "nosuch"], "unknown preset 'nosuch'"),
        (["--preset", "table1:huge"], "unknown --preset variant 'huge' of table1"),
        (["--preset", "table1", "--K", "6000"], "K=6000 is larger than the population N=5000"),
        (["--task", "gsm8k", "--data", "{tmp}/long.jsonl", "--train_size", "1", "--test_size",
          "1", "--workdir", "{tmp}/long"], "exceeds the longest supported prompt"),
        (["--model", "gpt-9", "--workdir", "{tmp}/w"], "unknown model 'gpt-9'"),
        (["--plan_devices", "8"], "--plan_devices and --plan_device_memory go together"),
        (["--plan_devices", "8", "--plan_device_memory", "80GB"], "it needs --dry_run"),
        (["--dry_run", "--plan_devices", "8", "--plan_device_memory", "lots"],
         "--plan_device_memory takes a size like 80GB"),
        (["--dry_run", "--plan_devices", "0", "--plan_device_memory", "80GB"],
         "--plan_devices must be positive"),
        (["--model", "qwen2.5-32b-instruct", "--dry_run", "--plan_devices", "1",
          "--plan_device_memory", "80GB", "--workdir", "{tmp}/w"],
         "no plan fits: qwen2.5-32b-instruct in bfloat16 needs"),
    ],
    "discordance": [
        (["--tasks", "arithmetic,arithmetic"], "--tasks names a task twice"),
        (["--tasks", "arithmetic"], "--tasks needs at least two tasks"),
        (["--spectra_shown", "-1"], "--spectra_shown must be at least 1, got -1."),
        (["--clusters", "0"], "--clusters must be between 1 and N=16, got 0."),
        (["--N", "1"], "--N must be at least 2, got 1."),
    ],
    "compare": [
        (["--methods", "ppo"], "unknown method 'ppo'"),
        (["--methods", "es,es"], "--methods names a method twice"),
        (["--kl_coef", "-1"], "--kl_coef must be >= 0, got -1.0."),
        (["--es_population", "1"], "--es_population must be at least 2, got 1."),
        (["--es_sigma", "0"], "--es_sigma must be positive, got 0.0."),
        (["--grpo_prompts", "3"], "--grpo_prompts 3 must be a multiple of --grpo_mini_batch 8."),
        (["--group_size", "1"], "--group_size must be at least 2"),
        (["--vote_k", "0"], "--vote_k must be positive, got 0."),
        (["--vote_temperature", "0"], "--vote_temperature must be positive, got 0.0."),
        (["--domain", "signals", "--N", "3"], "--N is a language-model flag"),
        (["--domain", "signals", "--grpo_steps", "3", "--workdir", "{tmp}/w"],
         "--grpo_steps is a language-model flag; --domain signals takes --seeds."),
    ],
    "distill": [
        (["--lora_rank", "0"], "--lora_rank must be positive, got 0."),
        (["--learning_rate", "0"], "--learning_rate must be positive, got 0.0."),
        (["--epochs", "0"], "--epochs must be positive, got 0."),
        (["--sft_micro_batch", "3"], "--sft_micro_batch 3 must divide --sft_batch_size 8."),
        (["--finetune", "qlora"], "flag --finetune=qlora: value should be one of <full|lora>"),
        (["--K", "40"], "K=40 is larger than the population N=16"),
        (["--rounds", "0"], "--rounds must be positive, got 0."),
    ],
    "predict": [
        ([], "--run_dir, --prompts, --out are required"),
        (["--run_dir", "{tmp}/held", "--prompts", "{tmp}/prompts.jsonl", "--out", "{tmp}/a.jsonl",
          "--max_new_tokens", "0"], "--max_new_tokens must be positive, got 0."),
        (["--run_dir", "{tmp}/held", "--prompts", "{tmp}/prompts.jsonl", "--out",
          "{tmp}/prompts.jsonl"], "is the --prompts file"),
        (["--run_dir", "{tmp}/held", "--prompts", "{tmp}/prompts.jsonl", "--out", "{tmp}"],
         "is a directory; give the path of a file."),
        (["--run_dir", "{tmp}/held", "--prompts", "{tmp}/prompts.jsonl", "--out",
          "/proc/nosuch/a.jsonl"], "cannot write --out /proc/nosuch/a.jsonl"),
        (["--run_dir", "{tmp}/held", "--prompts", "{tmp}/prompts.jsonl", "--out", "{tmp}/a.jsonl",
          "--K", "0"], "--K must be positive, got 0."),
        (["--combine", "logits"], "flag --combine=logits: value should be one of"),
    ],
    "export": [
        ([], "--run_dir and --out are required."),
        (["--run_dir", "{tmp}/nosuch", "--out", "{tmp}/x"], "{tmp}/nosuch"),
        (["--dtype", "float16", "--run_dir", "{tmp}/held", "--out", "{tmp}/x"],
         "flag --dtype=float16: value should be one of"),
        (["--format", "gguf", "--run_dir", "{tmp}/held", "--out", "{tmp}/x"],
         "flag --format=gguf: value should be one of"),
    ],
    "landscape": [
        ([], "--workdir is required."),
        (["--domain", "llm", "--workdir", "{tmp}/w"], "--domain llm needs --run_dir"),
        (["--N", "4", "--workdir", "{tmp}/w"], "--N must be at least the 5 members placed on "
                                                "the plane, got 4."),
        (["--domain", "llm", "--run_dir", "{tmp}/held", "--N", "4", "--workdir", "{tmp}/w"],
         "--N is for --domain signals, not llm."),
        (["--run_dir", "{tmp}/held", "--workdir", "{tmp}/w"], "--run_dir is for --domain llm"),
        (["--points", "4", "--workdir", "{tmp}/w"], "--points must be odd and at least 3"),
    ],
    "signals1d": [
        (["--regime", "nosuch"], "unknown --regime 'nosuch'"),
        (["--regime", "custom", "--pretrain", "zigzag", "--posttrain", "one_line"],
         "unknown --pretrain 'zigzag'"),
        (["--regime", "custom", "--pretrain", "mixed", "--posttrain", "zigzag"],
         "unknown signal family 'zigzag'"),
        (["--N", "10", "--K", "20", "--workdir", "{tmp}/w"],
         "K=20 is larger than the population N=10"),
        (["--sigma", "0"], "sigma must be a positive finite number, got 0.0"),
        (["--sigma", "-0.01"], "sigma must be a positive finite number, got -0.01"),
        (["--width", "0"], "--width must be at least 1, got 0"),
        (["--K", "five"], "--K takes integers"),
        (["--scale", "modular", "--masses", "mlp=-1"], "masses >= 0"),
        (["--seeds", "0-x"], "--seeds takes integers and ranges like 0-4"),
        (["--seeds", "1,1"], "--seeds must name distinct integers"),
        (["--workdir", "{tmp}/file/sub"], "cannot write to --workdir"),
        (["--pretrain_steps", "-1", "--workdir", "{tmp}/w"],
         "--pretrain_steps must be positive, got -1."),
        (["--chunk_size", "0", "--workdir", "{tmp}/w"], "--chunk_size must be positive, got 0."),
        (["--seeds", "a-b"], "--seeds takes integers and ranges"),
        (["--workdir", "{tmp}/held"], "holds a RandOptConfig run, not a signals1d run"),
    ],
    "scaling1d": [
        (["--workdir", "{tmp}/file/sub"], "cannot write to --workdir"),
        (["--tasks", "one_line"], "--tasks needs at least two tasks"),
        (["--plot_margin", "0.3"], "--plot_margin 0.3 is not one of --margins."),
        (["--samples", "0", "--workdir", "{tmp}/w"], "--samples must be positive, got 0."),
        (["--pretrain_steps", "-1", "--workdir", "{tmp}/w"],
         "--pretrain_steps must be positive, got -1."),
        (["--margins", "nan", "--plot_margin", "0.1"], "--margins must be finite numbers"),
        (["--widths", "x"], "--widths takes integers, got 'x'."),
        (["--workdir", "{tmp}/held"], "holds a RandOptConfig run, not a scaling1d run"),
    ],
    "fuzz_graders": [
        (["--workdir", "{tmp}/held"], "holds a RandOptConfig run, not a fuzz_graders run"),
        (["--inputs", "0"], "--inputs must be positive, got 0."),
        (["--slow_s", "-1"], "--slow_s must be positive, got -1.0."),
        (["--tasks", "nosuch"], "unknown task 'nosuch'"),
    ],
    "benchmark": [
        (["--bench", "B1", "--chunk_size", "0"], "--chunk_size must be positive, got 0"),
        (["--bench", "B4", "--b4_sizes", "4,-1"], "--b4_sizes must be positive, got -1"),
        (["--bench", "B6", "--b6_ranks", "4,0"], "--b6_ranks must be positive, got 0"),
        (["--bench", "P1", "--p1_device_memory", "lots"],
         "--p1_device_memory takes a size like 80GB or 16GiB, got 'lots'"),
        (["--bench", "P1", "--p1_models", "qwen9"], "unknown model 'qwen9'; known: "),
        (["--bench", "B99"], "unknown --bench 'B99'"),
        (["--bench", "B7", "--b7_eta", "0.5"], "--b7_eta must be greater than 1, got 0.5."),
        (["--bench", "B7", "--b7_llm", "nosuch"], "unknown model 'nosuch'"),
        (["--bench", "B7", "--b7_llm_N", "0"], "--b7_llm_N must be at least 4"),
        (["--bench", "B7", "--b7_seeds", "x"], "--b7_seeds takes integers"),
        (["--bench", "B7", "--b7_seeds", "3"],
         "--b7_seeds needs at least two seeds (figures are means ± SE over seeds), got '3'."),
        (["--bench", "B10", "--b10_seeds", "0"], "--b10_seeds needs at least two seeds"),
        (["--bench", "B11", "--b11_seeds", "1"], "--b11_seeds needs at least two seeds"),
        (["--bench", "B1", "--N", "0"], "--N must be positive, got 0."),
        (["--bench", "B1", "--prompts", "8"], "--prompts is a setting of B3, B6, B8, not of B1."),
        (["--bench", "B6", "--b6_members", "8"], "--b6_members 8 needs at least two chunks"),
        (["--bench", "B9", "--b9_refill_rows", "9"],
         "--b9_refill_rows must be between 1 and --b9_batch (8), got 9."),
        (["--bench", "B9", "--b9_prompts", "12"], "--b9_prompts 12 must be a multiple of"),
        (["--bench", "B9", "--b9_dtype", "float32"],
         "--b9_dtype sets the random weights' dtype; it needs --b9_random_weights."),
        (["--bench", "B9", "--b9_rank", "-1"],
         "--b9_rank must be 0 (full rank) or positive, got -1."),
    ],
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
  """The temporary directory with the files the cases must not change, and their mtimes."""
  tmp = tmp_path_factory.mktemp("careless")
  (tmp / "prompts.jsonl").write_text('{"prompt": "What is 3 + 4?"}\n')
  (tmp / "file").write_text("data\n")
  record = {"question": "What is 3 + 4?", "answer": "#### 7"}
  (tmp / "line2.jsonl").write_text(json.dumps(record) + "\n{not json\n")
  long = {"question": "seven " * 1_000_000, "answer": "#### 7"}
  (tmp / "long.jsonl").write_text("\n".join(json.dumps(r) for r in (long, record, record)) + "\n")
  held = tmp / "held"
  held.mkdir()
  (held / "spec.json").write_text(json.dumps({"experiment": "RandOptConfig"}))
  (held / "results.json").write_text("{}")
  return tmp


def _stamps(tmp):
  return {os.path.relpath(os.path.join(d, f), tmp): os.stat(os.path.join(d, f)).st_mtime_ns
          for d, _, files in os.walk(tmp) for f in files}


@pytest.mark.parametrize("experiment", sorted(CASES))
def test_careless_command_lines_get_one_sentence_and_exit_2(experiment, scene):
  before = _stamps(scene)
  cases = [[a.replace("{tmp}", str(scene)) for a in argv] for argv, _ in CASES[experiment]]
  out = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "workers", "probe.py"),
                        experiment], input=json.dumps(cases), cwd=ROOT, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": ROOT})
  results = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
  assert len(results) == len(cases), out.stderr[-3000:]
  for result, (_, sentence) in zip(results, CASES[experiment]):
    lines = result["stderr"].strip().splitlines()
    assert result["status"] == 2 and "Traceback" not in result["stderr"], result
    assert len(lines) == 1 and lines[0].startswith("error: ") and sentence.replace(
        "{tmp}", str(scene)) in lines[0], result
  after = _stamps(scene)
  assert {path: after.get(path) for path in before} == before  # nothing changed or removed
  assert not (scene / "w").exists()  # refused before the workdir was made
  if experiment == "randopt":  # the over-long prompt was refused before anything was scored
    assert sorted(os.listdir(scene / "long")) == [".lock", "config.json", "log.txt", "spec.json"]


@pytest.mark.parametrize("path, directory, sentence", [
    ("file", True, "--out {tmp}/file is a file; give the path of a directory."),
    ("held", False, "--out {tmp}/held is a directory; give the path of a file."),
    ("file/below", False, "cannot write --out {tmp}/file/below"),
])
def test_an_output_path_of_the_wrong_kind_is_refused(scene, path, directory, sentence):
  with pytest.raises(InputError) as e:
    workdir.check_new_path(str(scene / path), "--out", directory)
  assert str(e.value).startswith(sentence.format(tmp=scene))


def test_a_full_disk_is_one_sentence(monkeypatch, capsys):
  def main(argv):
    del argv
    raise OSError(errno.ENOSPC, "No space left on device", "/runs/ro/candidates.jsonl")
  monkeypatch.setattr(sys, "argv", ["randopt"])
  with pytest.raises(SystemExit) as e:
    cli.run(main)
  assert e.value.code == 2
  assert capsys.readouterr().err == (
      "error: the disk is full (writing /runs/ro/candidates.jsonl); free some space and rerun the "
      "same command: the workdir resumes where it stopped.\n")
