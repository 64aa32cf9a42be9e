"""The Flax transformer on tiny random checkpoints: HF parity, shapes, KV-cache generation."""

import dataclasses
import json
import os

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from thickets_jax import population, rng
from thickets_jax.errors import InputError
from thickets_jax.llm import architectures, assets, chunk, factored, generate, model as M, registry
from thickets_jax.llm import weights
from thickets_jax.llm.generator import Generator
from thickets_jax.perturb import PerturbSpec, member_factors, rebuild_member

import toys

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-6,
            max_position_embeddings=128)


def _hf_model(kind: str, tied: bool):
  torch.manual_seed(0)
  if kind == "qwen2":
    config = transformers.Qwen2Config(**TINY, rope_theta=1e6, tie_word_embeddings=tied)
    model = transformers.Qwen2ForCausalLM(config)
  else:
    config = transformers.LlamaConfig(**TINY, rope_theta=1e4, tie_word_embeddings=tied)
    model = transformers.LlamaForCausalLM(config)
  with torch.no_grad():  # biases are zero at init; make them matter
    for name, p in model.named_parameters():
      if name.endswith("bias") or "norm" in name:
        p.add_(0.1 * torch.randn_like(p))
  return model.eval()


def _checkpoint(tmp_path, kind, tied, shard=False):
  hf = _hf_model(kind, tied)
  directory = str(tmp_path / f"{kind}-{'tied' if tied else 'untied'}")
  hf.save_pretrained(directory, safe_serialization=True, max_shard_size="20KB" if shard else "5GB")
  return hf, directory


@pytest.mark.parametrize("kind, tied, shard", [("qwen2", True, False), ("qwen2", False, True),
                                               ("llama", False, False), ("llama", True, True)])
def test_safetensors_checkpoint_matches_hugging_face(tmp_path, kind, tied, shard):
  hf, directory = _checkpoint(tmp_path, kind, tied, shard)
  assert os.path.exists(os.path.join(directory, "model.safetensors.index.json")) == shard
  config = weights.hf_config(directory, jnp.float32)
  assert config.qkv_bias == (kind == "qwen2") and config.tie_embeddings == tied
  params = weights.load_safetensors(directory, config)
  tokens = np.random.default_rng(0).integers(0, TINY["vocab_size"], size=(3, 11))
  with torch.no_grad():
    expected = hf(torch.tensor(tokens)).logits.numpy()
  np.testing.assert_allclose(M.forward(config, params, jnp.asarray(tokens)), expected,
                             atol=2e-5, rtol=1e-4)
  assert sum(x.size for x in jax.tree.leaves(params)) == config.num_params == sum(
      p.numel() for p in hf.parameters())


def test_bfloat16_parameters_load_and_run(tmp_path):
  _, directory = _checkpoint(tmp_path, "qwen2", True)
  config = weights.hf_config(directory, jnp.bfloat16)
  params = weights.load_safetensors(directory, config)
  dtypes = {weights.path_name(p): x.dtype for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
  assert dtypes["layers/attn/q/kernel"] == dtypes["embed/embedding"] == jnp.bfloat16
  assert dtypes["layers/attn/q/bias"] == dtypes["layers/mlp_norm/scale"] == jnp.float32
  assert jax.tree.map(lambda x: x.dtype, params) == jax.tree.map(lambda x: x.dtype,
                                                                 M.abstract_params(config))
  logits = M.forward(config, params, jnp.ones((1, 5), jnp.int32))
  assert logits.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(logits)))


def test_bfloat16_models_keep_the_noise_of_norms_and_biases(tmp_path):
  """In bf16 storage σ = 5e-4 on a scale near 1 rounds back to the base in every entry; stored
  and applied in float32, every entry moves and the logits move with it."""
  _, directory = _checkpoint(tmp_path, "qwen2", True)
  config = weights.hf_config(directory, jnp.bfloat16)
  params = weights.load_safetensors(directory, config)
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, include=r"norm|bias")
  member = rebuild_member(params, 5, 5e-4, spec)
  for name in ("mlp_norm", "attn_norm"):
    moved = np.asarray(member["layers"][name]["scale"] != params["layers"][name]["scale"])
    assert moved.mean() > 0.99
  lost = np.asarray(params["layers"]["mlp_norm"]["scale"]).astype(jnp.bfloat16)
  assert np.mean(np.asarray(rebuild_member({"s": jnp.asarray(lost)}, 5, 5e-4, PerturbSpec())["s"]
                            == lost)) > 0.9  # what bf16 storage would have kept
  tokens = jnp.asarray(np.random.default_rng(2).integers(0, TINY["vocab_size"], size=(2, 9)))
  assert not np.array_equal(M.forward(config, member, tokens), M.forward(config, params, tokens))


