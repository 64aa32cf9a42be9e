r"""Benchmarks of BENCHMARKS.md, each printing `<id>: <figure> (<comparison>)` last.

  python -m experiments.benchmark --bench B1   # 1D RandOpt post-training vs measured peak
  python -m experiments.benchmark --bench B2   # 1D approximation experiment end to end
  python -m experiments.benchmark --bench B3   # SmolLM2 population generation vs HF generate
  python -m experiments.benchmark --bench B4   # peak RSS of population scoring at two N
  python -m experiments.benchmark --bench B5   # GPU/TPU: qwen2.5-7b shapes vs the roofline

Figures are ratios measured in one process (B1, B3: against the machine's fp32 matmul peak,
measured before and after the workload; B3 also against transformers `generate` on the same
members and prompts; B5: against the accelerator's measured bf16 matmul rate and copy
bandwidth) or against a recorded peer time (B2). B4 runs one child process per N.
"""

import dataclasses
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import flags, logging

from experiments import common
from thickets_jax import cli, population, perturb as perturb_lib
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, model as llm_model, registry
from thickets_jax.perturb import path_name
from thickets_jax.signals import families, model as signal_model
from thickets_jax.tasks import countdown

BENCHES = ("B1", "B2", "B3", "B4", "B5")
flags.DEFINE_string("bench", "B1", f"One of {', '.join(BENCHES)}.")
flags.DEFINE_integer("N", 1000, "B1: population size.")
flags.DEFINE_integer("chunk_size", 4, "B1: members per vmapped call.")
flags.DEFINE_integer("repeats", 5, "B1, B3: repeats of the peak matmul measurement (median).")
flags.DEFINE_integer("members", 16, "B3: perturbed members.")
flags.DEFINE_integer("prompts", 16, "B3: distinct Countdown prompts (one batch).")
flags.DEFINE_integer("new_tokens", 64, "B3: exactly this many new tokens per prompt.")
flags.DEFINE_integer("members_per_batch", 2, "B3, B4: members per compiled call.")
flags.DEFINE_enum("member_axis", "map", population.MEMBER_AXES, "B3, B4: how members share a call.")
flags.DEFINE_list("b4_sizes", ["4", "32"], "B4: population sizes N, one child process each.")
flags.DEFINE_integer("b4_child", 0, "B4 internal: run as the child that scores N members.")
flags.DEFINE_string("b5_model", "qwen2.5-7b", "B5: registry model whose shapes get random weights.")
flags.DEFINE_integer("b5_members", 4, "B5: perturbed members timed (after one warm-up member).")
flags.DEFINE_integer("b5_prompts", 128, "B5: prompts per member (one batch).")
flags.DEFINE_integer("b5_prompt_len", 128, "B5: prompt bucket; real lengths are drawn in [3/4, 1] of it.")
flags.DEFINE_integer("b5_new_tokens", 256, "B5: exactly this many new tokens per prompt.")
flags.DEFINE_enum("layer_loop", None, generate.LAYER_LOOPS,
                  "B3, B5: how the layers run (default: unrolled on GPUs, else scan).")
flags.DEFINE_integer("b5_matmul_size", 8192, "B5: n of the n×n bf16 matmuls that measure the peak.")
flags.DEFINE_float("b5_copy_gib", 4.0, "B5: GiB copied to measure device-memory bandwidth.")
FLAGS = flags.FLAGS

# BENCHMARKS.md: the paper's PyTorch 1D approximation script, end to end, on this machine kind.
REFERENCE_B2_SECONDS = 269.0


