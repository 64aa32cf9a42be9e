"""Parity with Hugging Face PyTorch on the real offline weights (GGUF, dequantised)."""

import os
import tempfile

import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax.llm import generate, model as M, registry, torch_twin
from thickets_jax.tasks import countdown

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=registry.OFFLINE_MODELS)
def offline(request):
  loaded = registry.load(request.param)
  assert loaded.source.kind == "gguf"
  return loaded, torch_twin.transformers_model(loaded.config, loaded.params)


def _prompts(loaded, count=3):
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                           generate.Sampling(max_new_tokens=1), batch_size=count, chat=True)
  texts = [countdown.prompt(p) for p in countdown.generate(7, count)]
  return gen, texts, gen.codec.token_ids(texts)


def test_logits_match_pytorch_on_the_same_weights(offline):
  loaded, hf = offline
  _, _, prompts = _prompts(loaded)
  for ids in prompts:
    with torch.no_grad():
      expected = hf(torch.tensor([ids])).logits.numpy()[0]
    ours = np.asarray(M.forward(loaded.config, loaded.params, jnp.asarray([ids])))[0]
    np.testing.assert_allclose(ours, expected, atol=5e-4, rtol=1e-4)
    assert np.mean(ours.argmax(-1) == expected.argmax(-1)) == 1.0


def test_greedy_continuations_match_pytorch_for_32_tokens(offline):
  loaded, hf = offline
  gen, texts, prompts = _prompts(loaded)
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                           generate.Sampling(max_new_tokens=32, ignore_eos=True),
                           batch_size=len(texts), chat=True)
  ours = gen.base_token_ids(texts)  # one left-padded batch
  for row, ids in zip(ours, prompts):
    with torch.no_grad():
      out = hf.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32,
                        do_sample=False, pad_token_id=gen.codec.pad_id)
    assert row.tolist() == out[0, len(ids):].tolist()


def test_gguf_dequantisation_matches_transformers_gguf_loader():
  """transformers reads the GGUF itself (its own dequantisation and q/k un-permutation)."""
  pytest.importorskip("accelerate")
  loaded = registry.load("smollm2-135m-instruct")
  with tempfile.TemporaryDirectory() as tmp:
    os.symlink(loaded.source.path, os.path.join(tmp, "model.gguf"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp, gguf_file="model.gguf",
                                                           dtype=torch.float32).eval()
  _, _, prompts = _prompts(loaded, count=2)
  for ids in prompts:
    with torch.no_grad():
      expected = hf(torch.tensor([ids])).logits.float().numpy()[0]
    ours = np.asarray(M.forward(loaded.config, loaded.params, jnp.asarray([ids])))[0]
    np.testing.assert_allclose(ours, expected, atol=5e-4, rtol=1e-4)