def test_left_padding_does_not_change_logits(tmp_path):
  _, directory = _checkpoint(tmp_path, "llama", False)
  config = weights.hf_config(directory, jnp.float32)
  params = weights.load_safetensors(directory, config)
  tokens = jnp.asarray([[5, 6, 7, 8]])
  padded = jnp.asarray([[0, 0, 5, 6, 7, 8]])
  mask = jnp.asarray([[False, False, True, True, True, True]])
  np.testing.assert_allclose(M.forward(config, params, padded, mask)[:, 2:],
                             M.forward(config, params, tokens), atol=1e-5)


def _generator(tmp_path, sampling, **kwargs):
  _, directory = _checkpoint(tmp_path, "qwen2", False)
  config = weights.hf_config(directory, jnp.float32)
  params = weights.load_safetensors(directory, config)
  return Generator(config, params, toys.CharTokenizer(), sampling, batch_size=4, chat=False,
                   **kwargs)


def _greedy_reference(config, params, prompt_ids, n):
  """No cache: re-run the whole (left-padded, fixed-length) sequence for every new token."""
  total = len(prompt_ids) + n
  run = jax.jit(lambda ids, mask: M.forward(config, params, ids, mask)[0, -1])
  ids = list(prompt_ids)
  for _ in range(n):
    pad = total - len(ids)
    logits = run(jnp.asarray([[0] * pad + ids]), jnp.asarray([[False] * pad + [True] * len(ids)]))
    ids.append(int(jnp.argmax(logits)))
  return ids[len(prompt_ids):]


@pytest.mark.parametrize("layer_loop", generate.LAYER_LOOPS)
def test_cached_greedy_generation_equals_recomputation(tmp_path, layer_loop):
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=12, ignore_eos=True),
                   layer_loop=layer_loop)
  prompts = ["hello", "a much longer prompt", "xy"]
  out = gen.base_token_ids(prompts)
  for row, text in zip(out, prompts):
    expected = _greedy_reference(gen.config, gen.params, gen.codec.tokenizer(text)["input_ids"], 12)
    assert row.tolist() == expected


def test_generation_compiles_once_per_bucket(tmp_path):
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=4))
  traced = chex.assert_max_traces(generate.generate_batches, n=1)
  run = jax.jit(lambda params, prompts, masks, keys: traced(
      gen.config, params, prompts, masks, keys, sampling=gen.sampling,
      stop_ids=gen.codec.stop_ids, pad_id=gen.codec.pad_id))
  keys = generate.prompt_keys(gen.sampling, None, 1, 4)
  for prompts in (["abc"], ["a longer one", "b"], ["x" * 16, "y", "z", "w"]):  # one 16-token bucket
    tokens, mask = gen.codec.encode(prompts)
    run(gen.params, tokens, mask, keys)


def test_perturbed_member_generation_equals_explicitly_perturbed_params(tmp_path):
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=10, ignore_eos=True))
  prompts = ["one prompt", "another"]
  seeds, sigmas = np.array([5, 9]), np.array([0.05, 0.2])
  members = [rebuild_member(gen.params, int(seed), float(sigma), gen.perturb)
             for seed, sigma in zip(seeds, sigmas)]
  explicit = [gen.base_token_ids(prompts, params=member) for member in members]
  # Each member axis and each layer loop once; "map" with "scan" (the defaults) is what every
  # other population test here runs.
  for axis, layer_loop in (("vmap", "scan"), ("map", "unrolled")):
    gen_axis = Generator(gen.config, gen.params, gen.codec.tokenizer, gen.sampling,
                         batch_size=4, chat=False, member_axis=axis,
                         layer_loop=layer_loop)
    (part, ids), = gen_axis.population_token_ids(seeds, sigmas, prompts, members_per_batch=2)
    assert part == slice(0, 2)
    for m in range(2):
      np.testing.assert_array_equal(ids[m], explicit[m])
  assert not np.array_equal(explicit[1], gen.base_token_ids(prompts))  # sigma 0.2 changes it


