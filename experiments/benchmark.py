r"""Benchmarks of docs/benchmarks.md, each printing `<id>: <figure> (<comparison>)` last.

  python -m experiments.benchmark --bench B1   # 1D RandOpt post-training vs measured peak
  python -m experiments.benchmark --bench B2   # 1D approximation experiment end to end
  python -m experiments.benchmark --bench B3   # SmolLM2 population generation vs HF generate
  python -m experiments.benchmark --bench B4   # peak RSS of population scoring at two N
  python -m experiments.benchmark --bench B5   # GPU/TPU: qwen2.5-7b shapes vs the roofline
  python -m experiments.benchmark --bench ES   # peak RSS and time of one ES update at two N
  python -m experiments.benchmark --bench B6   # low-rank members factored vs full rank, SmolLM2
  python -m experiments.benchmark --bench B7   # successive halving vs full scoring, same run
  python -m experiments.benchmark --bench B8   # shared-prefix prefill vs prefix in every prompt
  python -m experiments.benchmark --bench P1 --host_devices 8   # dry-run plans vs their floor
  python -m experiments.benchmark --bench P1   # GPU/TPU: measured peak memory vs the plan

Figures are ratios measured in one process (B1, B3: against the machine's fp32 matmul peak,
measured before and after the workload; B3 also against transformers `generate` on the same
members and prompts; B5: against the accelerator's measured bf16 matmul rate and copy
bandwidth) or against a recorded peer time (B2). B4 and ES run one child process per N. B6 runs
low-rank members factored against full-rank members materialised, B8 the prefill with and
without the shared prefix, each in one process. B7 runs full scoring and successive halving on
the same members: 1D over seeds, and an offline LLM. P1 compares the execution plan's memory
floor with the compiled program (CPU: for the host's simulated devices, corrected for the CPU
backend's threefry and bf16-upcast buffers) or with the peak a short run measures (accelerators).
"""

import dataclasses
import functools
import os
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from experiments import common
from thickets_jax import bench, cli, flops, halving, population, workdir
from thickets_jax.baselines import es
from thickets_jax.errors import InputError
from thickets_jax.llm import (chunk, density, dryrun, generate, model as llm_model, plan,
                              randopt, registry, session)
from thickets_jax.llm import roofline, sharding
from thickets_jax.perturb import PerturbSpec, perturb_member, rebuild_member
from thickets_jax.signals import families, model as signal_model
from thickets_jax.signals import runs as signal_runs
from thickets_jax.tasks import countdown

BENCHES = ("B1", "B2", "B3", "B4", "B5", "B6", "ES", "B7", "B8", "P1")
flags.DEFINE_string("bench", "B1", f"One of {', '.join(BENCHES)}.")
flags.DEFINE_integer("N", 1000, "B1: population size.")
flags.DEFINE_integer("chunk_size", 4, "B1: members per vmapped call.")
flags.DEFINE_integer("repeats", 5, "B1, B3: repeats of the peak matmul measurement (median).")
flags.DEFINE_integer("members", 16, "B3: perturbed members.")
flags.DEFINE_integer("prompts", 16, "B3: distinct Countdown prompts (one batch).")
flags.DEFINE_integer("new_tokens", 64, "B3: exactly this many new tokens per prompt.")
flags.DEFINE_integer("members_per_batch", 2, "B3, B4: members per compiled call.")
flags.DEFINE_enum("member_axis", "map", population.MEMBER_AXES, "B3, B4: how members share a call.")
flags.DEFINE_list("b4_sizes", ["4", "32"], "B4, ES: population sizes N, one child process each.")
flags.DEFINE_string("b5_model", "qwen2.5-7b", "B5: registry model whose shapes get random weights.")
flags.DEFINE_integer("b5_members", 4, "B5: perturbed members timed (after one warm-up member).")
flags.DEFINE_integer("b5_prompts", 128, "B5: prompts per member (one batch).")
flags.DEFINE_integer("b5_prompt_len", 128, "B5: prompt bucket; real lengths are drawn in [3/4, 1] of it.")
flags.DEFINE_integer("b5_new_tokens", 256, "B5: exactly this many new tokens per prompt.")
flags.DEFINE_enum("layer_loop", None, generate.LAYER_LOOPS,
                  "B3, B5: how the layers run (default: unrolled on GPUs, else scan).")