def _median_seconds(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def peak_matmul_flops(repeats: int, n: int = 2048, dtype=jnp.float32) -> float:
  """Measured FLOP/s of n×n @ n×n matmuls of random `dtype` data (median of `repeats`).

  With several host devices the higher of one matmul on one device and one matmul per device
  at once, so the peak is never understated by how the host is split.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), dtype)
  single = 2 * n**3 / _median_seconds(jax.jit(jnp.matmul), a, a, repeats=repeats)
  devices = jax.devices()
  if len(devices) == 1:
    return single
  mesh = population.population_mesh(devices)
  stacked = jax.device_put(jnp.broadcast_to(a, (len(devices), n, n)),
                           jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(
                               population.POPULATION_AXIS)))
  parallel = len(devices) * 2 * n**3 / _median_seconds(jax.jit(jnp.matmul), stacked, stacked,
                                                       repeats=repeats)
  return max(single, parallel)


def peak_copy_bandwidth(repeats: int, gib: float = 4.0) -> float:
  """Measured device-memory bytes/s (read + written) of `x + 1` over `gib` GiB of bf16."""
  x = jax.random.normal(jax.random.key(0), (int(gib * 2**30) // 2,), jnp.bfloat16)
  return 2 * x.nbytes / _median_seconds(jax.jit(lambda a: a + 1), x, repeats=repeats)


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
  peak_before = peak_matmul_flops(FLAGS.repeats)
  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:chunk_size], sigmas[:chunk_size],
                                  chunk_size=chunk_size, mesh=mesh))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  scores = population.evaluate_population(fn, params, seeds, sigmas, chunk_size=chunk_size,
                                          mesh=mesh)
  seconds = time.perf_counter() - start
  peak = float(np.median([peak_before, peak_matmul_flops(FLAGS.repeats)]))
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
                    "--workdir", tmp], cwd=root, check=True, capture_output=True)
    seconds = time.perf_counter() - start
  return (f"B2: {seconds:.1f} s end to end, 3 regimes incl. pretraining and plots "
          f"(target <= 60 s; reference PyTorch {REFERENCE_B2_SECONDS:.0f} s "
          f"= {REFERENCE_B2_SECONDS / seconds:.1f}x)")


SMOLLM2 = "smollm2-135m-instruct"


def bench_b3() -> str:
  import torch  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import torch_twin  # pylint: disable=g-import-not-at-top
  from thickets_jax.perturb import rebuild_member  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(os.cpu_count())
  loaded = registry.load(SMOLLM2)
  texts = [countdown.prompt(p) for p in countdown.generate(0, FLAGS.prompts)]
  sampling = generate.Sampling(max_new_tokens=FLAGS.new_tokens, ignore_eos=True)
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer, sampling,
                           batch_size=FLAGS.prompts, chat=True, member_axis=FLAGS.member_axis,
                           layer_loop=FLAGS.layer_loop)
  seeds, sigmas = population.draw_candidates(0, FLAGS.members, [1e-3])
  _, mask = gen.encode(texts)
  prompt_tokens = int(mask.sum())
  peak_before = peak_matmul_flops(FLAGS.repeats)
  c = FLAGS.members_per_batch
  start = time.perf_counter()
  list(gen.population_token_ids(seeds[:c], sigmas[:c], texts, members_per_batch=c))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  ours = np.concatenate([ids for _, ids in gen.population_token_ids(
      seeds, sigmas, texts, members_per_batch=c)])
  ours_s = time.perf_counter() - start
  peak = float(np.median([peak_before, peak_matmul_flops(FLAGS.repeats)]))

  ids = [loaded.tokenizer(gen.prompt_text(t), add_special_tokens=False)["input_ids"] for t in texts]
  width = max(len(x) for x in ids)
  input_ids = torch.tensor([[gen.pad_id] * (width - len(x)) + x for x in ids])
  attention = torch.tensor([[0] * (width - len(x)) + [1] * len(x) for x in ids])
  hf = torch_twin.transformers_model(loaded.config, loaded.params)
  hf_s, same_rows = 0.0, 0
  for m, (seed, sigma) in enumerate(zip(seeds, sigmas)):
    member = rebuild_member(loaded.params, int(seed), float(sigma), stacked=generate.STACKED_LEAVES)
    hf.load_state_dict(torch_twin.state_dict(loaded.config, member))  # untimed: HF gets its weights free
    start = time.perf_counter()
    with torch.no_grad():
      out = hf.generate(input_ids, attention_mask=attention, max_new_tokens=FLAGS.new_tokens,
                        min_new_tokens=FLAGS.new_tokens, do_sample=False, pad_token_id=gen.pad_id)
    hf_s += time.perf_counter() - start
    same_rows += int(np.sum(np.all(out[:, width:].numpy() == ours[m], axis=1)))
  flops = FLAGS.members * (prompt_tokens + FLAGS.prompts * FLAGS.new_tokens) * loaded.config.flops_per_token
  rate = flops / ours_s
  logging.info("B3: %d members x %d prompts (%d prompt tokens) x %d new tokens; compile %.1f s; "
               "ours %.2f s/member (perturbation included), HF generate %.2f s/member; "
               "%d/%d rows token-identical to HF; HF %.0f GFLOP/s", FLAGS.members, FLAGS.prompts,
               prompt_tokens, FLAGS.new_tokens, compile_s, ours_s / FLAGS.members,
               hf_s / FLAGS.members, same_rows, FLAGS.members * FLAGS.prompts, flops / hf_s / 1e9)
  return (f"B3: {hf_s / ours_s:.2f}x HF generate ({ours_s:.1f} s vs {hf_s:.1f} s for "
          f"{FLAGS.members} members), {rate / 1e9:.0f} GFLOP/s = {100 * rate / peak:.0f}% of "
          f"measured peak {peak / 1e9:.0f} GFLOP/s")


def b4_child(n: int) -> None:
  """Scores N members on Countdown (4 prompts, 32 tokens) and prints this process's peak RSS."""
  loaded = registry.load(SMOLLM2)
  problems = countdown.generate(1, 4)
  gen = generate.Generator(loaded.config, loaded.params, loaded.tokenizer,
                           generate.Sampling(max_new_tokens=32), batch_size=4, chat=True,
                           member_axis=FLAGS.member_axis)
  seeds, sigmas = population.draw_candidates(0, n, [1e-3])
  scores = []
  for _, texts in gen.generate_population(seeds, sigmas, [countdown.prompt(p) for p in problems],
                                          members_per_batch=FLAGS.members_per_batch):
    scores += [np.mean([countdown.reward(t, p) for t, p in zip(member, problems)]) for member in texts]
  assert len(scores) == n
  print(f"peak_rss_bytes={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", flush=True)


def bench_b4() -> str:
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  peaks = {}
  for n in cli.ints(FLAGS.b4_sizes, "b4_sizes"):
    out = subprocess.run([sys.executable, "-m", "experiments.benchmark", "--bench", "B4",
                          f"--b4_child={n}", f"--members_per_batch={FLAGS.members_per_batch}",
                          f"--member_axis={FLAGS.member_axis}", "--host_devices=1"],
                         cwd=root, check=True, capture_output=True, text=True)
    peaks[n] = int(out.stdout.split("peak_rss_bytes=")[1].split()[0])
  figures = ", ".join(f"{peaks[n] / 2**30:.2f} GiB at N={n}" for n in peaks)
  return (f"B4: peak RSS {figures} (SmolLM2 fp32 weights 0.50 GiB; target <= 3 GB whatever N)")


def random_params(config, key: jax.Array):
  """Random weights of `config`'s shapes and dtype (std 0.02; norm scales 1), made on device."""
  abstract = llm_model.abstract_params(config)
  paths, treedef = jax.tree_util.tree_flatten_with_path(abstract)

  def make(key):
    leaves = [jnp.ones(leaf.shape, leaf.dtype) if path_name(path).endswith("scale") else
              0.02 * jax.random.normal(jax.random.fold_in(key, i), leaf.shape, leaf.dtype)
              for i, (path, leaf) in enumerate(paths)]
    return jax.tree_util.tree_unflatten(treedef, leaves)

  return jax.jit(make)(key)


@dataclasses.dataclass(frozen=True)
class Roofline:
  """Model FLOPs and the fewest device-memory bytes of one member's scoring, by phase."""
  perturb_bytes: float  # read θ, write θ + σε
  prefill_flops: float
  prefill_bytes: float  # weights once, keys/values written
  decode_flops: np.ndarray  # [steps]
  decode_bytes: np.ndarray  # [steps]: weights (the embedding is only gathered) + valid cache

  def seconds(self, flops_rate: float, bandwidth: float) -> dict[str, float]:
    """The floor of each phase: the larger of its FLOP time and its byte time."""
    return {"perturb": self.perturb_bytes / bandwidth,
            "prefill": max(self.prefill_flops / flops_rate, self.prefill_bytes / bandwidth),
            "decode": float(np.sum(np.maximum(self.decode_flops / flops_rate,
                                              self.decode_bytes / bandwidth)))}

  @property
  def flops(self) -> float:
    return self.prefill_flops + float(self.decode_flops.sum())

  @property
  def bytes(self) -> float:
    return self.perturb_bytes + self.prefill_bytes + float(self.decode_bytes.sum())


def b5_roofline(config, params, mask: np.ndarray, new_tokens: int) -> Roofline:
  """Counts for one member generating `new_tokens` after prompts `mask` [rows, bucket]."""
  rows, bucket = mask.shape
  itemsize = jnp.dtype(config.dtype).itemsize
  total = sum(x.nbytes for x in jax.tree.leaves(params))
  embed = config.vocab_size * config.hidden_size * itemsize
  weights = total if config.tie_embeddings else total - embed
  kv_per_token = 2 * config.num_layers * config.num_kv_heads * config.head_dim * itemsize
  steps = np.arange(1, new_tokens)  # the first new token comes out of prefill
  return Roofline(
      perturb_bytes=2 * total,
      prefill_flops=config.flops_per_token * float(mask.sum()),
      prefill_bytes=weights + rows * bucket * kv_per_token,
      decode_flops=np.full(len(steps), config.flops_per_token * rows, np.float64),
      decode_bytes=weights + rows * kv_per_token * (bucket + steps).astype(np.float64))


def bench_b5() -> str:
  entry = registry.MODELS.get(FLAGS.b5_model)
  config = entry.config.replace(dtype=jnp.bfloat16)
  layer_loop = FLAGS.layer_loop or generate.default_layer_loop()
  backend = jax.devices()[0]
  flops_rate = peak_matmul_flops(FLAGS.repeats, n=FLAGS.b5_matmul_size, dtype=jnp.bfloat16)
  bandwidth = peak_copy_bandwidth(FLAGS.repeats, FLAGS.b5_copy_gib)
  params = random_params(config, jax.random.key(0))
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
  fn = population.population_fn(run, member_axis="map", stacked=generate.STACKED_LEAVES)
  seeds, sigmas = population.draw_candidates(0, FLAGS.b5_members + 1, [1e-3])

  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:1], sigmas[:1], chunk_size=1, args=args))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in population.iter_population(fn, params, seeds[1:], sigmas[1:], chunk_size=1, args=args):
    pass
  seconds = (time.perf_counter() - start) / FLAGS.b5_members

  # Phase times, for the breakdown: perturbation alone, prefill (+ 1 token), whole generation.
  perturb = jax.jit(lambda p, seed, sigma: perturb_lib.perturb(
      p, perturb_lib.member_key(seed), sigma, stacked=generate.STACKED_LEAVES))
  phases = {"perturb": _median_seconds(perturb, params, jnp.int32(1), jnp.float32(1e-3),
                                       repeats=3)}
  prefill = jax.jit(functools.partial(run, sampling=dataclasses.replace(sampling, max_new_tokens=1)))
  phases["prefill"] = _median_seconds(prefill, params, *args, repeats=3)
  phases["decode"] = _median_seconds(jax.jit(run), params, *args, repeats=3) - phases["prefill"]

  roof = b5_roofline(config, params, mask, n)
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


def main(argv):
  del argv
  common.setup_devices()
  if FLAGS.b4_child:
    b4_child(FLAGS.b4_child)
    return
  benches = {"B1": bench_b1, "B2": bench_b2, "B3": bench_b3, "B4": bench_b4, "B5": bench_b5}
  if FLAGS.bench not in benches:
    raise InputError(f"unknown --bench {FLAGS.bench!r}; known: {', '.join(benches)}.")
  print(benches[FLAGS.bench](), flush=True)


if __name__ == "__main__":
  cli.run(main)
