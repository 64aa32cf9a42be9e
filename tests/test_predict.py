"""Ensemble inference answers new prompts as the search's own test evaluation voted."""

import json
import os
import subprocess
import sys

import pytest

from thickets_jax.errors import InputError
from thickets_jax.llm import predict, randopt
from thickets_jax.tasks import TASKS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(name="tiny_run")
def _tiny_run(tiny_randopt_run):
  return tiny_randopt_run


def _prompts_file(path, records):
  with open(path, "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
  return str(path)


def test_predict_votes_like_the_search_and_resumes(tmp_path, tiny_run):
  config, workdir, result = tiny_run
  task = TASKS.get(config.task)
  _, test = config.splits(config.task, config.test_size)
  prompts = _prompts_file(tmp_path / "p.jsonl", [task.to_record(e) for e in test])
  out = str(tmp_path / "answers.jsonl")
  summary = predict.predict(predict.PredictConfig(workdir, prompts, out, K=2, batch_size=2))
  assert summary["prompts"] == summary["graded"] == 4 and summary["answered"] > 0
  assert summary["accuracy"] == result["ensemble_accuracy"]["2"]
  lines = [json.loads(line) for line in open(out)]
  searched = [json.loads(line) for line in open(os.path.join(workdir, "test_members.jsonl"))]
  for i, line in enumerate(lines):  # every member answers as it answered in the search
    assert [m["answer"] for m in line["members"]] == [r["votes"][0][i] for r in searched[:2]]
    assert sum(line["votes"].values()) + line["abstained"] == 2
  assert not [p for p in os.listdir(tmp_path) if p.endswith(".partial.jsonl")]

  # Killed after the first member: the second is generated, the first is read back.
  first = lines[0]["members"][0]
  os.remove(out)
  store = f"{out}.{predict._fingerprint(predict.PredictConfig(workdir, prompts, out), randopt.load_topk(workdir), config.max_new_tokens)}.partial.jsonl"
  with open(store, "w") as f:
    f.write(json.dumps({"seed": first["seed"], "sigma": first["sigma"],
                        "completions": ["<answer>1+1</answer>"] * 4}) + "\n")
  predict.predict(predict.PredictConfig(workdir, prompts, out, K=2, batch_size=2))
  again = [json.loads(line) for line in open(out)]
  assert [a["members"][0]["completion"] for a in again] == ["<answer>1+1</answer>"] * 4
  assert [a["members"][1] for a in again] == [b["members"][1] for b in lines]


@pytest.mark.parametrize("combine, reported", [("probabilities", "probability_average_accuracy"),
                                               ("weights", "averaged_weights_accuracy")])
def test_one_completion_ensembles_answer_as_the_search_tested_them(tmp_path, tiny_run, combine,
                                                                  reported):
  config, workdir, result = tiny_run
  task = TASKS.get(config.task)
  _, test = config.splits(config.task, config.test_size)
  prompts = _prompts_file(tmp_path / "p.jsonl", [task.to_record(e) for e in test])
  summary = predict.predict(predict.PredictConfig(workdir, prompts, str(tmp_path / "a.jsonl"),
                                                  K=2, batch_size=2, combine=combine))
  assert summary["combine"] == combine and summary["graded"] == 4
  assert summary["accuracy"] == result[reported]["2"]
  cached = f"{reported[:-len('_accuracy')]}_top2_test.json"
  searched = json.load(open(os.path.join(workdir, cached)))
  lines = [json.loads(line) for line in open(tmp_path / "a.jsonl")]
  assert [line["completion"] for line in lines][:2] == searched["completions"][0]  # kept 2


def test_records_without_answers_are_answered_not_graded(tmp_path, tiny_run):
  _, workdir, _ = tiny_run
  prompts = _prompts_file(tmp_path / "p.jsonl", [{"prompt": "What is 3 + 4?"}])
  summary = predict.predict(predict.PredictConfig(workdir, prompts, str(tmp_path / "a.jsonl"),
                                                  K=1, keep_completions=False))
  line = json.loads(open(tmp_path / "a.jsonl").read())
  assert summary["prompts"] == 1 and "completion" not in line["members"][0]
  assert line["record"] == {"prompt": "What is 3 + 4?"} and "correct" not in line


@pytest.mark.parametrize("records, K, sentence", [
    ([{"question": "2 + 2?"}], 1, "line 1 is not a prompt record of arithmetic: the record "
                                  "lacks the field 'prompt'"),
    ([{"numbers": [3, "5"], "operators": ["+"]}], 1, "must be a non-empty list of integers"),
    ([{"numbers": [3, 5], "operators": ["/"]}], 1, "'operators' must be 1 of"),
    ([{"prompt": "What is 3 + 5?"}], 3, "between 1 and the 2 members saved"),
])
def test_bad_prompts_and_K_are_one_sentence(tmp_path, tiny_run, records, K, sentence):
  _, workdir, _ = tiny_run
  prompts = _prompts_file(tmp_path / "p.jsonl", records)
  with pytest.raises(InputError, match=sentence):
    predict.predict(predict.PredictConfig(workdir, prompts, str(tmp_path / "a.jsonl"), K=K))


def test_an_out_path_that_would_overwrite_the_prompts_is_refused(tmp_path, tiny_run):
  _, workdir, _ = tiny_run
  prompts = _prompts_file(tmp_path / "p.jsonl", [{"prompt": "What is 3 + 5?"}])
  before = open(prompts).read()
  for out, sentence in ((prompts, "is the --prompts file: the answers would replace the prompts"),
                        (str(tmp_path), "is a directory")):
    with pytest.raises(InputError, match=sentence):
      predict.predict(predict.PredictConfig(workdir, prompts, out, K=1))
  assert open(prompts).read() == before and sorted(os.listdir(tmp_path)) == ["p.jsonl"]


def test_task_records_round_trip():
  for name in ("countdown", "arithmetic", "multiplication"):
    task = TASKS.get(name)
    _, test = task.splits(0, 5, 3, None)
    assert [task.from_record(json.loads(json.dumps(task.to_record(e)))) for e in test] == test
  assert TASKS.get("arithmetic").from_record({"prompt": "What is 2 + 2?"}).gold is None
  gsm8k = TASKS.get("gsm8k").from_record({"question": "How many?", "answer": "so #### 1,200"})
  assert gsm8k.gold == "1200" and gsm8k.prompt.startswith("How many?")


def test_predict_command_line_needs_its_files(tmp_path):
  out = subprocess.run([sys.executable, "-m", "experiments.predict", "--run_dir", str(tmp_path),
                        "--prompts", "p.jsonl", "--out", "a.jsonl"], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 2 and "holds no topk.json" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("content, sentence", [
    (b"\x89PNG\r\n\x1a\n\x00\xff\xfe", "is not UTF-8 text; give a JSONL file."),
    (json.dumps({"prompt": "seven " * 1_000_000}).encode() + b"\n",
     "exceeds the longest supported prompt"),
])
def test_unreadable_or_over_long_prompts_are_one_sentence_before_any_answer(
    tmp_path, tiny_run, content, sentence):
  _, workdir, _ = tiny_run
  prompts = tmp_path / "p.jsonl"
  prompts.write_bytes(content)
  out = tmp_path / "a.jsonl"
  with pytest.raises(InputError, match=sentence):
    predict.predict(predict.PredictConfig(workdir, str(prompts), str(out), batch_size=2))
  assert sorted(os.listdir(tmp_path)) == ["p.jsonl"]  # no answers, no partial store