flags.DEFINE_integer("b5_matmul_size", 8192, "B5: n of the n×n bf16 matmuls that measure the peak.")
flags.DEFINE_float("b5_copy_gib", 4.0, "B5: GiB copied to measure device-memory bandwidth.")
flags.DEFINE_integer("b6_members", 64, "B6: members of each noise family.")
flags.DEFINE_list("b6_ranks", ["1", "4", "16"], "B6: ranks of the low-rank members.")
flags.DEFINE_integer("b6_chunk", 16, "B6: low-rank members per factored call (rows = chunk x prompts).")
flags.DEFINE_integer("b6_check", 2, "B6: low-rank members also materialised, to compare tokens.")
flags.DEFINE_integer("b8_shots", 8, "B8: solved examples in the few-shot prompts.")
flags.DEFINE_float("b7_eta", 4.0, "B7: successive-halving eta.")
flags.DEFINE_string("b7_seeds", "0-2", "B7: 1D seeds.")
flags.DEFINE_string("b7_llm", "smollm2-135m-instruct", "B7: offline model of the LLM part ('' skips it).")
flags.DEFINE_integer("b7_llm_N", 32, "B7: LLM members.")
flags.DEFINE_string("b7_workdir", None, "B7: keep the runs here (default: a temporary directory).")
flags.DEFINE_list("p1_models", ["qwen2.5-7b-instruct", "qwen2.5-32b-instruct", "olmo-3-7b-instruct"],
                  "P1: models planned (accelerators: the first one runs).")
flags.DEFINE_string("p1_device_memory", "80GB", "P1 on CPU: memory of each simulated device.")
flags.DEFINE_integer("p1_new_tokens", 128, "P1 on accelerators: new tokens of the short run.")
FLAGS = flags.FLAGS

# docs/benchmarks.md: the paper's PyTorch 1D approximation script, end to end, on this machine kind.
REFERENCE_B2_SECONDS = 269.0


def bench_b1() -> str:
  ctx, fut, samples = 10, 60, 1024
  model = signal_model.SignalMLP(128, 5)
  params = signal_model.init_params(model, jax.random.key(0), ctx)
  context, future = families.sample("mixed", jax.random.key(1), samples, ctx, fut)
  context, future, weights = signal_model.unique_samples(np.asarray(context), np.asarray(future))
  assert len(weights) == samples, "B1 measures 1024 distinct samples"

  def score(p):
    return signal_model.weighted_mse(signal_model.rollout(model, p, context, fut), future, weights)

  fn = population.population_fn(score)
  seeds, sigmas = population.draw_candidates(0, FLAGS.N, [1e-3])
  mesh, chunk_size = common.population_mesh(FLAGS.chunk_size)
  peak_before = bench.peak_matmul_flops(FLAGS.repeats)
  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:chunk_size], sigmas[:chunk_size],
                                  chunk_size=chunk_size, mesh=mesh))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  scores = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=chunk_size,
                                          mesh=mesh)
  seconds = time.perf_counter() - start
  peak = float(np.median([peak_before, bench.peak_matmul_flops(FLAGS.repeats)]))
  assert np.all(np.isfinite(scores))
  flops = 2 * signal_model.count_params(params) * samples * fut * FLAGS.N
  rate = flops / seconds
  logging.info("B1: %d members x %d samples x %d steps, %.2f TFLOP, compile %.1f s, "
               "%d device(s), chunk %d", FLAGS.N, samples, fut, flops / 1e12, compile_s,
               jax.device_count(), chunk_size)
  return (f"B1: {seconds:.1f} s, {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


def bench_b2() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "experiments.signals1d", "--regime", "approximation",
                    "--seeds", "0", "--workdir", tmp], cwd=root, check=True, capture_output=True)
    seconds = time.perf_counter() - start
  return (f"B2: {seconds:.1f} s end to end, 3 regimes incl. pretraining and plots "
          f"(target <= 60 s; reference PyTorch {REFERENCE_B2_SECONDS:.0f} s "
          f"= {REFERENCE_B2_SECONDS / seconds:.1f}x)")


SMOLLM2 = "smollm2-135m-instruct"