LOW_RANK = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank", rank=3)


@pytest.mark.parametrize("kind, tied, spec", [
    ("qwen2", False, LOW_RANK),
    ("llama", True, dataclasses.replace(LOW_RANK, relative=True, rank=1)),
    ("qwen2", True, dataclasses.replace(LOW_RANK, vector_noise=False, include="attn|embed"))])
def test_factored_members_give_the_logits_of_the_materialised_members(tmp_path, kind, tied, spec):
  _, directory = _checkpoint(tmp_path, kind, tied)
  config = weights.hf_config(directory, jnp.float32)
  params = weights.load_safetensors(directory, config)
  seeds, sigmas = [3, 11], [0.05, 0.2]
  factors = jax.vmap(lambda seed, sigma: member_factors(params, rng.member_key(seed), sigma, spec))(
      jnp.asarray(seeds), jnp.asarray(sigmas))
  tokens = jnp.asarray(np.random.default_rng(0).integers(2, TINY["vocab_size"], size=(3, 9)))
  mask = jnp.arange(9)[None, :] >= jnp.asarray([[0], [2], [5]])  # left padding
  logits = M.forward(config, params, tokens, mask, members=factored.members_collection(factors))
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = rebuild_member(params, seed, sigma, spec)
    expected = M.forward(config, member, tokens, mask)
    np.testing.assert_allclose(logits[m][mask], expected[mask], atol=2e-5, rtol=1e-4)
  assert float(jnp.abs(logits[0] - logits[1])[mask].max()) > 1e-2  # members differ


def _shared_prefix_prompts():
  return ["Answer in one word, please: " + q for q in ("abc", "a longer question", "xy")]


@pytest.mark.parametrize("layer_loop", generate.LAYER_LOOPS)
def test_factored_generation_equals_the_materialised_members(tmp_path, layer_loop):
  sampling = generate.Sampling(max_new_tokens=10, ignore_eos=True)
  factored = _generator(tmp_path, sampling, perturb=LOW_RANK, layer_loop=layer_loop)
  assert factored.factored
  materialised = Generator(factored.config, factored.params, factored.codec.tokenizer,
                           sampling, batch_size=2, chat=False, perturb=LOW_RANK,
                           factored=False, shared_prefix=False)
  prompts = _shared_prefix_prompts()
  seeds, sigmas = np.array([5, 9, 4]), np.array([0.05, 0.2, 0.1])
  ours = np.concatenate([ids for _, ids in factored.population_token_ids(
      seeds, sigmas, prompts, members_per_batch=2)])  # a padded last chunk
  theirs = np.concatenate([ids for _, ids in materialised.population_token_ids(
      seeds, sigmas, prompts, members_per_batch=1)])
  np.testing.assert_array_equal(ours, theirs)
  assert not np.array_equal(ours[1], factored.base_token_ids(prompts))  # sigma 0.2 changes it


def test_shared_prefix_prefill_gives_the_same_tokens(tmp_path):
  sampling = generate.Sampling(max_new_tokens=10, ignore_eos=True)
  shared = _generator(tmp_path, sampling)
  plain = _generator(tmp_path, sampling, shared_prefix=False)
  prompts = _shared_prefix_prompts()
  prefix, tokens, mask = shared.codec.encode_shared_prefix(prompts)
  assert len(prefix) == 24  # 28 shared characters, cut to a multiple of 8
  assert shared.codec.tokenizer(prompts[2])["input_ids"] == prefix.tolist() + tokens[0, 2][mask[0, 2]].tolist()
  np.testing.assert_array_equal(shared.base_token_ids(prompts), plain.base_token_ids(prompts))
  for row, text in zip(shared.base_token_ids(prompts), prompts):
    expected = _greedy_reference(shared.config, shared.params, shared.codec.tokenizer(text)["input_ids"], 10)
    assert row.tolist() == expected
  seeds, sigmas = np.array([5, 9]), np.array([0.05, 0.2])
  members = lambda gen: next(gen.population_token_ids(seeds, sigmas, prompts, members_per_batch=2))[1]
  np.testing.assert_array_equal(members(shared), members(plain))
  assert len(shared.codec.encode_shared_prefix(["same", "same"])[0]) == 0  # < 8 shared tokens


