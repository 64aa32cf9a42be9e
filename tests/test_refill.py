"""Slot refill gives every (member, prompt) the tokens of batch decoding, while its rows end at
different steps and refill from the queue."""

import dataclasses
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toys
from thickets_jax.errors import InputError
from thickets_jax import rng
from thickets_jax.llm import chunk, factored, generate, refill, roofline
from thickets_jax.llm import model as M
from thickets_jax.llm.generator import Decode, Generator, faster_decode
from thickets_jax.perturb import PerturbSpec, member_factors

# An untied head: the tied tiny model's greedy rows repeat their last token, so all would run
# to the limit or stop at once.
CONFIG = dataclasses.replace(toys.TINY_CONFIG, tie_embeddings=False)
STOPS = tuple(range(3, CONFIG.vocab_size, 5))  # a fifth of the vocabulary ends a row
BATCHES, ROWS, PROMPT, NEW = 3, 4, 6, 10


@pytest.fixture(scope="module")
def inputs():
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, PROMPT + 1, (BATCHES, ROWS))
  masks = np.arange(PROMPT)[None, None] >= (PROMPT - lengths)[..., None]
  prompts = np.where(masks, rng.integers(2, CONFIG.vocab_size, (BATCHES, ROWS, PROMPT)), 0)
  return (roofline.random_params(CONFIG, jax.random.key(0)), prompts.astype(np.int32), masks,
          rng.integers(2, CONFIG.vocab_size, (4,)).astype(np.int32))


@pytest.mark.parametrize("members, prefixed, temperature, layer_loop", [
    ("none", False, 0.0, "scan"),
    ("lowrank", True, 1.0, "scan"),
    ("full", True, 0.0, "unrolled"),
    ("full", False, 1.0, "scan"),
    ("none", True, 1.0, "unrolled"),
    ("lowrank", False, 0.0, "unrolled")])
def test_slot_refill_gives_the_tokens_of_batch_decoding(inputs, members, prefixed, temperature,
                                                        layer_loop):
  params, prompts, masks, prefix = inputs
  prefix = prefix if prefixed else prefix[:0]
  sampling = generate.Sampling(max_new_tokens=NEW, temperature=temperature)
  keys = generate.prompt_keys(sampling, jax.random.key(3) if temperature else None, BATCHES,
                              ROWS)
  settings = dict(stop_ids=STOPS, pad_id=0, layer_loop=layer_loop)
  batch = generate.token_generator(CONFIG, sampling, **settings)
  slots = refill.refill_generator(CONFIG, sampling, slots=3, refill_rows=2, **settings)
  if members == "none":
    expected = jax.jit(batch)(params, prompts, masks, keys, prefix)
    got = jax.jit(slots)(params, prompts, masks, keys, prefix)
  else:
    spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank" if members == "lowrank"
                       else "full", rank=2)
    program = lambda run: chunk.population_program(run, spec, member_axis="vmap",
                                                   factored=members == "lowrank")
    args = (params, jnp.array([1, 2]), jnp.array([0.05, 0.05], jnp.float32), prompts, masks,
            keys, prefix)
    expected, got = program(batch)(*args), program(slots)(*args)
  np.testing.assert_array_equal(np.asarray(got), np.asarray(expected))
  lengths = generate.completion_mask(np.asarray(expected), STOPS).sum(-1)
  assert lengths.min() < NEW and len(np.unique(lengths)) >= 3  # rows end at different steps