def bench_b3() -> str:
  import torch  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import torch_twin  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  loaded = registry.load(SMOLLM2)
  texts = [countdown.prompt(p) for p in countdown.generate(0, FLAGS.prompts)]
  sampling = generate.Sampling(max_new_tokens=FLAGS.new_tokens, ignore_eos=True)
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                           batch_size=FLAGS.prompts, chat=True, member_axis=FLAGS.member_axis,
                           layer_loop=FLAGS.layer_loop)
  seeds, sigmas = population.draw_candidates(0, FLAGS.members, [1e-3])
  _, mask = gen.codec.encode(texts)
  prompt_tokens = int(mask.sum())
  peak_before = bench.peak_matmul_flops(FLAGS.repeats)
  c = FLAGS.members_per_batch
  start = time.perf_counter()
  list(gen.population_token_ids(seeds[:c], sigmas[:c], texts, members_per_batch=c))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  ours = np.concatenate([ids for _, ids in gen.population_token_ids(
      seeds, sigmas, texts, members_per_batch=c)])
  ours_s = time.perf_counter() - start
  peak = float(np.median([peak_before, bench.peak_matmul_flops(FLAGS.repeats)]))

  ids = gen.codec.token_ids(texts)
  width = max(len(x) for x in ids)
  input_ids = torch.tensor([[gen.codec.pad_id] * (width - len(x)) + x for x in ids])
  attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
  hf = torch_twin.transformers_model(loaded.config, loaded.params)
  hf_s, same_rows = 0.0, 0
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = rebuild_member(loaded.params, int(seed), float(sigma), gen.perturb)
    hf.load_state_dict(torch_twin.state_dict(loaded.config, member))  # untimed: HF gets its weights free
    start = time.perf_counter()
    with torch.no_grad():
      out = hf.generate(input_ids, attention_mask=attention, max_new_tokens=FLAGS.new_tokens,
                        min_new_tokens=FLAGS.new_tokens, do_sample=False, pad_token_id=gen.codec.pad_id)
    hf_s += time.perf_counter() - start
    same_rows += int(np.sum(np.all(out[:, width:].numpy() == ours[m], axis=1)))
  tokens = FLAGS.members * (prompt_tokens + FLAGS.prompts * FLAGS.new_tokens)
  model_flops = tokens * flops.token_flops(loaded.config.num_params)
  rate = model_flops / ours_s
  logging.info("B3: %d members x %d prompts (%d prompt tokens) x %d new tokens; compile %.1f s; "
               "ours %.2f s/member (perturbation included), HF generate %.2f s/member; "
               "%d/%d rows token-identical to HF; HF %.0f GFLOP/s", FLAGS.members, FLAGS.prompts,
               prompt_tokens, FLAGS.new_tokens, compile_s, ours_s / FLAGS.members,
               hf_s / FLAGS.members, same_rows, FLAGS.members * FLAGS.prompts,
               model_flops / hf_s / 1e9)
  return (f"B3: {hf_s / ours_s:.2f}x HF generate ({ours_s:.1f} s vs {hf_s:.1f} s for "
          f"{FLAGS.members} members), {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


def b4_workload(n: int, members_per_batch: int, member_axis: str) -> None:
  """Scores N members on Countdown (4 prompts, 32 tokens): what B4 measures the memory of."""
  loaded = registry.load(SMOLLM2)
  problems = countdown.generate(1, 4)
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                           generate.Sampling(max_new_tokens=32), batch_size=4, chat=True,
                           member_axis=member_axis)
  seeds, sigmas = population.draw_candidates(0, n, [1e-3])
  scores = []
  for _, texts in gen.generate_population(seeds, sigmas, [countdown.prompt(p) for p in problems],
                                          members_per_batch=members_per_batch):
    scores += [np.mean([countdown.reward(t, p) for t, p in zip(member, problems)]) for member in texts]
  assert len(scores) == n


def bench_b4() -> str:
  peaks = {n: bench.peak_rss_in_fresh_process(b4_workload, n, FLAGS.members_per_batch,
                                              FLAGS.member_axis)
           for n in cli.ints(FLAGS.b4_sizes, "b4_sizes")}
  figures = ", ".join(f"{peaks[n] / 2**30:.2f} GiB at N={n}" for n in peaks)
  return (f"B4: peak RSS {figures} (SmolLM2 fp32 weights 0.50 GiB; target <= 3 GB whatever N)")