def test_the_shared_prefix_is_kept_once_not_in_every_rows_cache():
  """A 512-token prefix before 16 rows: the compiled program's temporaries stay below what one
  copy of the prefix's keys and values per row would take."""
  config = dataclasses.replace(toys.TINY_CONFIG, head_dim=64)
  rows, shared, p = 16, 512, 8
  sampling = generate.Sampling(max_new_tokens=8, ignore_eos=True)
  abstract = lambda shape, dtype: jax.ShapeDtypeStruct(shape, dtype)
  prefix_kv = (abstract((config.num_layers, 1, config.num_kv_heads, shared, config.head_dim),
                        jnp.float32),) * 2
  program = jax.jit(lambda params, tokens, mask, keys, kv: generate.generate_tokens(
      config, params, tokens, mask, keys, sampling=sampling, stop_ids=(1,), pad_id=0,
      prefix_kv=kv))
  memory = program.lower(M.abstract_params(config), abstract((rows, p), jnp.int32),
                         abstract((rows, p), bool), jax.eval_shape(lambda: jax.random.split(
                             jax.random.key(0), rows)), prefix_kv).compile().memory_analysis()
  per_row_copies = 2 * config.num_layers * rows * config.num_kv_heads * shared * config.head_dim * 4
  assert memory.temp_size_in_bytes < per_row_copies / 2


def test_sampling_is_keyed_and_tiny_top_p_is_greedy(tmp_path):
  greedy = _generator(tmp_path, generate.Sampling(max_new_tokens=8, ignore_eos=True))
  hot = _generator(tmp_path, generate.Sampling(max_new_tokens=8, temperature=1.5, ignore_eos=True))
  nucleus = _generator(tmp_path, generate.Sampling(max_new_tokens=8, temperature=1.5, top_p=1e-6,
                                                   ignore_eos=True))
  prompts = ["abc", "defg"]
  key = jax.random.key(3)
  np.testing.assert_array_equal(hot.base_token_ids(prompts, key), hot.base_token_ids(prompts, key))
  assert not np.array_equal(hot.base_token_ids(prompts, key),
                            hot.base_token_ids(prompts, jax.random.key(4)))
  np.testing.assert_array_equal(nucleus.base_token_ids(prompts, key), greedy.base_token_ids(prompts))
  with pytest.raises(InputError, match="temperature > 0 needs an explicit PRNG key"):
    hot.base_token_ids(prompts)


def test_a_language_model_spec_must_stack_its_layers(tmp_path):
  with pytest.raises(ValueError, match="needs stacked="):
    _generator(tmp_path, generate.Sampling(max_new_tokens=2), perturb=PerturbSpec())


def test_stop_tokens_and_stop_strings(tmp_path):
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=6), stop_strings=("C",))
  assert gen.codec.decode(np.array([2, 3, 1, 4, 5])) == ""  # "CD", cut at the stop string "C"
  assert gen.codec.decode(np.array([3, 4, 1, 5])) == "DE"  # id 1 (EOS) ends the text
  ids = gen.base_token_ids(["abc", "xyz"])
  for row, generated in zip(ids, generate.completion_mask(ids, gen.codec.stop_ids)):
    stops = np.flatnonzero(np.isin(row, gen.codec.stop_ids))
    if stops.size:  # the stop token is emitted, then padding
      assert np.all(row[stops[0] + 1:] == gen.codec.pad_id)
      assert generated.sum() == stops[0] + 1
    else:
      assert generated.all()
  np.testing.assert_array_equal(
      generate.completion_mask(np.array([[5, 1, 0, 0], [5, 6, 7, 8], [1, 1, 1, 1]]), (1,)),
      [[True, True, False, False], [True] * 4, [True, False, False, False]])


