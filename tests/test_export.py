"""A member exported as a Hugging Face checkpoint generates the tokens it generated here."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from thickets_jax.errors import InputError
from thickets_jax.llm import export, generate, randopt, registry, session
from thickets_jax.perturb import PerturbSpec, rebuild_member

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPTS = ["What is 12 + 7? Answer with the number.", "Name a colour."]


def _topk(run_dir, model, weights, members, spec=None):
  os.makedirs(run_dir, exist_ok=True)
  spec = spec or randopt.RandOptConfig().perturb_spec()
  with open(os.path.join(run_dir, "topk.json"), "w") as f:
    json.dump({"model": model, "weights": weights, "weights_source": "test", "dtype": "float32",
               "task": "arithmetic", "perturbation": spec.to_json(), "members": members}, f)
  return str(run_dir)


def _same_greedy_tokens(loaded, member_params, out, new_tokens):
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                           generate.Sampling(max_new_tokens=new_tokens), batch_size=2, chat=True)
  ours = gen.base_token_ids(PROMPTS, params=member_params)
  hf = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
  for row, ids in zip(ours, gen.codec.token_ids(PROMPTS)):
    with torch.no_grad():
      theirs = hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens)[0, len(ids):].tolist()
    generated = int(generate.completion_mask(row, gen.codec.stop_ids).sum())
    assert theirs[:generated] == row[:generated].tolist()


def test_tiny_member_round_trips_through_transformers(tmp_path, tiny_weights):
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights,
              [{"seed": 3, "sigma": 0.05}, {"seed": 11, "sigma": 0.01}])
  written = export.export_member(export.ExportConfig(run, str(tmp_path / "out"), member="2"))
  assert written["rank"] == 2 and written["seed"] == 11
  loaded = registry.load(session.TINY_MODEL, tiny_weights)
  member = rebuild_member(loaded.params, 11, 0.01, randopt.RandOptConfig().perturb_spec())
  _same_greedy_tokens(loaded, member, str(tmp_path / "out"), new_tokens=12)
  assert json.load(open(tmp_path / "out" / "thickets_member.json"))["sigma"] == 0.01

  export.export_member(export.ExportConfig(run, str(tmp_path / "bf16"), dtype="bfloat16"))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
  assert hf.dtype == torch.bfloat16
  embed = hf.get_input_embeddings().weight.detach().float().numpy()
  base = rebuild_member(loaded.params, 3, 0.05, randopt.RandOptConfig().perturb_spec())
  np.testing.assert_allclose(embed, np.asarray(base["embed"]["embedding"]), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize("member, sentence", [("9", "outside the saved top-1"),
                                              ("best", "takes top1 or a rank")])
def test_bad_members_are_one_sentence(tmp_path, tiny_weights, member, sentence):
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights, [{"seed": 3, "sigma": 0.05}])
  with pytest.raises(InputError, match=sentence):
    export.export_member(export.ExportConfig(run, str(tmp_path / "out"), member=member))


def test_a_run_that_cannot_be_rebuilt_is_refused_on_the_command_line(tmp_path, tiny_weights):
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights, [{"seed": 3, "sigma": 0.05}],
              spec=PerturbSpec(stacked="^blocks/"))
  out = subprocess.run([sys.executable, "-m", "experiments.export", "--run_dir", run, "--out",
                        str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
  assert out.returncode == 2
  assert "cannot rebuild" in out.stderr.strip().splitlines()[-1]
  missing = subprocess.run([sys.executable, "-m", "experiments.export", "--run_dir",
                            str(tmp_path), "--out", str(tmp_path / "o")], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
  assert missing.returncode == 2 and "holds no topk.json" in missing.stderr


# One offline model: every architecture's export is checked against transformers on a tiny
# random checkpoint (tests/test_architectures.py); this one adds real weights read from a GGUF.
@pytest.mark.integration
@pytest.mark.parametrize("model", ["smollm2-135m-instruct"])
def test_offline_member_round_trips_through_transformers(tmp_path, model, offline_models,
                                                        monkeypatch):
  run = _topk(tmp_path / "run", model, None, [{"seed": 5, "sigma": 1e-3}])
  monkeypatch.setattr(registry, "load", offline_models)  # export reads the model once with us
  export.export_member(export.ExportConfig(run, str(tmp_path / "out")))
  loaded = offline_models(model)
  member = rebuild_member(loaded.params, 5, 1e-3, randopt.RandOptConfig().perturb_spec())
  _same_greedy_tokens(loaded, member, str(tmp_path / "out"), new_tokens=16)