def es_workload(n: int) -> None:
  """One ES update of SmolLM2-135M's shapes (fp32, random weights) from N members' scores."""
  config = registry.MODELS.get(SMOLLM2).config
  params = roofline.random_params(config, jax.random.key(0))
  es_config = es.ESConfig(population=n)
  step = es.make_step(es_config, PerturbSpec(stacked=llm_model.STACKED_LEAVES))
  seeds, sigmas = es.iteration_members(0, 0, es_config)
  args = (jnp.asarray(seeds, jnp.int32), jnp.asarray(sigmas, jnp.float32),
          jnp.asarray(np.random.default_rng(0).random(n), jnp.float32))
  jax.block_until_ready(step(params, es.init(params, es_config), *args))  # compiled
  start = time.perf_counter()
  jax.block_until_ready(step(params, es.init(params, es_config), *args))
  logging.info("ES update with N=%d: %.2f s (%.3f s per member)", n,
               time.perf_counter() - start, (time.perf_counter() - start) / n)


def bench_es() -> str:
  peaks = {n: bench.peak_rss_in_fresh_process(es_workload, n)
           for n in cli.ints(FLAGS.b4_sizes, "b4_sizes")}
  figures = ", ".join(f"{peaks[n] / 2**30:.2f} GiB at N={n}" for n in peaks)
  return (f"ES: peak RSS of one update {figures} (SmolLM2 fp32 weights 0.50 GiB; the update "
          f"holds the base, one member's noise and a float32 accumulator whatever N)")


def bench_b5() -> str:
  entry = registry.MODELS.get(FLAGS.b5_model)
  config = entry.config.replace(dtype=jnp.bfloat16)
  layer_loop = FLAGS.layer_loop or generate.default_layer_loop()
  backend = jax.devices()[0]
  flops_rate = bench.peak_matmul_flops(FLAGS.repeats, n=FLAGS.b5_matmul_size, dtype=jnp.bfloat16)
  bandwidth = bench.peak_copy_bandwidth(FLAGS.repeats, FLAGS.b5_copy_gib)
  params = roofline.random_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  rows, bucket, n = FLAGS.b5_prompts, FLAGS.b5_prompt_len, FLAGS.b5_new_tokens
  lengths = rng.integers(3 * bucket // 4, bucket + 1, rows)
  mask = np.arange(bucket)[None, :] >= (bucket - lengths)[:, None]
  tokens = np.where(mask, rng.integers(1000, config.vocab_size - 1000, (rows, bucket)), 0)
  args = (tokens[None].astype(np.int32), mask[None], jax.random.key(0)[None])
  sampling = generate.Sampling(max_new_tokens=n, ignore_eos=True)
  run = lambda p, prompts, masks, keys, sampling=sampling: generate.generate_batches(
      config, p, prompts, masks, keys, sampling=sampling, stop_ids=(0,), pad_id=0,
      layer_loop=layer_loop)
  spec = PerturbSpec(stacked=llm_model.STACKED_LEAVES)
  fn = population.population_fn(run, member_axis="map", spec=spec)
  seeds, sigmas = population.draw_candidates(0, FLAGS.b5_members + 1, [1e-3])

  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:1], sigmas[:1], chunk_size=1, args=args))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in population.iter_population(fn, params, seeds[1:], sigmas[1:], chunk_size=1, args=args):
    pass
  seconds = (time.perf_counter() - start) / FLAGS.b5_members

  # Phase times, for the breakdown: perturbation alone, prefill (+ 1 token), whole generation.
  perturb = jax.jit(lambda p, seed, sigma: perturb_member(p, seed, sigma, spec))
  phases = {"perturb": bench.median_seconds(perturb, params, jnp.int32(1), jnp.float32(1e-3),
                                       repeats=3)}
  prefill = jax.jit(functools.partial(run, sampling=dataclasses.replace(sampling, max_new_tokens=1)))
  phases["prefill"] = bench.median_seconds(prefill, params, *args, repeats=3)
  phases["decode"] = bench.median_seconds(jax.jit(run), params, *args, repeats=3) - phases["prefill"]

  roof = roofline.roofline(config, params, mask, n)
  floors = roof.seconds(flops_rate, bandwidth)
  for phase, floor in floors.items():
    logging.info("B5 %-8s %8.1f ms, roofline floor %8.1f ms (%3.0f%%)", phase,
                 1e3 * phases[phase], 1e3 * floor, 100 * floor / phases[phase])
  logging.info("B5: %s layers; %s on %s; %d members x %d prompts (bucket %d, %d real tokens) x %d new "
               "tokens; compile %.1f s; %.2f s per member; measured %.0f TFLOP/s bf16 matmul, "
               "%.2f TB/s copy", layer_loop, FLAGS.b5_model, backend.device_kind, FLAGS.b5_members, rows,
               bucket, int(mask.sum()), n, compile_s, seconds, flops_rate / 1e12, bandwidth / 1e12)
  stats = backend.memory_stats() or {}
  if "peak_bytes_in_use" in stats:
    logging.info("B5: peak device memory %.1f GiB (weights %.1f GiB)",
                 stats["peak_bytes_in_use"] / 2**30, roof.perturb_bytes / 2 / 2**30)
  mfu = roof.flops / seconds / flops_rate
  hbm = roof.bytes / seconds / bandwidth
  bound = sum(floors.values()) / seconds
  return (f"B5: {100 * bound:.0f}% of the roofline bound ({seconds:.2f} s per member vs "
          f"{sum(floors.values()):.2f} s floor), model-FLOP utilisation {100 * mfu:.0f}% of "
          f"{flops_rate / 1e12:.0f} TFLOP/s, {100 * hbm:.0f}% of {bandwidth / 1e12:.2f} TB/s "
          f"measured copy bandwidth")


