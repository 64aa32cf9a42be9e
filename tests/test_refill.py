"""Slot refill gives every (member, prompt) the tokens of batch decoding, while its rows end at
different steps and refill from the queue."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import toys
from thickets_jax.errors import InputError
from thickets_jax.llm import chunk, generate, refill, roofline
from thickets_jax.llm import model as M
from thickets_jax.llm.generator import Decode, Generator
from thickets_jax.perturb import PerturbSpec

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
    ("none", True, 1.0, "unrolled")])
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


def test_decode_steps_count_the_refilled_rows_once(inputs):
  """Every row-step is counted: Σ(length − 1) useful decode row-steps fit in steps × slots,
  and 12 prompts in 3 slots take fewer steps than 3 batches of 4 run to their longest row."""
  params, prompts, masks, _ = inputs
  sampling = generate.Sampling(max_new_tokens=NEW, temperature=1.0)
  keys = generate.prompt_keys(sampling, jax.random.key(3), BATCHES, ROWS)
  run = jax.jit(lambda params, prompts, masks, keys: refill.refill_tokens(
      CONFIG, params, prompts, masks, keys, sampling=sampling, stop_ids=STOPS, pad_id=0,
      slots=3, refill_rows=1))
  ids, steps = run(params, prompts.reshape(-1, PROMPT), masks.reshape(-1, PROMPT),
                   keys.reshape(-1))
  lengths = generate.completion_mask(np.asarray(ids[0]), STOPS).sum(-1)
  useful = int((lengths - 1).sum())
  assert useful <= int(steps) * 3 < useful + 3 * NEW  # idle only while the queue drains
  batch_steps = (lengths.reshape(BATCHES, ROWS).max(axis=1) - 1).sum()
  assert int(steps) * 3 < batch_steps * ROWS


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


@pytest.mark.parametrize("decode, sentence", [
    (Decode("stream"), "unknown decode 'stream'; known: batch, refill."),
    (Decode("refill", 3), "--refill_rows must be between 1 and --batch_size (2), got 3.")])
def test_a_bad_decode_is_one_sentence(decode, sentence):
  with pytest.raises(InputError, match=sentence.replace("(", r"\(").replace(")", r"\)")):
    Generator(CONFIG, {}, toys.CharTokenizer(), generate.Sampling(max_new_tokens=2),
              batch_size=2, chat=False, decode=decode)
