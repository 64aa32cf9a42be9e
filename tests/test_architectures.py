"""Every architecture against transformers' own classes on tiny random checkpoints: logits,
greedy tokens through the KV cache (left padding, a shared prefix, sequences longer than the
sliding window), perturbed members, factored members and the export round trip."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import flops, population, rng
from thickets_jax.errors import InputError
from thickets_jax.llm import adapter, architectures, assets, chunk, export, generate, model as M
from thickets_jax.llm import factored, registry, tokenizer, torch_twin, weights
from thickets_jax.perturb import PerturbSpec, member_factors, rebuild_member
from thickets_jax.tree import path_name

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB, WINDOW = 96, 5
COMMON = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=48, num_hidden_layers=4,
              num_attention_heads=4, num_key_value_heads=2, head_dim=8, rms_norm_eps=1e-6,
              max_position_embeddings=256)
SLIDING = ["sliding_attention", "full_attention", "sliding_attention", "sliding_attention"]
HF_CONFIGS = {  # each architecture with its options switched on
    "llama": lambda: transformers.LlamaConfig(**COMMON, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16}),
    "qwen2": lambda: transformers.Qwen2Config(**COMMON, tie_word_embeddings=True),
    "qwen3": lambda: transformers.Qwen3Config(**COMMON),
    "olmo2": lambda: transformers.Olmo2Config(**COMMON),
    "olmo3": lambda: transformers.Olmo3Config(**COMMON, sliding_window=WINDOW, rope_scaling={
        "rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 32,
        "attention_factor": 1.2}),
    "gemma3": lambda: transformers.Gemma3TextConfig(
        **COMMON, sliding_window=WINDOW, query_pre_attn_scalar=12, layer_types=SLIDING,
        rope_scaling={"rope_type": "linear", "factor": 2.0}),
}
SAMPLING = generate.Sampling(max_new_tokens=8, ignore_eos=True)
STOP = VOCAB - 1  # never emitted: `ignore_eos`, as transformers' min_new_tokens


@pytest.fixture(scope="module", params=sorted(HF_CONFIGS))
def checkpoint(request, tmp_path_factory):
  """(architecture, transformers model, our config, our params) of a tiny checkpoint whose
  every weight, norms included, is far from its initial value."""
  torch.manual_seed(0)
  hf = transformers.AutoModelForCausalLM.from_config(HF_CONFIGS[request.param]()).eval()
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(0.1 * torch.randn_like(p))
  directory = str(tmp_path_factory.mktemp(request.param))
  hf.save_pretrained(directory)
  tokenizer.from_gguf(assets.gguf_path(assets.SMOLLM2_135M_INSTRUCT),  # any tokenizer will do
                      os.path.join(assets.cache_dir(), "smollm2-135m-instruct-tokenizer")
                      ).save_pretrained(directory)
  loaded = registry.load_checkpoint(directory)  # the architecture from config.json alone
  return request.param, hf, loaded.config, loaded.params


def _hf_greedy(hf, ids, new_tokens=SAMPLING.max_new_tokens):
  with torch.no_grad():
    out = hf.generate(torch.tensor([ids]), max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                      do_sample=False, eos_token_id=STOP, pad_token_id=0)
  return out[0, len(ids):].numpy()


def _prompts():
  """Two left-padded prompts of 12 and 9 tokens, both longer than the window."""
  rows = np.random.default_rng(1).integers(1, STOP, size=(2, 12))
  mask = np.ones((2, 12), bool)
  mask[1, :3] = False
  return rows, mask


def test_logits_match_transformers(checkpoint):
  name, hf, config, params = checkpoint
  assert config.architecture == name
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 17))
  with torch.no_grad():
    expected = hf(torch.tensor(tokens)).logits.numpy()
  ours = np.asarray(M.forward(config, params, jnp.asarray(tokens)))
  difference = np.abs(ours - expected).max()
  print(f"{name}: max |logit difference| {difference:.2e}")
  assert difference < 1e-4
  assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params == sum(
      p.numel() for p in hf.parameters())  # a tied head once
  if config.has_sliding_layers:  # sequences longer than the window: the window matters
    unwindowed = np.asarray(M.forward(config.replace(layer_types=()), params, jnp.asarray(tokens)))
    assert np.abs(unwindowed - expected).max() > 100 * difference


def test_cached_greedy_tokens_match_transformers(checkpoint):
  _, hf, config, params = checkpoint
  rows, mask = _prompts()
  expected = [_hf_greedy(hf, row[m].tolist()) for row, m in zip(rows, mask)]
  run = jax.jit(lambda p, t, m: generate.generate_tokens(
      config, p, t, m, jax.random.key(0), sampling=SAMPLING, stop_ids=(STOP,), pad_id=0))
  np.testing.assert_array_equal(np.asarray(run(params, jnp.asarray(rows), jnp.asarray(mask))),
                                expected)
  # Row 2's first 4 real tokens as a shared prefix: padding now sits between the prefix's
  # slots and the rest, so windows must count positions, not slots.
  kv = generate.prefill_prefix(config, params, jnp.asarray(rows[1, 3:7]))
  rest = np.concatenate([[0, 0], rows[1, 7:]])[None]
  out = generate.generate_tokens(config, params, jnp.asarray(rest), jnp.arange(7)[None] >= 2,
                                 jax.random.key(0), sampling=SAMPLING, stop_ids=(STOP,),
                                 pad_id=0, prefix_kv=kv)
  np.testing.assert_array_equal(np.asarray(out[0]), expected[1])


def test_perturbed_members_match_transformers_on_the_rebuilt_member(checkpoint):
  _, _, config, params = checkpoint
  spec = PerturbSpec(stacked=M.STACKED_LEAVES)
  rows, mask = _prompts()
  run = generate.token_generator(config, SAMPLING, stop_ids=(STOP,), pad_id=0)
  program = chunk.population_program(run, spec, member_axis="map", factored=False)
  seeds, sigmas = np.array([3, 7]), np.array([0.05, 0.05], np.float32)
  (_, ours), = population.iter_population(
      program, params, seeds, sigmas, chunk_size=2,
      args=(rows[None], mask[None], jax.random.key(0)[None], np.zeros((0,), np.int32)))
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = torch_twin.transformers_model(config, rebuild_member(params, int(seed),
                                                                  float(sigma), spec))
    expected = [_hf_greedy(member, row[k].tolist()) for row, k in zip(rows, mask)]
    np.testing.assert_array_equal(ours[m].reshape(2, -1), expected)


def test_a_twin_of_copies_takes_members_and_leaves_our_weights_alone(checkpoint):
  """`contiguous=True` (the peer benchmarks' twin) holds copies in Hugging Face's layout: a
  member loaded into it with `load_state_dict` gives the member's logits, and every leaf of
  ours keeps its values (the default twin's weights are views of them)."""
  _, _, config, params = checkpoint
  before = jax.tree.map(np.array, params)
  hf = torch_twin.transformers_model(config, params, contiguous=True)
  assert all(p.is_contiguous() for p in hf.parameters())
  member = rebuild_member(params, 3, 0.05, PerturbSpec(stacked=M.STACKED_LEAVES))
  hf.load_state_dict(torch_twin.state_dict(config, member))
  jax.tree.map(np.testing.assert_array_equal, jax.tree.map(np.asarray, params), before)
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 9))
  with torch.no_grad():
    expected = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(np.asarray(M.forward(config, member, jnp.asarray(tokens))),
                             expected, atol=1e-4)