_POSITIVE = ("N", "chunk_size", "repeats", "members", "prompts", "new_tokens",
             "members_per_batch", "b5_members", "b5_prompts", "b5_prompt_len", "b5_new_tokens",
             "b5_matmul_size", "b6_members", "b6_chunk", "b6_check", "b8_shots", "p1_new_tokens")


def _chunk_times(gen: generate.Generator, seeds, sigmas, texts,
                 chunk: int) -> tuple[np.ndarray, list[float]]:
  """([members, prompts, new] token ids of every member, seconds of each chunk of members)."""
  ids, seconds, start = [], [], time.perf_counter()
  for _, out in gen.population_token_ids(seeds, sigmas, texts, members_per_batch=chunk):
    ids.append(out)
    seconds.append(time.perf_counter() - start)
    start = time.perf_counter()
  return np.concatenate(ids), seconds


def _rate(gen: generate.Generator, seeds, sigmas, texts, chunk: int) -> tuple[float, np.ndarray]:
  """(members per second over every chunk but the first, which includes compilation; token ids)."""
  if len(seeds) < 2 * chunk:
    raise InputError(f"B6 needs at least two chunks of {chunk} members, got {len(seeds)} members.")
  ids, seconds = _chunk_times(gen, seeds, sigmas, texts, chunk)
  return (len(seeds) - chunk) / sum(seconds[1:]), ids


def bench_b6() -> str:
  """Low-rank members run factored (base matmuls shared by a chunk's members) vs full-rank
  members materialised one at a time; same prompts, same process."""
  loaded = registry.load(SMOLLM2)
  texts = [countdown.prompt(p) for p in countdown.generate(0, FLAGS.prompts)]
  sampling = generate.Sampling(max_new_tokens=FLAGS.new_tokens, ignore_eos=True)
  make = lambda spec, **kwargs: generate.Generator(
      loaded.config, loaded.params, loaded.tokenizer, sampling, batch_size=FLAGS.prompts,
      chat=True, perturb=spec, layer_loop=FLAGS.layer_loop, **kwargs)
  seeds, sigmas = population.draw_candidates(0, FLAGS.b6_members, [1e-3])
  full = PerturbSpec(stacked=llm_model.STACKED_LEAVES)
  full_rate, _ = _rate(make(full, member_axis=FLAGS.member_axis), seeds, sigmas, texts,
                       FLAGS.members_per_batch)
  logging.info("B6 full rank, materialised (%s, %d per call): %.3f members/s", FLAGS.member_axis,
               FLAGS.members_per_batch, full_rate)
  figures = []
  for rank in cli.ints(FLAGS.b6_ranks, "b6_ranks"):
    spec = dataclasses.replace(full, noise="lowrank", rank=rank)
    rate, ids = _rate(make(spec), seeds, sigmas, texts, FLAGS.b6_chunk)
    check = FLAGS.b6_check
    materialised, _ = _chunk_times(make(spec, factored=False, member_axis=FLAGS.member_axis),
                                   seeds[:check], sigmas[:check], texts, 1)
    same = int(np.sum(np.all(materialised == ids[:check], axis=-1)))
    logging.info("B6 rank %d, factored (%d members x %d prompts per call): %.3f members/s = %.2fx "
                 "full rank; %d/%d rows token-identical to the materialised members", rank,
                 FLAGS.b6_chunk, FLAGS.prompts, rate, rate / full_rate, same, check * FLAGS.prompts)
    figures.append(f"r={rank} {rate / full_rate:.2f}x ({rate:.3f} members/s, {same}/"
                   f"{check * FLAGS.prompts} rows identical to materialised)")
  return (f"B6: low-rank factored vs full-rank members, {FLAGS.b6_members} members x "
          f"{FLAGS.prompts} Countdown prompts x {FLAGS.new_tokens} new tokens: "
          + "; ".join(figures) + f"; full rank {full_rate:.3f} members/s")


