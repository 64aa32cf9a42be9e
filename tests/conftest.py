"""Two host CPU devices, so sharding over a `population` mesh is tested on any machine; XLA's
CPU backend at LLVM optimisation level 0 except for the real-weight tests.

The unit tests' programs are tiny and compiled once or twice each, so compiling dominates
them, and level 0 compiles about 1.8x faster (tests/test_llm_model.py: 219 s -> 124 s); XLA's
older elemental emitters instead of its fusion emitters take another 30% off the compile time
(the 24 programs of a generation test: 13.5-15.6 s -> 9.9-10.7 s). Neither changes a result
(the tests comparing tokens bit for bit with recorded values pass either way), but level 0 runs
elementwise code unoptimised: drawing a member's noise is 5x slower, which
the `integration` tests on the offline models' hundreds of millions of weights would pay. So
`pytest -m integration` (the second half of `launch/local.sh test`) keeps XLA's default level.
"""

import os
import shutil
import tempfile

import pytest


def pytest_configure(config):
  """XLA's flags, before any test module imports JAX, and one persistent compilation cache for
  the whole session: the xdist workers and every command-line test's child process inherit
  its directory, so a program one of them compiled is read, not compiled again, by the others
  (XLA's flags are part of its key)."""
  flags = ["--xla_force_host_platform_device_count=2"]
  if config.getoption("markexpr") != "integration":
    flags += ["--xla_backend_optimization_level=0", "--xla_cpu_use_fusion_emitters=false"]
  os.environ.setdefault("XLA_FLAGS", " ".join(flags))
  if "JAX_COMPILATION_CACHE_DIR" not in os.environ:  # the controller (or a plain run) makes it
    config.compilation_cache = tempfile.mkdtemp(prefix="thickets_jax_xla_cache_")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = config.compilation_cache
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.2")


def pytest_unconfigure(config):
  if getattr(config, "compilation_cache", None):
    shutil.rmtree(config.compilation_cache, ignore_errors=True)


# Session fixtures that take long enough to build that their tests share one xdist worker
# (`--dist loadgroup` in launch/local.sh), which then builds each of them once.
SHARED_FIXTURES = ("tiny_randopt_run",)


@pytest.hookimpl(tryfirst=True)  # before xdist names the groups
def pytest_collection_modifyitems(items):
  """Tests marked `two_devices` are skipped on a single accelerator (e.g. one GPU); on CPU they
  always run (a host that did not split fails them loudly). Tests that use a fixture of
  SHARED_FIXTURES join its xdist group."""
  for item in items:
    for name in SHARED_FIXTURES:
      if name in getattr(item, "fixturenames", ()):
        item.add_marker(pytest.mark.xdist_group(name))
  _skip_two_device_tests(items)


def _skip_two_device_tests(items):
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
  from thickets_jax.llm import randopt  # pylint: disable=g-import-not-at-top
  workdir = str(tmp_path_factory.mktemp("tiny_randopt"))
  config = randopt.RandOptConfig.tiny(tiny_weights, task="arithmetic", sigmas=(0.2,), test_size=4,
                                   max_new_tokens=12, average_probabilities=True)
  return config, workdir, randopt.run_randopt(config, workdir)


@pytest.fixture(scope="session")
def offline_models():
  """`registry.load` memoised for this test process: the offline models' GGUF files take
  seconds to dequantise (Qwen2.5-Coder-0.5B about 27 s) and several tests read the same one.
  A loaded model is immutable (JAX arrays), so sharing it changes nothing a test sees."""
  import inspect  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import registry  # pylint: disable=g-import-not-at-top
  cache, load = {}, registry.load
  signature = inspect.signature(load)

  def cached(*args, **kwargs):
    bound = signature.bind(*args, **kwargs)
    bound.apply_defaults()
    key = tuple(bound.arguments.items())
    if bound.arguments["weights_dir"] is not None:  # a directory may change between tests
      return load(*args, **kwargs)
    if key not in cache:
      cache[key] = load(*args, **kwargs)
    return cache[key]
  return cached
