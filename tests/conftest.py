"""Two host CPU devices, so sharding over a `population` mesh is tested on any machine."""

import os

import pytest

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")


def pytest_collection_modifyitems(items):
  """Tests marked `two_devices` are skipped on a single accelerator (e.g. one GPU); on CPU they
  always run (a host that did not split fails them loudly)."""
  import jax  # pylint: disable=g-import-not-at-top  (after XLA_FLAGS)
  if jax.default_backend() == "cpu" or jax.device_count() >= 2:
    return
  skip = pytest.mark.skip(reason="needs 2 devices")
  for item in items:
    if "two_devices" in item.keywords:
      item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory):
  """tiny-random-llama's shapes as a safetensors checkpoint, with SmolLM2's tokenizer."""
  torch = pytest.importorskip("torch")
  transformers = pytest.importorskip("transformers")
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


@pytest.fixture(scope="session")
def tiny_randopt_run(tmp_path_factory, tiny_weights):
  """(config, run directory, result) of a finished tiny RandOpt run on `arithmetic`."""
  from thickets_jax.llm import runs  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("tiny_randopt"))
  config = runs.RandOptConfig.tiny(tiny_weights, task="arithmetic", sigmas=(0.2,), test_size=4,
                                   max_new_tokens=12)
  return config, workdir, runs.run_randopt(config, workdir)
