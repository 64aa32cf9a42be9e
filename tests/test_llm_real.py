"""Parity with Hugging Face PyTorch on the real offline weights (GGUF, dequantised)."""

import tempfile

import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax.llm import generate, model as M, registry, torch_twin
from thickets_jax.llm.generator import Generator
from thickets_jax.perturb import PerturbSpec
from thickets_jax.tasks import countdown

import toys

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", params=registry.OFFLINE_MODELS)
def offline(request, offline_models):
  loaded = offline_models(request.param)
  assert loaded.source.kind == "gguf"
  return loaded, torch_twin.transformers_model(loaded.config, loaded.params)


def _prompts(loaded, count=3):
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
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
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
                  generate.Sampling(max_new_tokens=32, ignore_eos=True),
                  batch_size=len(texts), chat=True)
  ours = gen.base_token_ids(texts)  # one left-padded batch
  for row, ids in zip(ours, prompts):
    with torch.no_grad():
      out = hf.generate(torch.tensor([ids]), max_new_tokens=32, min_new_tokens=32,
                        do_sample=False, pad_token_id=gen.codec.pad_id)
    assert row.tolist() == out[0, len(ids):].tolist()


def test_gguf_dequantisation_matches_transformers_gguf_loader(offline_models):
  """transformers reads the GGUF itself (its own dequantisation and q/k un-permutation), from a
  copy without the vocabulary arrays, which it would spend seconds parsing and does not use."""
  pytest.importorskip("accelerate")
  loaded = offline_models("smollm2-135m-instruct")
  with tempfile.TemporaryDirectory() as tmp:
    hf = toys.transformers_gguf_model(loaded.source.path, tmp)
  _, _, prompts = _prompts(loaded, count=2)
  for ids in prompts:
    with torch.no_grad():
      expected = hf(torch.tensor([ids])).logits.float().numpy()[0]
    ours = np.asarray(M.forward(loaded.config, loaded.params, jnp.asarray([ids])))[0]
    np.testing.assert_allclose(ours, expected, atol=5e-4, rtol=1e-4)


# Member tokens recorded at commit 117507c, before the per-architecture modules: members are
# keyed by leaf-path rank, so adding architectures must not move a bit of existing members.
# (Countdown prompts 0 and 1 of seed 7, chat template, greedy, 12 tokens, σ = 2e-3.)
PINNED_MEMBER_TOKENS = {
    "smollm2-135m-instruct/full": [[[33, 1232, 216, 34, 446, 216, 35, 198, 198, 504, 2988, 314], [33, 1232, 216, 34, 446, 216, 35, 198, 41, 35, 446, 216]], [[33, 1232, 216, 34, 446, 216, 35, 198, 198, 2683, 416, 722], [33, 1232, 216, 34, 446, 216, 35, 198, 198, 504, 2988, 314]]],
    "smollm2-135m-instruct/lowrank": [[[33, 1232, 216, 34, 446, 216, 35, 198, 198, 504, 2988, 314], [33, 1232, 216, 34, 446, 216, 35, 198, 41, 35, 446, 216]], [[33, 1232, 216, 34, 446, 216, 35, 198, 198, 504, 2988, 314], [33, 1232, 216, 34, 446, 216, 35, 198, 34, 1232, 216, 41]]],
    "qwen2.5-coder-0.5b-instruct/full": [[[27, 9217, 29, 16, 17, 18, 522, 9217, 29, 2303, 27, 26865], [27, 9217, 29, 18, 488, 220, 17, 284, 220, 20, 522, 9217]], [[1249, 11625, 279, 23606, 17767, 24, 488, 220, 18, 16, 284, 220], [1249, 11625, 279, 23606, 17767, 18, 488, 220, 17, 284, 220, 24]]],
    "qwen2.5-coder-0.5b-instruct/lowrank": [[[27, 26865, 29, 10061, 594, 11625, 419, 3491, 3019, 14319, 29208, 1667], [27, 26865, 29, 10061, 594, 11625, 279, 3491, 3019, 553, 3019, 1667]], [[27, 9217, 29, 320, 24, 488, 220, 18, 16, 8, 608, 220], [27, 9217, 29, 18, 488, 220, 17, 608, 220, 18, 522, 9217]]],
}


@pytest.mark.parametrize("name, noise", [tuple(k.split("/")) for k in PINNED_MEMBER_TOKENS])
def test_member_tokens_are_the_ones_recorded_before_the_architecture_modules(name, noise,
                                                                            offline_models):
  loaded = offline_models(name)
  texts = [countdown.prompt(p) for p in countdown.generate(7, 2)]
  gen = Generator(loaded.config, loaded.params, loaded.tokenizer,
                  generate.Sampling(max_new_tokens=12, ignore_eos=True), batch_size=2,
                  chat=True, perturb=PerturbSpec(stacked=M.STACKED_LEAVES, noise=noise))
  (_, ids), = gen.population_token_ids(np.array([3, 11]), np.array([2e-3, 2e-3], np.float32),
                                       texts, members_per_batch=2)
  assert ids.tolist() == PINNED_MEMBER_TOKENS[f"{name}/{noise}"]


def test_gemma3_270m_gguf_matches_transformers_gguf_loader():
  """The third offline model: our Gemma-3 (sandwich norms, x·(1 + w) with llama.cpp's +1 taken
  off, sliding windows on a local RoPE base) against transformers' own GGUF reading of the same
  file (less its vocabulary arrays: `toys.transformers_gguf_model`), on a prompt longer than
  nothing and with BOS first as the file asks."""
  pytest.importorskip("accelerate")
  loaded = registry.load("gemma-3-270m")
  assert loaded.source.kind == "gguf" and loaded.config.architecture == "gemma3"
  assert loaded.config.layer_types.count("full") == 3 and loaded.config.sliding_window == 512
  ids = loaded.tokenizer("Question: What is 7 * 6?\nAnswer:")["input_ids"]
  assert ids[0] == loaded.tokenizer.bos_token_id
  with tempfile.TemporaryDirectory() as tmp:
    hf = toys.transformers_gguf_model(loaded.source.path, tmp)
  with torch.no_grad():
    expected = hf(torch.tensor([ids])).logits.float().numpy()[0]
  ours = np.asarray(M.forward(loaded.config, loaded.params, jnp.asarray([ids])))[0]
  np.testing.assert_allclose(ours, expected, atol=5e-4, rtol=1e-4)
  assert np.mean(ours.argmax(-1) == expected.argmax(-1)) == 1.0
