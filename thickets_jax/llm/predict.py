"""Ensemble inference: the saved top-K members of a RandOpt run answer new prompts by vote
(default), by averaging their next-token probabilities, or as one averaged-weights model
(`combine`).

Each member is rebuilt from `(seed, sigma)` and the run's `PerturbSpec` inside the generation
call (`Generator.population_token_ids`), never stored; it answers every prompt greedily, its
answer is the task's vote key of its completion, and the answer of the ensemble is
`randopt.majority_vote` over the members best-ranked first (the search's tie rule: a tie goes
to the key first cast by the better-ranked member).

A prompts file is JSONL, one record per prompt, in the task's record format
(`Task.from_record`): e.g. `{"numbers": [3, 5, 7], "target": 22}` for countdown, or
`{"prompt": "What is 3 + 4?"}` for arithmetic. Records that carry the answer get `correct`.

Each member's completions are appended to `<out>.<fingerprint>.partial.jsonl` as the member
finishes, so a killed prediction resumes without regenerating them; the file is removed once
`out` is written.
"""

import dataclasses
import hashlib
import json
import os
from typing import Optional

import numpy as np
from absl import logging

from thickets_jax import configs, perturb, population, randopt, storage, workdir
from thickets_jax.errors import InputError
from thickets_jax.llm import randopt as llm_randopt
from thickets_jax.tasks import TASKS, Example, Task


COMBINE = ("vote", "probabilities", "weights")


@dataclasses.dataclass(frozen=True)
class PredictConfig(configs.Config):
  """Answers to new prompts by the top-K vote of a finished RandOpt run."""
  run_dir: Optional[str] = configs.setting(
      None, "A finished randopt run (holding topk.json and spec.json); required.")
  prompts: Optional[str] = configs.setting(
      None, "JSONL prompts in the run task's record format; required.")
  out: Optional[str] = configs.setting(None, "JSONL answers, one line per prompt; required.")
  K: Optional[int] = configs.setting(None, "Members voting, the K best saved (default: all saved).")
  max_new_tokens: Optional[int] = configs.setting(
      None, "Generation limit (default: the run's).")
  batch_size: int = configs.setting(16, "Prompts per generation batch.")
  members_per_batch: int = configs.setting(1, "Members per compiled generation call.")
  member_axis: str = configs.setting(
      "map", "How members share a call: map (one perturbed copy in memory) or vmap (batched).",
      choices=population.MEMBER_AXES)
  keep_completions: bool = configs.setting(
      True, "Write each member's completion beside its answer.")
  combine: str = configs.setting(
      "vote", "How the K members answer together: vote (majority vote of their answers), "
      "probabilities (one completion, each token from the mean of their next-token "
      "probabilities) or weights (one model, θ + the mean of their displacements).",
      choices=COMBINE)

  def validate(self) -> None:
    missing = [f"--{name}" for name in ("run_dir", "prompts", "out") if not getattr(self, name)]
    if missing:
      raise InputError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required: "
                       "a finished randopt run, a JSONL prompts file and the answers file.")
    if self.combine not in COMBINE:
      raise InputError(f"unknown --combine {self.combine!r}; known: {', '.join(COMBINE)}.")
    for name in ("K", "max_new_tokens", "batch_size", "members_per_batch"):
      if getattr(self, name) is not None and getattr(self, name) <= 0:
        raise InputError(f"--{name} must be positive, got {getattr(self, name)}.")


def read_prompts(path: str, task: Task) -> tuple[list[dict], list[Example]]:
  """The records of a JSONL prompts file and their `Example`s; one sentence naming the file and
  line for the first bad record."""
  if not os.path.isfile(path):
    raise InputError(f"--prompts {path} is not a file.")
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except UnicodeDecodeError:
    raise InputError(f"--prompts {path} is not UTF-8 text; give a JSONL file.") from None
  records, examples = [], []
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
      if not isinstance(record, dict):
        raise InputError("a record must be a JSON object")
      examples.append(task.from_record(record))
    except (json.JSONDecodeError, InputError) as e:
      raise InputError(f"{path} line {number} is not a prompt record of {task.name}: "
                       f"{str(e).rstrip('.')}.") from None
    records.append(record)
  if not records:
    raise InputError(f"--prompts {path} holds no records.")
  return records, examples


def _fingerprint(config: PredictConfig, saved: dict, max_new_tokens: int) -> str:
  with open(config.prompts, "rb") as f:
    digest = hashlib.sha256(f.read())
  members = [(m["seed"], m["sigma"]) for m in saved["members"]]
  digest.update(json.dumps([members, max_new_tokens, saved["perturbation"].to_json()]).encode())
  return digest.hexdigest()[:12]