def _few_shot_prompts(n: int, shots: int, seed: int = 0) -> list[str]:
  """GSM8K-style prompts: one instruction and `shots` solved word problems all share, then a
  question of their own."""
  rng = np.random.default_rng(seed)
  names, items = ("Ada", "Ben", "Cleo", "Dev", "Ema", "Finn"), ("apples", "books", "marbles", "stamps")

  def problem():
    name, item = rng.choice(names), rng.choice(items)
    a, b, c = (int(x) for x in rng.integers(5, 60, 3))
    question = (f"{name} has {a} {item}. {name} buys {b} more {item} and then gives {c} of them "
                f"to a friend. How many {item} does {name} have now?")
    return question, f"{name} has {a} + {b} - {c} = {a + b - c} {item}. #### {a + b - c}"

  solved = "\n\n".join("Question: {}\nAnswer: {}".format(*problem()) for _ in range(shots))
  header = ("Solve each grade-school math problem step by step and end with '#### ' and the "
            f"number.\n\n{solved}\n\n")
  return [f"{header}Question: {problem()[0]}\nAnswer:" for _ in range(n)]


def bench_b8() -> str:
  """Prefill time with the shared prefix computed once vs inside every prompt, on B3's Countdown
  prompts and on few-shot GSM8K-style prompts (one model, `max_new_tokens=1`)."""
  loaded = registry.load(SMOLLM2)
  workloads = {"countdown": [countdown.prompt(p) for p in countdown.generate(0, FLAGS.prompts)],
               f"{FLAGS.b8_shots}-shot": _few_shot_prompts(FLAGS.prompts, FLAGS.b8_shots)}
  sampling = generate.Sampling(max_new_tokens=1, ignore_eos=True)
  figures = []
  for name, texts in workloads.items():
    seconds, ids = {}, {}
    for shared in (False, True):
      gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                               batch_size=FLAGS.prompts, chat=True, layer_loop=FLAGS.layer_loop,
                               shared_prefix=shared)
      seconds[shared] = bench.median_seconds(gen.base_token_ids, texts, repeats=FLAGS.repeats)
      ids[shared] = gen.base_token_ids(texts)
    prefix, _, _ = gen.codec.encode_shared_prefix(texts)
    _, plain_mask = gen.codec.encode(texts)
    logging.info("B8 %s: %d prompts, %d real tokens (bucket %d), shared prefix %d tokens; prefill "
                 "%.2f s in every prompt, %.2f s shared; first tokens identical: %s", name,
                 len(texts), int(plain_mask.sum()), plain_mask.shape[-1], len(prefix),
                 seconds[False], seconds[True], bool(np.array_equal(ids[False], ids[True])))
    figures.append(f"{name} {seconds[True]:.2f} s vs {seconds[False]:.2f} s "
                   f"({100 * (1 - seconds[True] / seconds[False]):.0f}% saved, prefix "
                   f"{len(prefix)} tokens)")
  return "B8: shared-prefix prefill, " + "; ".join(figures)