@pytest.mark.parametrize("name, published", [
    ("llama-3.1-8b-instruct", 8_030_261_248), ("llama-3.2-1b-instruct", 1_235_814_400),
    ("llama-3.2-3b-instruct", 3_212_749_824)])
def test_llama3_presets_have_the_published_sizes_and_rope(name, published):
  config = registry.MODELS.get(name).config
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(M.abstract_params(config))) == (
      published) == config.num_params
  assert dict(config.rope_scaling)["rope_type"] == "llama3"
  hf = transformers.LlamaConfig(**{k: v for k, v in architectures.to_hf(config).items() if k != "model_type"})
  from thickets_jax.llm.architectures import from_hf_config  # pylint: disable=g-import-not-at-top
  assert from_hf_config(hf.to_dict()) == config  # the HF config reads back alike


# Exact totals of the published Qwen2.5 safetensors checkpoints (tied embeddings counted once).
@pytest.mark.parametrize("size, published", [
    ("0.5b", 494_032_768), ("1.5b", 1_543_714_304), ("3b", 3_085_938_688),
    ("7b", 7_615_616_512), ("14b", 14_770_033_664), ("32b", 32_763_876_352)])
def test_full_size_shapes_without_memory(size, published):
  entry = registry.MODELS.get(f"qwen2.5-{size}-instruct")
  abstract = M.abstract_params(entry.config)
  assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(abstract)) == published
  assert entry.config.num_params == published
  assert abstract["layers"]["attn"]["q"]["kernel"].shape == (
      entry.config.num_layers, entry.config.hidden_size, entry.config.hidden_size)


def test_missing_and_unknown_models_are_one_sentence(tmp_path, monkeypatch):
  monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
  with pytest.raises(InputError, match=r"no weights for qwen2.5-7b: .*huggingface-cli download Qwen/Qwen2.5-7B"):
    registry.find_weights(registry.MODELS.get("qwen2.5-7b"))
  with pytest.raises(InputError, match="unknown model 'qwen9'"):
    registry.load("qwen9")
  with pytest.raises(InputError, match="not a Hugging Face checkpoint directory"):
    registry.find_weights(registry.MODELS.get("qwen2.5-7b"), str(tmp_path))


def test_corrupt_files_are_named(tmp_path):
  bad = tmp_path / "model.gguf"
  bad.write_bytes(b"GGUF" + b"\0" * 64)
  with pytest.raises(InputError, match=r"model.gguf is not a readable GGUF file"):
    weights.load_gguf(str(bad), jnp.float32)
  asset = assets.GgufAsset((("x", "1", "y"),), sha256="0" * 64, file_name="x.gguf")
  with pytest.raises(InputError, match=r"model.gguf has sha256 .* the file is corrupt"):
    assets._check(str(bad), asset)  # pylint: disable=protected-access
  directory = tmp_path / "ckpt"
  directory.mkdir()
  (directory / "config.json").write_text("{not json")
  with pytest.raises(InputError, match=r"config.json is not valid JSON"):
    weights.hf_config(str(directory), jnp.float32)


def test_checkpoint_with_wrong_shapes_is_refused(tmp_path):
  _, directory = _checkpoint(tmp_path, "qwen2", True)
  with open(os.path.join(directory, "config.json")) as f:
    hf = json.load(f)
  hf["intermediate_size"] = 48
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(hf, f)
  with pytest.raises(InputError, match="has shape"):
    weights.load_safetensors(directory, weights.hf_config(directory, jnp.float32))


@pytest.mark.two_devices
def test_model_parallel_params_give_the_same_logits_and_members(tmp_path):
  from thickets_jax.llm import sharding  # pylint: disable=g-import-not-at-top
  _, directory = _checkpoint(tmp_path, "qwen2", False)
  config = weights.hf_config(directory, jnp.float32)
  mesh = sharding.make_mesh(model_parallel=2, devices=jax.devices()[:2])
  sharded = weights.load_safetensors(directory, config, sharding.leaf_sharding(mesh))
  plain = weights.load_safetensors(directory, config)
  q = sharded["layers"]["attn"]["q"]["kernel"]
  assert q.sharding.spec == jax.sharding.PartitionSpec(None, None, "model")
  assert q.addressable_shards[0].data.shape == (3, 32, 16)
  tokens = jnp.asarray(np.random.default_rng(1).integers(0, 96, size=(2, 7)))
  np.testing.assert_allclose(M.forward(config, sharded, tokens), M.forward(config, plain, tokens),
                             atol=2e-5)
  spec = PerturbSpec(stacked=M.STACKED_LEAVES)
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, rebuild_member(sharded, 7, 0.01, spec)),
                              jax.tree.map(np.asarray, rebuild_member(plain, 7, 0.01, spec)))