def check_out(config: PredictConfig) -> None:
  """Refuses an `--out` that would overwrite the prompts or that names a directory."""
  if os.path.exists(config.prompts) and os.path.realpath(config.out) == os.path.realpath(
      config.prompts):
    raise InputError(f"--out {config.out} is the --prompts file: the answers would replace "
                     "the prompts; give another path.")
  workdir.check_new_path(config.out, "--out", directory=False)


def predict(config: PredictConfig) -> dict:
  """Answers every prompt with the top-K vote; writes `config.out` and returns a summary
  (prompts, K, how many got an answer, and the accuracy when the records carry answers)."""
  check_out(config)
  execution = dict(batch_size=config.batch_size, members_per_batch=config.members_per_batch,
                   member_axis=config.member_axis)
  if config.max_new_tokens:
    execution["max_new_tokens"] = config.max_new_tokens
  saved, scoring = llm_randopt.saved_run(config.run_dir, **execution)
  K = len(saved["members"]) if config.K is None else config.K
  if not 1 <= K <= len(saved["members"]):
    raise InputError(f"--K must be between 1 and the {len(saved['members'])} members saved in "
                     f"{config.run_dir}, got {K}.")
  scoring.find_inputs()
  task = TASKS.get(saved["task"])
  records, examples = read_prompts(config.prompts, task)
  store = storage.CandidateStore(
      f"{config.out}.{_fingerprint(config, saved, scoring.max_new_tokens)}.partial.jsonl")
  loaded = scoring.load(saved["model"])
  llm_randopt.check_rebuildable(saved, loaded, config.run_dir)
  gen = scoring.generator(loaded, saved["perturbation"])
  members = saved["members"][:K]
  seeds = np.asarray([m["seed"] for m in members], np.int64)
  sigmas = np.asarray([m["sigma"] for m in members], np.float64)
  prompts = [e.prompt for e in examples]
  gen.codec.check_lengths(prompts)

  if config.combine == "vote":
    def answer_chunk(chunk_seeds, chunk_sigmas):
      for part, texts in gen.generate_population(chunk_seeds, chunk_sigmas, prompts,
                                                 members_per_batch=config.members_per_batch):
        yield part, {"completions": texts}
    completions = [r["completions"] for r in
                   randopt.score_candidates(answer_chunk, seeds, sigmas, store)]  # [K][prompts]
    lines = [_answer(task, record, example, members, [c[i] for c in completions],
                     config.keep_completions)
             for i, (record, example) in enumerate(zip(records, examples))]
  else:  # one generation pass: nothing to resume
    if config.combine == "probabilities":
      ids = gen.averaged_token_ids(seeds, sigmas, prompts)
    else:
      ids = gen.base_token_ids(prompts, params=perturb.averaged_member(
          gen.params, seeds, sigmas, gen.perturb))
    lines = [_combined_answer(task, record, example, gen.codec.decode(row))
             for record, example, row in zip(records, examples, ids)]
  workdir.atomic_write(config.out, lambda tmp: _write_lines(tmp, lines))
  if os.path.exists(store.path):
    os.remove(store.path)
  graded = [line["correct"] for line in lines if "correct" in line]
  summary = {"run_dir": config.run_dir, "model": saved["model"], "task": saved["task"],
             "K": K, "combine": config.combine, "prompts": len(lines),
             "answered": sum(line["answer"] is not None for line in lines),
             "graded": len(graded),
             "accuracy": float(np.mean(graded)) if graded else None, "out": config.out}
  logging.info("predict: %s", summary)
  return summary


def _answer(task: Task, record: dict, example: Example, members: list[dict],
            texts: list[str], keep_completions: bool) -> dict:
  """One output line: the voted answer, its counts and each member's answer."""
  keys = [task.vote_key(text, example.gold) for text in texts]
  winner = randopt.majority_vote(keys)
  counts: dict[str, int] = {}
  for key in keys:
    if key is not None:
      counts[key] = counts.get(key, 0) + 1
  line = {"record": record, "answer": winner,
          "completion": None if winner is None else texts[keys.index(winner)],
          "votes": counts, "abstained": keys.count(None),
          "members": [{"rank": rank, "seed": m["seed"], "sigma": m["sigma"], "answer": key,
                       **({"completion": text} if keep_completions else {})}
                      for rank, (m, key, text) in enumerate(zip(members, keys, texts), 1)]}
  if example.gold is not None:  # judged as the search judges a vote (randopt.ensemble_accuracy)
    line["correct"] = winner is not None and bool(task.correct(line["completion"], example.gold))
  return line


def _combined_answer(task: Task, record: dict, example: Example, text: str) -> dict:
  """One output line of an ensemble that writes one completion (probabilities, weights)."""
  line = {"record": record, "answer": task.vote_key(text, example.gold), "completion": text}
  if example.gold is not None:
    line["correct"] = line["answer"] is not None and bool(task.correct(text, example.gold))
  return line


def _write_lines(path: str, lines: list[dict]) -> None:
  with open(path, "w") as f:
    f.writelines(json.dumps(line) + "\n" for line in lines)