def test_factored_members_give_the_logits_of_the_materialised_members(checkpoint):
  """The low-rank path covers every leaf the architecture adds (q/k and post norms)."""
  _, _, config, params = checkpoint
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank", rank=2)
  seeds, sigmas = [3, 11], [0.05, 0.2]
  factors = jax.vmap(lambda s, x: member_factors(params, rng.member_key(s), x, spec))(
      jnp.asarray(seeds), jnp.asarray(sigmas))
  tokens, mask = (jnp.asarray(a) for a in _prompts())
  forward = jax.jit(lambda p, members=None: M.forward(config, p, tokens, mask, members=members))
  logits = forward(params, factored.members_collection(factors))
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    expected = forward(rebuild_member(params, seed, sigma, spec))
    np.testing.assert_allclose(logits[m][mask], expected[mask], atol=2e-5, rtol=1e-4)


def test_export_writes_the_architecture_that_transformers_loads(checkpoint, tmp_path):
  name, _, config, params = checkpoint
  member = rebuild_member(params, 5, 0.05, PerturbSpec(stacked=M.STACKED_LEAVES))
  export.write_model(str(tmp_path), config, member, jnp.float32, pad_token_id=0)
  hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()
  assert weights.hf_config(str(tmp_path), jnp.float32) == config
  rows, mask = _prompts()
  run = jax.jit(lambda p, t, m: generate.generate_tokens(
      config, p, t, m, jax.random.key(0), sampling=SAMPLING, stop_ids=(STOP,), pad_id=0))
  ours = np.asarray(run(member, jnp.asarray(rows), jnp.asarray(mask)))
  np.testing.assert_array_equal(ours, [_hf_greedy(hf, r[k].tolist()) for r, k in zip(rows, mask)])
  assert hf.config.model_type == architectures.get(name).model_types[0]


