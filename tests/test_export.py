"""A member exported as a Hugging Face checkpoint generates the tokens it generated here."""

import dataclasses
import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from thickets_jax.errors import InputError
from thickets_jax.llm import export, generate, randopt, registry, session
from thickets_jax.llm.generator import Generator
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
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
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
  assert written["member"] == "rank 2" and written["members"] == [{"seed": 11, "sigma": 0.01}]
  loaded = registry.load(session.TINY_MODEL, tiny_weights)
  member = rebuild_member(loaded.params, 11, 0.01, randopt.RandOptConfig().perturb_spec())
  _same_greedy_tokens(loaded, member, str(tmp_path / "out"), new_tokens=12)
  assert json.load(open(tmp_path / "out" / "thickets_member.json"))["members"][0]["sigma"] == 0.01

  export.export_member(export.ExportConfig(run, str(tmp_path / "bf16"), dtype="bfloat16"))
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "bf16"))
  assert hf.dtype == torch.bfloat16
  embed = hf.get_input_embeddings().weight.detach().float().numpy()
  base = rebuild_member(loaded.params, 3, 0.05, randopt.RandOptConfig().perturb_spec())
  np.testing.assert_allclose(embed, np.asarray(base["embed"]["embedding"]), rtol=1e-2, atol=1e-3)


def test_the_averaged_weights_model_is_the_base_plus_the_mean_displacement(tmp_path, tiny_weights):
  members = [{"seed": 3, "sigma": 0.05}, {"seed": 11, "sigma": 0.01}, {"seed": 8, "sigma": 0.02}]
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights, members)
  written = export.export_member(export.ExportConfig(run, str(tmp_path / "out"), member="mean:2"))
  assert written["member"] == "mean of the top 2" and written["members"] == members[:2]
  loaded = registry.load(session.TINY_MODEL, tiny_weights)
  spec = randopt.RandOptConfig().perturb_spec()
  first, second = (rebuild_member(loaded.params, m["seed"], m["sigma"], spec) for m in members[:2])
  mean = lambda a, b, base: base + ((a - base) + (b - base)) / 2
  expected = jax.tree.map(mean, first, second, loaded.params)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"))
  np.testing.assert_allclose(hf.get_input_embeddings().weight.detach().numpy(),
                             np.asarray(expected["embed"]["embedding"]), atol=1e-6)
  _same_greedy_tokens(loaded, expected, str(tmp_path / "out"), new_tokens=12)
  whole = export.export_member(export.ExportConfig(run, str(tmp_path / "all"), member="mean"))
  assert whole["members"] == members


def _same_greedy_tokens_with_adapter(loaded, member_params, out, new_tokens):
  """Our member's greedy tokens are those of PEFT's adapter in `out` on its base checkpoint."""
  peft = pytest.importorskip("peft")
  config = json.load(open(os.path.join(out, "adapter_config.json")))
  base = transformers.AutoModelForCausalLM.from_pretrained(config["base_model_name_or_path"])
  hf = peft.PeftModel.from_pretrained(base, out).eval()
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
                  generate.Sampling(max_new_tokens=new_tokens), batch_size=2, chat=True)
  ours = gen.base_token_ids(PROMPTS, params=member_params)
  for row, ids in zip(ours, gen.codec.token_ids(PROMPTS)):
    with torch.no_grad():
      theirs = hf.generate(input_ids=torch.tensor([ids]), max_new_tokens=new_tokens,
                           do_sample=False)[0, len(ids):].tolist()
    generated = int(generate.completion_mask(row, gen.codec.stop_ids).sum())
    assert theirs[:generated] == row[:generated].tolist()
  return hf


@pytest.mark.parametrize("vector_noise", [True, False])
def test_a_low_rank_member_is_a_peft_adapter_with_its_tokens(tmp_path, tiny_weights,
                                                             vector_noise):
  spec = dataclasses.replace(randopt.RandOptConfig(noise="lowrank", rank=2).perturb_spec(),
                             vector_noise=vector_noise)
  members = [{"seed": 3, "sigma": 0.05}, {"seed": 11, "sigma": 0.03}]
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights, members, spec=spec)
  written = export.export_member(export.ExportConfig(run, str(tmp_path / "one"), member="1",
                                                     format="lora"))
  assert written["base_checkpoint"] == os.path.abspath(tiny_weights)
  loaded = registry.load(session.TINY_MODEL, tiny_weights)
  member = rebuild_member(loaded.params, 3, 0.05, spec)
  hf = _same_greedy_tokens_with_adapter(loaded, member, str(tmp_path / "one"), new_tokens=12)
  config = json.load(open(tmp_path / "one" / "adapter_config.json"))
  assert config["r"] == 2 and ("lm_head" in config["target_modules"])  # the tied head
  assert bool(config["modules_to_save"]) == vector_noise
  table = np.asarray(member["embed"]["embedding"])
  with torch.no_grad():  # the adapted lookup of every token is the member's table
    looked_up = hf.get_input_embeddings()(torch.arange(table.shape[0])).numpy()
  np.testing.assert_allclose(looked_up, table, atol=1e-6)
  export.export_member(export.ExportConfig(run, str(tmp_path / "mean"), member="mean",
                                           format="lora"))
  averaged = jax.tree.map(lambda a, b, base: base + ((a - base) + (b - base)) / 2, member,
                          rebuild_member(loaded.params, 11, 0.03, spec), loaded.params)
  _same_greedy_tokens_with_adapter(loaded, averaged, str(tmp_path / "mean"), new_tokens=12)
  assert json.load(open(tmp_path / "mean" / "adapter_config.json"))["r"] == 4


def test_a_full_rank_member_is_refused_as_an_adapter(tmp_path, tiny_weights):
  run = _topk(tmp_path / "run", session.TINY_MODEL, tiny_weights, [{"seed": 3, "sigma": 0.05}])
  with pytest.raises(InputError, match="needs a run with low-rank members"):
    export.export_member(export.ExportConfig(run, str(tmp_path / "out"), format="lora"))
  assert not os.path.exists(tmp_path / "out")


@pytest.mark.parametrize("member, sentence", [("9", "outside the saved top-1"),
                                              ("mean:2", "outside the saved top-1"),
                                              ("mean:x", "takes top1, a rank"),
                                              ("best", "takes top1, a rank")])
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
# random checkpoint (tests/test_architectures.py); this one adds real weights read from a GGUF,
# as a checkpoint and, its base written beside it, as a LoRA adapter.
@pytest.mark.integration
@pytest.mark.parametrize("model", ["smollm2-135m-instruct"])
def test_offline_member_round_trips_through_transformers_and_peft(tmp_path, model,
                                                                 offline_models, monkeypatch):
  spec = randopt.RandOptConfig(noise="lowrank").perturb_spec()
  run = _topk(tmp_path / "run", model, None, [{"seed": 5, "sigma": 1e-3}], spec=spec)
  monkeypatch.setattr(registry, "load", offline_models)  # export reads the model once with us
  export.export_member(export.ExportConfig(run, str(tmp_path / "out")))
  loaded = offline_models(model)
  member = rebuild_member(loaded.params, 5, 1e-3, spec)
  _same_greedy_tokens(loaded, member, str(tmp_path / "out"), new_tokens=16)
  written = export.export_member(export.ExportConfig(run, str(tmp_path / "lora"),
                                                     format="lora"))
  assert written["base_checkpoint"] == str(tmp_path / "lora" / "base")
  _same_greedy_tokens_with_adapter(loaded, member, str(tmp_path / "lora"), new_tokens=16)