def _b7_1d(root: str) -> list[str]:
  """Full scoring vs halving on the 1D thicket (mixed -> sinusoid, 256 curves), per seed."""
  spec = dict(pretrain="mixed", posttrain="sinusoid", test="sinusoid", n=1024, ks=(5,),
              sigma=0.002, posttrain_size=256, test_size=256)
  rows = {"full": [], "halving": []}
  for seed in cli.int_ranges(FLAGS.b7_seeds, "b7_seeds"):
    for name, extra in (("full", {}), ("halving", dict(halving_eta=FLAGS.b7_eta,
                                                       halving_min_examples=16))):
      rows[name].append(signal_runs.run(
          signal_runs.RunSpec(**spec, seed=seed, **extra),
          workdir.RunDir.prepare(os.path.join(root, f"1d_{name}_{seed}")),
          os.path.join(root, "bases"), plot=False))
  recall = [halving.recall([m["seed"] for m in h["top_members"]],
                           [m["seed"] for m in f["top_members"]])
            for f, h in zip(rows["full"], rows["halving"])]
  lines = []
  for name, results in rows.items():
    mse = np.asarray([r["ensemble_test_mse"]["5"]["mean"] for r in results])
    lines.append(f"  1D {name:<8} selection FLOPs {np.mean([r['selection']['flops'] for r in results]):.3g}"
                 f"  top-5 ensemble test MSE per seed {np.round(mse, 4).tolist()}, "
                 f"mean {mse.mean():.4f} ± {mse.std(ddof=1) / np.sqrt(len(mse)):.4f}")
  ratio = np.mean([h["selection"]["flops"] / f["selection"]["flops"]
                   for f, h in zip(rows["full"], rows["halving"])])
  lines.append(f"  1D halving/full selection FLOPs {ratio:.3f}, top-5 recall per seed {recall}")
  return lines


def _b7_llm(root: str) -> list[str]:
  """Full scoring vs halving on an offline model (arithmetic, where its base is between 0 and 1)."""
  base = randopt.RandOptConfig(model=FLAGS.b7_llm, task="arithmetic", N=FLAGS.b7_llm_N,
                               sigmas=(5e-4, 1e-3), train_size=32, max_new_tokens=32,
                               batch_size=32, ks=(1, 4), test_size=64)
  results = {name: randopt.run_randopt(config, os.path.join(root, f"llm_{name}"))
             for name, config in (("full", base), ("halving", dataclasses.replace(
                 base, halving_eta=FLAGS.b7_eta, halving_min_examples=2)))}
  full_top = [m["seed"] for m in randopt.load_topk(os.path.join(root, "llm_full"))["members"]]
  halved_top = [m["seed"] for m in randopt.load_topk(os.path.join(root, "llm_halving"))["members"]]
  lines = []
  for name, r in results.items():
    acc = r["ensemble_accuracy"]["4"]
    lines.append(f"  {FLAGS.b7_llm} {name:<8} selection FLOPs {r['selection']['forward_flops']:.3g}"
                 f" ({r['selection']['example_evaluations']} example evaluations), top-4 vote "
                 f"test {acc:.3f} ± {np.sqrt(acc * (1 - acc) / r['test_size']):.3f} (base "
                 f"{results['full']['base']['test_accuracy']:.3f})")
  ratio = results["halving"]["selection"]["forward_flops"] / results["full"]["selection"]["forward_flops"]
  lines.append(f"  {FLAGS.b7_llm} halving/full selection FLOPs {ratio:.3f}, top-4 recall "
               f"{halving.recall(halved_top, full_top):.2f}")
  return lines


def bench_b7() -> str:
  with tempfile.TemporaryDirectory() as tmp:
    root = FLAGS.b7_workdir or tmp
    lines = _b7_1d(root) + (_b7_llm(root) if FLAGS.b7_llm else [])
  for line in lines:
    logging.info("%s", line)
  return "B7: successive halving vs full scoring, same members\n" + "\n".join(lines)


def bench_p1() -> str:
  if jax.default_backend() == "cpu":
    return _p1_compiled()
  return _p1_measured()


def _p1_config(model: str, machine: plan.Machine, **settings) -> density.DensityConfig:
  """The README's scale-up settings (gsm8k, the reference protocol) planned for `machine`."""
  return density.DensityConfig(models=(model,), task="gsm8k", N=1000, dry_run=True,
                               **settings).planned(machine)


def _p1_compiled() -> str:
  machine = plan.Machine.hypothetical(jax.device_count(), plan.parse_bytes(FLAGS.p1_device_memory))
  lines = []
  for model in FLAGS.p1_models:
    config = _p1_config(model, machine)
    floor = config.execution_plan([model]).footprint
    compiled = dryrun.compile_population(config, model)["total"]
    corrected = dryrun.corrected_total(config, model, floor)
    lines.append(f"P1 {model}: {config.plan['summary']}")
    lines.append(f"P1: {model} floor {floor.total / 2**30:.2f} GiB per device; compiled for CPU "
                 f"{compiled / 2**30:.2f} GiB ({compiled / floor.total:.2f}x); corrected "
                 f"{corrected / 2**30:.2f} GiB = {corrected / floor.total:.2f}x the floor "
                 "(target within 15%)")
  return "\n".join(lines)