def test_a_low_rank_member_as_a_peft_adapter_gives_its_logits(checkpoint, tmp_path):
  """Every architecture's factors, vector noise (norms, q/k norms, biases) and tied head."""
  peft = pytest.importorskip("peft")
  _, hf, config, params = checkpoint
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank", rank=2)
  members = [{"seed": 5, "sigma": 0.05}, {"seed": 7, "sigma": 0.03}]
  tensors, fields = adapter.adapter_tensors(config, params, members, spec)
  hf.save_pretrained(str(tmp_path / "base"))
  adapter.write(str(tmp_path), tensors, fields, str(tmp_path / "base"), jnp.float32)
  base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "base"))
  adapted = peft.PeftModel.from_pretrained(base, str(tmp_path)).eval()
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(2, 17))
  with torch.no_grad():
    theirs = adapted(torch.tensor(tokens)).logits.numpy()
  averaged = jax.tree.map(lambda a, b, p: p + ((a - p) + (b - p)) / 2,
                          *(rebuild_member(params, m["seed"], m["sigma"], spec) for m in members),
                          params)
  ours = np.asarray(M.forward(config, averaged, jnp.asarray(tokens)))
  np.testing.assert_allclose(ours, theirs, atol=1e-4)
  untouched = np.asarray(M.forward(config, params, jnp.asarray(tokens)))
  assert np.abs(untouched - theirs).max() > 100 * np.abs(ours - theirs).max()


def test_sliding_windows_cut_the_attention_flops(checkpoint):
  _, _, config, _ = checkpoint
  full = flops.sequence_flops(config.replace(layer_types=()), [40])
  per_layer_pair = 4 * config.num_heads * config.head_dim
  sliding = sum(t == "sliding" for t in config.layer_types)
  saved = sliding * per_layer_pair * (40 * 41 / 2 - (WINDOW * (WINDOW + 1) / 2 + 35 * WINDOW))
  assert full - flops.sequence_flops(config, [40]) == saved


def test_multimodal_gemma3_loads_its_language_model(tmp_path):
  """A `Gemma3ForConditionalGeneration` checkpoint: the text model under its prefix, settings
  under text_config."""
  text = HF_CONFIGS["gemma3"]().to_dict()
  config = transformers.Gemma3Config(
      text_config=text, vision_config=dict(hidden_size=16, intermediate_size=32,
                                           num_hidden_layers=1, num_attention_heads=2,
                                           image_size=28, patch_size=14),
      mm_tokens_per_image=4)
  torch.manual_seed(0)
  hf = transformers.Gemma3ForConditionalGeneration(config).eval()
  hf.save_pretrained(str(tmp_path))
  ours = weights.hf_config(str(tmp_path), jnp.float32)
  assert ours.architecture == "gemma3" and ours.sliding_window == WINDOW
  params = weights.load_safetensors(str(tmp_path), ours)
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, 9))
  with torch.no_grad():
    expected = hf(input_ids=torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(M.forward(ours, params, jnp.asarray(tokens)), expected, atol=1e-4)


@pytest.mark.parametrize("field, value, sentence", [
    ("attention_bias", True, "attention_bias = True .* not implemented for 'olmo3'"),
    ("layer_types", ["chunked_attention"] * 4, "layer type 'chunked_attention' .* not implemented"),
    ("model_type", "mamba", "unsupported model_type 'mamba' in config.json; supported: gemma3,"),
    ("hidden_act", "gelu", "hidden_act = 'gelu' .* not implemented")])
def test_settings_we_do_not_implement_are_refused(tmp_path, field, value, sentence):
  record = {**HF_CONFIGS["olmo3"]().to_dict(), field: value}
  with pytest.raises(InputError, match=sentence):
    architectures.from_hf_config(record)


def test_any_checkpoint_directory_loads_without_a_registry_name(tiny_weights):
  loaded = registry.load_checkpoint(tiny_weights)
  assert loaded.entry.name == registry.CHECKPOINT and loaded.config.architecture == "llama"
  assert loaded.entry.instruct  # SmolLM2's tokenizer has a chat template
  with pytest.raises(InputError, match="needs --weights DIR"):
    registry.entry(registry.CHECKPOINT)
  with open(os.path.join(tiny_weights, "config.json")) as f:
    assert json.load(f)["model_type"] == "llama"


# Model-card sizes in billions (Gemma-3 4B and up: the card's total less the 0.42B vision
# tower, which a text-only load leaves out) and, for Qwen3, the card's non-embedding count.
@pytest.mark.parametrize("name, total, non_embedding", [
    ("qwen3-0.6b", 0.6, 0.44), ("qwen3-1.7b", 1.7, 1.4), ("qwen3-4b", 4.0, 3.6),
    ("qwen3-8b", 8.2, 6.95), ("qwen3-14b", 14.8, 13.2), ("qwen3-32b", 32.8, 31.2),
    ("olmo-3-7b-instruct", 7.3, None), ("olmo-3-1025-7b", 7.3, None),
    ("olmo-2-1124-7b-instruct", 7.3, None), ("deepseek-llm-7b-chat", 6.91, None),
    ("gemma-3-270m", 0.268, None), ("gemma-3-1b-it", 1.0, None), ("gemma-3-4b-it", 3.88, None),
    ("gemma-3-12b-it", 11.77, None), ("gemma-3-27b-it", 27.01, None)])
def test_presets_have_the_published_sizes(name, total, non_embedding):
  config = registry.MODELS.get(name).config
  count = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(M.abstract_params(config)))
  assert count == config.num_params
  digits = len(str(total).split(".")[1])
  assert round(count / 1e9, digits) == total
  if non_embedding is not None:
    embeddings = config.vocab_size * config.hidden_size * (1 if config.tie_embeddings else 2)
    assert round((count - embeddings) / 1e9, len(str(non_embedding).split(".")[1])) == (
        non_embedding)
  assert architectures.from_hf_config(architectures.to_hf(config)) == config  # reads back