def test_the_host_replay_counts_the_decode_steps_the_loop_runs(inputs):
  """`refill_steps` replays the loop's schedule: a free slot takes the next pair before the
  next step however many pairs a prefill stages, so its count is the compiled loop's for any
  R; Σ(length − 1) useful row-steps fit in steps × slots; 12 prompts in 3 slots take fewer
  row-steps than 3 batches of 4 run to their longest row (`batch_steps`); and the loop stages
  R pairs per prefill call."""
  params, prompts, masks, _ = inputs
  sampling = generate.Sampling(max_new_tokens=NEW, temperature=1.0)
  keys = generate.prompt_keys(sampling, jax.random.key(3), BATCHES, ROWS)
  for refill_rows in (1, 2, 3):
    run = jax.jit(lambda params, prompts, masks, keys: refill.refill_tokens(
        CONFIG, params, prompts, masks, keys, sampling=sampling, stop_ids=STOPS, pad_id=0,
        slots=3, refill_rows=refill_rows))
    ids, steps, prefills = run(params, prompts.reshape(-1, PROMPT), masks.reshape(-1, PROMPT),
                               keys.reshape(-1))
    lengths = generate.completion_mask(np.asarray(ids), STOPS).sum(-1)  # [1, 12]
    assert refill.refill_steps(lengths, 3) == int(steps)
    assert int(prefills) == -(-BATCHES * ROWS // refill_rows)
    useful = int((lengths - 1).sum())
    assert useful <= int(steps) * 3 < useful + 3 * NEW
    assert int(steps) * 3 < refill.batch_steps(lengths, ROWS) * ROWS


@pytest.mark.parametrize("qk_norm", ["none", "head"])
def test_rows_that_carry_their_member_get_their_members_logits_and_prefix(qk_norm):
  """Factored members sharing slots: rows of any members in any order (`factored.assign_rows`)
  get the logits and keys of the same rows grouped member-major, each attending to its own
  member's prefix; every factored leaf (embedding, head, kernels, biases, norms) is perturbed."""
  config = dataclasses.replace(CONFIG, qk_norm=qk_norm)
  params = roofline.random_params(config, jax.random.key(2))
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank", rank=3)
  factors = jax.vmap(lambda seed, sigma: member_factors(params, rng.member_key(seed), sigma,
                                                        spec))(jnp.array([3, 11, 7]),
                                                               jnp.array([0.3, 0.5, 0.4]))
  members = factored.members_collection(factors)
  count, per_member, length = 3, 2, 5
  prefix_kv = generate.prefill_prefix(config, params, jnp.array([5, 9, 2, 7]), members=members)
  tokens = np.random.default_rng(0).integers(2, config.vocab_size, (count * per_member, length))
  mask = np.arange(length)[None] >= np.array([0, 2, 1, 0, 3, 1])[:, None]
  positions = 4 + np.maximum(np.cumsum(mask, axis=1) - 1, 0)
  run = generate.member_runner(config, params, members, "scan")
  cache = generate.empty_cache(config, count * per_member, 1, "scan", members)
  call = lambda order, **rows: run(tokens[order], positions[order], cache, None, None,
                                   mask[order], prefix=prefix_kv, **rows)
  grouped = np.arange(count * per_member)
  logits, (keys, _) = call(grouped)
  order = np.array([4, 1, 5, 0, 3, 2])  # members 2, 0, 2, 0, 1, 1
  mixed, (mixed_keys, _) = call(order, row_members=jnp.asarray(order // per_member))
  np.testing.assert_allclose(mixed, logits[order], rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(mixed_keys, keys[:, order], rtol=1e-5, atol=1e-5)
  assert float(jnp.abs(logits[0] - logits[2]).max()) > 1e-2  # the members differ
  assert float(jnp.abs(mixed - logits).max()) > 1e-2  # so the order matters


def test_factored_members_share_their_slots_and_the_replay_counts_the_steps(inputs):
  """One queue of M × Q (member, prompt) pairs in M × S slots: the compiled loop runs the
  steps `refill_steps(shared=True)` replays, fewer than per-member queues on these lengths,
  and gives every member its batch-decoding tokens."""
  params, prompts, masks, _ = inputs
  sampling = generate.Sampling(max_new_tokens=NEW, temperature=1.0)
  keys = generate.prompt_keys(sampling, jax.random.key(3), BATCHES, ROWS)
  spec = PerturbSpec(stacked=M.STACKED_LEAVES, noise="lowrank", rank=2)
  seeds, sigmas = jnp.array([1, 2, 5]), jnp.full(3, 0.5, jnp.float32)

  def steps_of(params, seeds, sigmas, prompts, masks, keys):
    members = factored.members_collection(jax.vmap(
        lambda seed, sigma: member_factors(params, rng.member_key(seed), sigma, spec))(
            seeds, sigmas))
    return refill.refill_tokens(CONFIG, params, prompts, masks, keys, sampling=sampling,
                                stop_ids=STOPS, pad_id=0, slots=1, refill_rows=1,
                                members=members)
  ids, steps, _ = jax.jit(steps_of)(params, seeds, sigmas, prompts.reshape(-1, PROMPT),
                                 masks.reshape(-1, PROMPT), keys.reshape(-1))
  batch = chunk.population_program(generate.token_generator(CONFIG, sampling, stop_ids=STOPS,
                                                            pad_id=0), spec,
                                   member_axis="vmap", factored=True)
  expected = batch(params, seeds, sigmas, prompts, masks, keys, prompts[0, 0, :0])
  np.testing.assert_array_equal(np.asarray(ids), np.asarray(expected).reshape(ids.shape))
  lengths = generate.completion_mask(np.asarray(ids), STOPS).sum(-1)  # [3, 12]
  assert refill.refill_steps(lengths, 1, shared=True) == int(steps)
  assert int(steps) < refill.refill_steps(lengths, 1)
  assert len(np.unique(lengths.sum(axis=1))) == 3  # the members' queues differ in length


def test_a_generator_decoding_with_refill_gives_its_members_the_same_texts(tmp_path):
  params = roofline.random_params(CONFIG, jax.random.key(1))
  texts = ["hello", "a much longer prompt", "xy", "q", "seven", "the end"]
  made = lambda decode: Generator(CONFIG, params, toys.CharTokenizer(),
                                  generate.Sampling(max_new_tokens=8), batch_size=2, chat=False,
                                  member_axis="vmap", decode=decode)
  seeds, sigmas = np.array([4, 7]), np.array([0.1, 0.1], np.float32)
  (_, expected), = made(Decode()).population_token_ids(seeds, sigmas, texts, members_per_batch=2)
  (_, got), = made(Decode("refill", 1)).population_token_ids(seeds, sigmas, texts,
                                                             members_per_batch=2)
  np.testing.assert_array_equal(got, expected)


def test_faster_decode_picks_refill_only_where_lengths_vary_across_more_prompts_than_slots():
  varied = np.array([[2, 9, 3, 9, 2, 9, 3, 9]])
  assert faster_decode(varied, 2) == "refill"  # 4 batches of 2: each waits for a 9
  assert faster_decode(np.full((1, 8), 9), 2) == "batch"  # one length: the same steps
  assert faster_decode(varied[:, :2], 2) == "batch"  # one batch holds every prompt
  assert faster_decode(varied[:, :5], 2) == "refill"  # padded to 3 batches


def test_faster_decode_weighs_a_refill_step_at_the_backends_measured_cost(monkeypatch):
  lengths = np.array([[3, 7, 9, 5, 6, 11, 9, 11]])  # refill 30 steps, batches 34
  assert faster_decode(lengths, 2) == "batch"  # CPU: 30 × 1.16 > 34
  monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
  assert faster_decode(lengths, 2) == "refill"  # GPU: 30 × 1.0 < 34


def test_auto_decoding_switches_to_refill_after_a_chunk_of_varied_lengths():
  """The first chunk decodes in batches; its completions end at different steps, so the next
  chunk refills slots; every member gets the tokens batch decoding gives it."""
  params = roofline.random_params(CONFIG, jax.random.key(1))
  params["lm_head"]["kernel"] = params["lm_head"]["kernel"].at[:, 1].multiply(8.0)  # EOS
  texts = ["hello", "a much longer prompt", "xy", "q", "seven", "the end", "abc", "zz"]
  made = lambda decode: Generator(CONFIG, params, toys.CharTokenizer(),
                                  generate.Sampling(max_new_tokens=8), batch_size=2, chat=False,
                                  member_axis="vmap", decode=decode)
  seeds, sigmas = np.array([4, 7, 9, 11]), np.full(4, 0.1, np.float32)
  ids = lambda gen: np.concatenate([chunk_ids for _, chunk_ids in gen.population_token_ids(
      seeds, sigmas, texts, members_per_batch=2)])
  auto, batch = made(Decode()), made(Decode("batch"))
  expected = ids(batch)
  np.testing.assert_array_equal(ids(auto), expected)
  assert auto.chunk_decodes == ["batch", "refill"] and batch.chunk_decodes == ["batch"] * 2
  first = generate.completion_mask(expected[:2], auto.codec.stop_ids).sum(-1)
  assert len(np.unique(first)) >= 3


@pytest.mark.parametrize("decode, sentence", [
    (Decode("stream"), "unknown decode 'stream'; known: auto, batch, refill."),
    (Decode("refill", 3), "--refill_rows must be between 1 and --batch_size (2), got 3.")])
def test_a_bad_decode_is_one_sentence(decode, sentence):
  with pytest.raises(InputError, match=sentence.replace("(", r"\(").replace(")", r"\)")):
    Generator(CONFIG, {}, toys.CharTokenizer(), generate.Sampling(max_new_tokens=2),
              batch_size=2, chat=False, decode=decode)


def test_a_bfloat16_cache_holds_bfloat16_and_both_decoders_agree_on_it(inputs):
  params, prompts, masks, prefix = inputs
  sampling = generate.Sampling(max_new_tokens=NEW, cache_dtype="bfloat16")
  keys = generate.prompt_keys(sampling, None, BATCHES, ROWS)
  settings = dict(stop_ids=STOPS, pad_id=0, layer_loop="scan")
  batch = jax.jit(generate.token_generator(CONFIG, sampling, **settings))
  slots = jax.jit(refill.refill_generator(CONFIG, sampling, slots=3, refill_rows=2, **settings))
  np.testing.assert_array_equal(np.asarray(slots(params, prompts, masks, keys, prefix)),
                                np.asarray(batch(params, prompts, masks, keys, prefix)))
  # The CPU backend upcasts bf16 buffers, so its memory figures cannot show the halving: the
  # cache's own dtype is checked instead.
  cache = jax.eval_shape(lambda: generate.empty_cache(CONFIG, ROWS, 8, "scan", None,
                                                      sampling.cache_dtype))
  assert {leaf.dtype for leaf in jax.tree.leaves(cache)} == {jnp.dtype(jnp.bfloat16)}


@pytest.mark.parametrize("rank, per_call", [(0, 1), (2, 2)])
def test_b9_on_random_weights_reports_identical_rows_and_the_useful_fractions(rank, per_call):
  """Full-rank members (one per call), and low-rank ones run factored (two per call, sharing
  their slots)."""
  from thickets_jax import benchmarks  # pylint: disable=g-import-not-at-top
  line = benchmarks.run("B9", b9_random_weights=True, b9_model="tiny-random-llama",
                        b9_prompts=8, b9_batch=4, b9_refill_rows=2, b9_new_tokens=16,
                        b9_members=2 * per_call, members_per_batch=per_call, b9_hf=False,
                        b9_rank=rank)
  rows = 16 * per_call
  assert line.startswith("B9: slot refill ") and f"{rows}/{rows} rows identical" in line
  useful = [int(x) for x in re.findall(r"row-steps (\d+)% vs (\d+)%", line)[0]]
  assert 0 < useful[1] <= useful[0] <= 100  # refill wastes no more row-steps than batches