def _p1_measured() -> str:
  """A short bf16 population run of the plan on random weights of the first model: the peak
  device memory against the plan's floor, and members per second."""
  model = FLAGS.p1_models[0]
  config = _p1_config(model, plan.Machine.detect(), max_new_tokens=FLAGS.p1_new_tokens,
                      batch_size=16)
  shapes = registry.MODELS.get(model).config.replace(dtype=session.DTYPES[config.dtype])
  mesh = config.mesh()
  params = jax.device_put(roofline.random_params(shapes, jax.random.key(0)),
                          sharding.param_shardings(shapes, mesh))
  sampling = generate.Sampling(max_new_tokens=config.max_new_tokens, ignore_eos=True)
  run = generate.token_generator(shapes, sampling, stop_ids=(0,), pad_id=0)
  program = chunk.population_program(run, config.perturb_spec(),
                                        member_axis=config.member_axis, factored=False)
  rng = np.random.default_rng(0)
  prompt = (1, config.batch_size, plan.PROMPT_TOKENS)
  args = (rng.integers(1000, shapes.vocab_size - 1000, prompt).astype(np.int32),
          np.ones(prompt, bool), generate.batch_keys(sampling, None, 1), np.zeros((0,), np.int32))
  seeds, sigmas = population.draw_candidates(0, 3 * config.members_per_batch, [1e-3])
  per_call = config.members_per_batch
  list(population.iter_population(program, params, seeds[:per_call], sigmas[:per_call],
                                  chunk_size=per_call, mesh=mesh, args=args))  # compiles
  start = time.perf_counter()
  list(population.iter_population(program, params, seeds[per_call:], sigmas[per_call:],
                                  chunk_size=per_call, mesh=mesh, args=args))
  rate = 2 * per_call / (time.perf_counter() - start)
  floor = config.execution_plan([model]).footprint.total
  peak = max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in jax.local_devices())
  return (f"P1: {config.plan['summary']}\nP1: {model} measured peak {peak / 2**30:.2f} GiB per "
          f"device = {peak / floor:.2f}x the plan's floor {floor / 2**30:.2f} GiB (target within "
          f"10%); {rate:.2f} members/s ({config.batch_size} prompts x "
          f"{config.max_new_tokens} new tokens each)")


def main(argv):
  del argv
  benches = {"B1": bench_b1, "B2": bench_b2, "B3": bench_b3, "B4": bench_b4, "B5": bench_b5,
             "B6": bench_b6, "ES": bench_es, "B7": bench_b7, "B8": bench_b8, "P1": bench_p1}
  if FLAGS.bench not in benches:
    raise InputError(f"unknown --bench {FLAGS.bench!r}; known: {', '.join(benches)}.")
  for name in _POSITIVE:  # before any measurement
    if FLAGS[name].value <= 0:
      raise InputError(f"--{name} must be positive, got {FLAGS[name].value}.")
  if FLAGS.b5_copy_gib <= 0:
    raise InputError(f"--b5_copy_gib must be positive, got {FLAGS.b5_copy_gib}.")
  for name in ("b4_sizes", "b6_ranks"):
    for n in cli.ints(FLAGS[name].value, name):
      if n <= 0:
        raise InputError(f"--{name} must be positive, got {n}.")
  plan.parse_bytes(FLAGS.p1_device_memory, "p1_device_memory")
  for model in FLAGS.p1_models:
    registry.MODELS.get(model)
  if not FLAGS.b7_eta > 1:
    raise InputError(f"--b7_eta must be greater than 1, got {FLAGS.b7_eta}.")
  if FLAGS.b7_llm:
    registry.MODELS.get(FLAGS.b7_llm)
  if FLAGS.b7_llm_N < 4:
    raise InputError(f"--b7_llm_N must be at least 4 (B7 votes over the top 4), got "
                     f"{FLAGS.b7_llm_N}.")
  cli.int_ranges(FLAGS.b7_seeds, "b7_seeds")
  common.setup_devices()
  print(benches[FLAGS.bench](), flush=True)


if __name__ == "__main__":
  cli.run(main)