def test_olmo3_7b_plans_on_8_simulated_gpus():
  """The paper's Figure-1 model plans without weights (`experiments.randopt --model
  olmo-3-7b-instruct --dry_run` also compiles it; docs/scale.md)."""
  from thickets_jax.llm import plan, randopt  # pylint: disable=g-import-not-at-top
  config = randopt.RandOptConfig(model="olmo-3-7b-instruct", task="gsm8k", dry_run=True).planned(
      plan.Machine.hypothetical(8, plan.parse_bytes("80GB")))
  assert config.plan["fits"] and config.dtype == "bfloat16" and config.model_parallel == 1
  assert config.plan["model"] == "olmo-3-7b-instruct" and config.max_new_tokens == 1024


def test_runs_record_the_leaves_that_key_their_members_and_refuse_others(tmp_path,
                                                                        tiny_randopt_run):
  from thickets_jax import perturb  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import randopt  # pylint: disable=g-import-not-at-top
  config, workdir, _ = tiny_randopt_run
  saved = randopt.load_topk(workdir)
  loaded = config.planned().load(config.model)
  assert saved["keyed_leaves"] == perturb.keyed_leaves(loaded.params)
  assert saved["keyed_leaves"][:2] == ["embed/embedding", "final_norm/scale"]
  randopt.check_rebuildable(saved, loaded, workdir)
  renamed = {**saved, "keyed_leaves": [n.replace("mlp_norm", "ffn_norm")
                                       for n in saved["keyed_leaves"]]}
  with pytest.raises(InputError, match="drew its members' noise over other parameter names "
                                       r"than this model has \(layers/ffn_norm/scale"):
    randopt.check_rebuildable(renamed, loaded, workdir)


@pytest.mark.two_devices
def test_model_parallel_params_give_the_same_logits(checkpoint):
  """The sharding table covers every architecture's leaves (q/k and post norms replicated)."""
  from thickets_jax.llm import sharding  # pylint: disable=g-import-not-at-top
  _, _, config, params = checkpoint
  mesh = sharding.make_mesh(model_parallel=2, devices=jax.devices()[:2])
  sharded = jax.device_put(params, sharding.param_shardings(config, mesh))
  tokens = jnp.asarray(np.random.default_rng(0).integers(0, VOCAB, size=(2, 9)))
  forward = jax.jit(lambda p: M.forward(config, p, tokens))
  np.testing.assert_allclose(forward(sharded), forward(params), atol=2e-5, rtol=1e-5)


def _write_gguf(path: str, arch: str, metadata: dict, tensors: list) -> None:
  """A GGUF file of `arch`: `metadata` by `GGUFWriter.add_<key>`, `tensors` as (name, array,
  raw quantisation type or None for a plain array)."""
  gguf = pytest.importorskip("gguf")
  writer = gguf.GGUFWriter(path, arch)
  for key, value in metadata.items():
    getattr(writer, f"add_{key}")(value)
  for name, array, raw_dtype in tensors:
    writer.add_tensor(name, array, raw_dtype=raw_dtype)
  writer.write_header_to_file()
  writer.write_kv_data_to_file()
  writer.write_tensors_to_file()
  writer.close()


