r"""Benchmarks of BENCHMARKS.md, each printing `<id>: <figure> (<comparison>)` last.

  python -m experiments.benchmark --bench B1   # 1D RandOpt post-training vs measured peak
  python -m experiments.benchmark --bench B2   # 1D approximation experiment end to end
  python -m experiments.benchmark --bench B3   # SmolLM2 population generation vs HF generate
  python -m experiments.benchmark --bench B4   # peak RSS of population scoring at two N

Figures are ratios measured in one process (B1, B3: against the machine's fp32 matmul peak,
measured before and after the workload; B3 also against transformers `generate` on the same
members and prompts) or against a recorded peer time (B2). B4 runs one child process per N.
"""

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
from thickets_jax import cli, population
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, registry
from thickets_jax.signals import families, model as signal_model
from thickets_jax.tasks import countdown

BENCHES = ("B1", "B2", "B3", "B4")
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


def peak_matmul_flops(repeats: int, n: int = 2048) -> float:
  """Measured fp32 FLOP/s of n×n @ n×n matmuls (median of `repeats`).

  With several host devices the higher of one matmul on one device and one matmul per device
  at once, so the peak is never understated by how the host is split.
  """
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
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
                           batch_size=FLAGS.prompts, chat=True, member_axis=FLAGS.member_axis)
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


def main(argv):
  del argv
  common.setup_devices()
  if FLAGS.b4_child:
    b4_child(FLAGS.b4_child)
    return
  benches = {"B1": bench_b1, "B2": bench_b2, "B3": bench_b3, "B4": bench_b4}
  if FLAGS.bench not in benches:
    raise InputError(f"unknown --bench {FLAGS.bench!r}; known: {', '.join(benches)}.")
  print(benches[FLAGS.bench](), flush=True)


if __name__ == "__main__":
  cli.run(main)