@pytest.mark.two_devices
def test_sharding_table_covers_full_size_models():
  from thickets_jax.llm import sharding  # pylint: disable=g-import-not-at-top
  mesh = sharding.make_mesh(model_parallel=2, devices=jax.devices()[:2])
  shardings = sharding.param_shardings(registry.MODELS.get("qwen2.5-7b").config, mesh)
  assert shardings["layers"]["mlp"]["down"]["kernel"].spec == jax.sharding.PartitionSpec(None, "model", None)
  assert shardings["lm_head"]["kernel"].spec == jax.sharding.PartitionSpec(None, "model")
  assert shardings["final_norm"]["scale"].spec == jax.sharding.PartitionSpec()
  with pytest.raises(InputError, match="must divide"):
    sharding.make_mesh(model_parallel=3, devices=jax.devices()[:2])


@pytest.mark.two_devices
def test_population_generation_on_a_model_parallel_mesh_equals_one_device(tmp_path):
  from thickets_jax.llm import sharding  # pylint: disable=g-import-not-at-top
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=6, ignore_eos=True))
  mesh = sharding.make_mesh(model_parallel=2, devices=jax.devices()[:2])
  directory = str(tmp_path / "qwen2-untied")
  sharded = weights.load_safetensors(directory, gen.config, sharding.leaf_sharding(mesh))
  on_mesh = Generator(gen.config, sharded, gen.codec.tokenizer, gen.sampling, batch_size=4,
                      chat=False, member_axis="vmap")
  seeds, sigmas = np.array([3, 4]), np.array([0.1, 0.1])
  prompts = ["abc", "hello there"]
  (_, expected), = gen.population_token_ids(seeds, sigmas, prompts, members_per_batch=2)
  (_, got), = on_mesh.population_token_ids(seeds, sigmas, prompts, members_per_batch=2, mesh=mesh)
  np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("kind, rope", [
    ("llama", {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
    ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}),
    ("qwen2", {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 32,
               "beta_fast": 16, "mscale": 1.2, "mscale_all_dim": 0.8}),
    ("llama", {"rope_type": "linear", "factor": 2.0})])
def test_rope_scalings_match_hugging_face(tmp_path, kind, rope):
  """Checkpoints written by transformers with each RoPE scaling: the same logits over 40
  positions, and the same greedy tokens through the KV cache."""
  cls = transformers.LlamaConfig if kind == "llama" else transformers.Qwen2Config
  model_cls = transformers.LlamaForCausalLM if kind == "llama" else transformers.Qwen2ForCausalLM
  torch.manual_seed(0)
  hf = model_cls(cls(**TINY, rope_theta=1e4, rope_scaling=rope)).eval()
  directory = str(tmp_path / kind)
  hf.save_pretrained(directory)
  config = weights.hf_config(directory, jnp.float32)
  assert dict(config.rope_scaling)["rope_type"] == rope["rope_type"]
  params = weights.load_safetensors(directory, config)
  tokens = np.random.default_rng(3).integers(0, TINY["vocab_size"], size=(2, 40))
  with torch.no_grad():
    expected = hf(torch.tensor(tokens)).logits.numpy()
    greedy = hf.generate(torch.tensor(tokens[:1, :12]), max_new_tokens=8, do_sample=False,
                         min_new_tokens=8)[0, 12:].numpy()
  ours = M.forward(config, params, jnp.asarray(tokens))
  np.testing.assert_allclose(ours, expected, atol=2e-5, rtol=1e-4)
  plain = M.forward(config.replace(rope_scaling=()), params, jnp.asarray(tokens))
  assert np.abs(plain - expected).max() > 20 * np.abs(ours - expected).max()  # it matters
  run = jax.jit(lambda p, t, m: generate.generate_tokens(
      config, p, t, m, jax.random.key(0), sampling=generate.Sampling(8, ignore_eos=True),
      stop_ids=(TINY["vocab_size"] - 1,), pad_id=0))
  ids = run(params, jnp.asarray(tokens[:1, :12], jnp.int32), jnp.ones((1, 12), bool))
  np.testing.assert_array_equal(np.asarray(ids[0]), greedy)