def test_qwen3_gguf_matches_transformers_gguf_loader(tmp_path):
  """A float32 GGUF written with the `gguf` package from a tiny Qwen3 under our GGUF names,
  read by our loader and by transformers' own GGUF loader."""
  pytest.importorskip("gguf")
  pytest.importorskip("accelerate")
  torch.manual_seed(0)
  hf = transformers.Qwen3ForCausalLM(transformers.Qwen3Config(  # head_dim: its GGUF default
      vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
      num_attention_heads=2, num_key_value_heads=1, head_dim=128, rms_norm_eps=1e-6,
      max_position_embeddings=256, rope_theta=1e6, tie_word_embeddings=False)).eval()
  with torch.no_grad():
    for p in hf.parameters():
      p.add_(0.1 * torch.randn_like(p))
  state = {name: tensor.numpy() for name, tensor in hf.state_dict().items()}
  path = str(tmp_path / "model.gguf")
  arch = architectures.get("qwen3")
  names = weights.hf_names(registry.MODELS.get("qwen3-0.6b").config)
  _write_gguf(path, "qwen3", dict(
      block_count=2, context_length=256, embedding_length=64, feed_forward_length=96,
      head_count=2, head_count_kv=1, key_length=128, value_length=128, rope_freq_base=1e6,
      layer_norm_rms_eps=1e-6, vocab_size=VOCAB),
      [(arch.gguf_names[leaf].format(i=i), state[hf_name.format(i=i)], None)
       for leaf, hf_name in names.items() for i in (range(2) if leaf.startswith("layers/")
                                                    else [None])])
  config, params = weights.load_gguf(path, jnp.float32)
  theirs = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path), gguf_file="model.gguf",
                                                             dtype=torch.float32).eval()
  tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, 11))
  with torch.no_grad():
    expected = theirs(torch.tensor(tokens)).logits.numpy()
  assert config.architecture == "qwen3" and config.head_dim == 128
  np.testing.assert_allclose(M.forward(config, params, jnp.asarray(tokens)), expected, atol=1e-4)


def test_a_gguf_dequantised_in_blocks_of_rows_equals_it_dequantised_whole(tmp_path, monkeypatch):
  """Q8_0 Llama tensors (whose q/k rows llama.cpp interleaves per head) read a few rows at a
  time, blocks that cut tensors unevenly and hold whole heads, give the leaves of one block."""
  gguf = pytest.importorskip("gguf")
  Q8_0 = gguf.GGMLQuantizationType.Q8_0  # pylint: disable=invalid-name
  c = registry.MODELS.get("tiny-random-llama").config
  draw = np.random.default_rng(0)
  tensors = []
  for key_path, spec in jax.tree_util.tree_flatten_with_path(M.abstract_params(c))[0]:
    leaf = path_name(key_path)
    name = architectures.get("llama").gguf_names[leaf]
    shape = spec.shape[1:] if leaf.startswith("layers/") else spec.shape
    shape = shape[::-1] if weights.transposed(leaf) else shape
    for i in range(c.num_layers) if leaf.startswith("layers/") else [None]:
      tensor = draw.standard_normal(shape).astype(np.float32)
      if len(shape) == 1:  # norms stay float32, as in llama.cpp's files
        tensors.append((name.format(i=i), tensor, None))
      else:
        tensors.append((name.format(i=i), gguf.quants.quantize(tensor, Q8_0), Q8_0))
  path = str(tmp_path / "model.gguf")
  _write_gguf(path, "llama", dict(
      block_count=c.num_layers, context_length=256, embedding_length=c.hidden_size,
      feed_forward_length=c.intermediate_size, head_count=c.num_heads,
      head_count_kv=c.num_kv_heads, rope_freq_base=c.rope_theta,
      layer_norm_rms_eps=c.rms_norm_eps, vocab_size=c.vocab_size), tensors)
  _, whole = weights.load_gguf(path, jnp.float32)
  for elements in (3 * c.hidden_size, 2 * c.head_dim * c.hidden_size + 5):
    monkeypatch.setattr(weights, "BLOCK_ELEMENTS", elements)
    _, blocks = weights.load_gguf(path, jnp.float32)
    jax.tree.map(np.testing.assert_array_equal, blocks, whole)