@pytest.mark.parametrize("rope", [{"rope_type": "dynamic", "factor": 2.0},
                                  {"type": "longrope", "factor": 2.0}])
def test_rope_scalings_we_do_not_implement_are_refused(tmp_path, rope):
  from thickets_jax.llm.architectures import from_hf_config  # pylint: disable=g-import-not-at-top
  directory = str(tmp_path / "llama")
  transformers.LlamaForCausalLM(transformers.LlamaConfig(**TINY)).save_pretrained(directory)
  with open(os.path.join(directory, "config.json")) as f:
    hf = json.load(f)
  hf.pop("rope_parameters", None)
  name = rope.get("rope_type", rope.get("type"))
  with pytest.raises(InputError, match=f"rope_type '{name}' .* not implemented"):
    from_hf_config({**hf, "rope_scaling": rope})
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({**hf, "rope_scaling": rope}, f)
  with pytest.raises(InputError, match="config.json: rope_type .* not implemented"):
    weights.hf_config(directory, jnp.float32)


@pytest.mark.two_devices
def test_sharded_loading_reads_each_shard_once_and_only_its_own(tmp_path):
  from thickets_jax.llm import sharding  # pylint: disable=g-import-not-at-top
  _, directory = _checkpoint(tmp_path, "qwen2", False, shard=True)
  config = weights.hf_config(directory, jnp.float32)
  files = weights._safetensors_files(directory)  # pylint: disable=protected-access
  inner = weights._slice_reader(directory, files)  # pylint: disable=protected-access
  requests = []
  read = lambda name, index, shape: requests.append((name, index)) or inner(name, index, shape)
  mesh = sharding.make_mesh(model_parallel=2, devices=jax.devices()[:2])
  sharded = weights.build_params_sharded(config, weights.hf_names(config), read,
                                         sharding.leaf_sharding(mesh))
  q = [index for name, index in requests if name == "model.layers.1.self_attn.q_proj.weight"]
  assert q == [(slice(0, 16), slice(None)), (slice(16, 32), slice(None))]  # HF rows = out
  norm = [index for name, index in requests if name == "model.layers.1.input_layernorm.weight"]
  assert len(norm) == 1  # replicated: read once, not once per device
  chex.assert_trees_all_equal(jax.tree.map(np.asarray, sharded),
                              jax.tree.map(np.asarray, weights.load_safetensors(directory, config)))
  hf = json.load(open(os.path.join(directory, "config.json")))
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump({**hf, "intermediate_size": 48}, f)
  with pytest.raises(InputError, match="has shape"):
    weights.load_safetensors(directory, weights.hf_config(directory, jnp.float32),
                             sharding.leaf_sharding(mesh))


def test_two_processes_each_read_their_half_and_gather_nothing(tmp_path):
  """A model-parallel mesh over 2 processes (1 CPU device each): each reads only its shards,
  no cross-process gather runs while loading, and the logits equal one process's."""
  import socket  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  hf, directory = _checkpoint(tmp_path, "qwen2", False)
  with socket.socket() as s:
    s.bind(("localhost", 0))
    coordinator = f"localhost:{s.getsockname()[1]}"
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1"}
  workers = [subprocess.Popen([sys.executable, os.path.join(root, "tests", "workers",
                                                            "sharded_load.py"),
                               directory, coordinator, str(i)], cwd=root, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in (0, 1)]
  outs = []
  for worker in workers:
    stdout, stderr = worker.communicate(timeout=300)
    assert worker.returncode == 0, stderr[-3000:]
    outs.append(json.loads(stdout.strip().splitlines()[-1]))
  total = sum(p.numel() for p in hf.parameters()) * 4
  norms = sum(p.numel() for n, p in hf.named_parameters() if "norm" in n) * 4
  for out in outs:  # its half of every matrix and bias, and the replicated norm scales whole
    assert out["bytes"] == (total - norms) // 2 + norms
  with torch.no_grad():
    expected = hf(torch.tensor([[1, 5, 9, 13, 2]])).logits.numpy()
  for out in outs:
    np.testing.assert_allclose(np.asarray(out["logits"]), expected, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("layer_loop", ["scan", "unrolled"])
def test_vmapped_members_decode_without_rewriting_the_cache_each_step(tmp_path, layer_loop):
  """Members generated together share one decode loop: the compiled program has no select
  over a KV-cache-sized buffer (a vmapped while_loop selects over every layer's cache every
  step, to freeze the members that have finished), and no copy of one."""
  import re  # pylint: disable=g-import-not-at-top
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=7))
  run = generate.token_generator(gen.config, gen.sampling, stop_ids=gen.codec.stop_ids,
                                 pad_id=gen.codec.pad_id, layer_loop=layer_loop)
  args = (gen.params, jnp.arange(2), jnp.full((2,), 0.1), *gen._encode(["abc", "de"], None))  # pylint: disable=protected-access
  slots = args[3].shape[-1] + 7
  cache_ops = lambda fn, ops, fn_args=args: len(re.findall(
      rf"\[[0-9,]*\b{slots},{gen.config.head_dim}\][^ ]* ({ops})\(",
      fn.lower(*fn_args).compile().as_text()))
  materialised = chunk.materialised_population_fn(run, gen.perturb)
  assert cache_ops(materialised, "select") == 0
  assert cache_ops(population.population_fn(run, member_axis="vmap", spec=gen.perturb),
                   "select") > 0
  # Nor copies or transposes of it beyond those of base generation (none under the scan): the
  # cache is member-split and written outside the vmap.
  base_copies = cache_ops(jax.jit(run), "copy|transpose", args[:1] + args[3:])
  assert cache_ops(materialised, "copy|transpose") == base_copies
  assert base_copies == 0 or layer_loop == "unrolled"


def _averaged_reference(config, members, prompt_ids, n, stop_ids):
  """No cache: each new token is the argmax of the mean of the members' softmax (stop tokens
  forbidden) over the whole sequence so far, recomputed."""
  total = len(prompt_ids) + n
  run = jax.jit(lambda p, ids, mask: jax.nn.softmax(
      M.forward(config, p, ids, mask)[0, -1].at[jnp.asarray(stop_ids)].set(-jnp.inf)))
  ids = list(prompt_ids)
  for _ in range(n):
    pad = total - len(ids)
    tokens = jnp.asarray([[0] * pad + ids])
    mask = jnp.asarray([[False] * pad + [True] * len(ids)])
    ids.append(int(jnp.argmax(sum(run(m, tokens, mask) for m in members) / len(members))))
  return ids[len(prompt_ids):]


@pytest.mark.parametrize("noise", ["full", "lowrank"])
def test_probability_averaging_picks_the_argmax_of_the_members_mean_softmax(tmp_path, noise):
  prompts = ["one prompt", "another one", "xy"]
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise=noise)
  gen = _generator(tmp_path, generate.Sampling(max_new_tokens=8, ignore_eos=True), perturb=spec)
  seeds, sigmas = np.array([5, 9, 2]), np.array([0.3, 0.4, 0.35])  # members that disagree
  members = [rebuild_member(gen.params, int(s), float(g), spec) for s, g in zip(seeds, sigmas)]
  averaged = gen.averaged_token_ids(seeds, sigmas, prompts)
  singles = [gen.base_token_ids(prompts, params=m) for m in members]
  assert any((s != averaged).any() for s in singles)  # the mean is not just one member
  for row, text in zip(averaged, prompts):
    ids = gen.codec.tokenizer(text)["input_ids"]
    assert row.tolist() == _averaged_reference(gen.config, members, ids, 8, gen.codec.stop_ids)
  one = gen.averaged_token_ids(seeds[:1], sigmas[:1], prompts)
  np.testing.assert_array_equal(one, singles[0])  # one member averages to itself
