"""B5 (GPU/TPU): population generation on random bf16 weights of a registry model's shapes
against the roofline of the accelerator's measured bf16 matmul rate and copy bandwidth."""

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from thickets_jax import bench, configs, population
from thickets_jax.benchmarks.base import LayerLoop, Repeats, check_positive, register
from thickets_jax.errors import InputError
from thickets_jax.llm import generate, model as llm_model, registry, roofline
from thickets_jax.perturb import PerturbSpec, perturb_member


@dataclasses.dataclass(frozen=True)
class B5Config(Repeats, LayerLoop):
  b5_model: str = configs.setting("qwen2.5-7b",
                                  "B5: registry model whose shapes get random weights.")
  b5_members: int = configs.setting(4, "B5: perturbed members timed (after one warm-up member).")
  b5_prompts: int = configs.setting(128, "B5: prompts per member (one batch).")
  b5_prompt_len: int = configs.setting(
      128, "B5: prompt bucket; real lengths are drawn in [3/4, 1] of it.")
  b5_new_tokens: int = configs.setting(256, "B5: exactly this many new tokens per prompt.")
  b5_matmul_size: int = configs.setting(
      8192, "B5: n of the n×n bf16 matmuls that measure the peak.")
  b5_copy_gib: float = configs.setting(4.0, "B5: GiB copied to measure device-memory bandwidth.")

  def validate(self) -> None:
    super().validate()
    check_positive(self, "b5_members", "b5_prompts", "b5_prompt_len", "b5_new_tokens",
                   "b5_matmul_size")
    if not self.b5_copy_gib > 0:
      raise InputError(f"--b5_copy_gib must be positive, got {self.b5_copy_gib}.")
    registry.MODELS.get(self.b5_model)


@register("B5", B5Config, "GPU/TPU: a registry model's shapes vs the roofline")
def b5(config: B5Config) -> str:
  shapes = registry.MODELS.get(config.b5_model).config.replace(dtype=jnp.bfloat16)
  layer_loop = config.layer_loop or generate.default_layer_loop()
  backend = jax.devices()[0]
  flops_rate = bench.peak_matmul_flops(config.repeats, n=config.b5_matmul_size,
                                       dtype=jnp.bfloat16)
  bandwidth = bench.peak_copy_bandwidth(config.repeats, config.b5_copy_gib)
  params = roofline.random_params(shapes, jax.random.key(0))
  rng = np.random.default_rng(0)
  rows, bucket, n = config.b5_prompts, config.b5_prompt_len, config.b5_new_tokens
  lengths = rng.integers(3 * bucket // 4, bucket + 1, rows)
  mask = np.arange(bucket)[None, :] >= (bucket - lengths)[:, None]
  tokens = np.where(mask, rng.integers(1000, shapes.vocab_size - 1000, (rows, bucket)), 0)
  sampling = generate.Sampling(max_new_tokens=n, ignore_eos=True)
  args = (tokens[None].astype(np.int32), mask[None], generate.prompt_keys(sampling, None, 1, rows))
  run = lambda p, prompts, masks, keys, sampling=sampling: generate.generate_batches(
      shapes, p, prompts, masks, keys, sampling=sampling, stop_ids=(0,), pad_id=0,
      layer_loop=layer_loop)
  spec = PerturbSpec(stacked=llm_model.STACKED_LEAVES)
  # One member per call under vmap, the execution plan's choice on one device. Under lax.map
  # the unrolled layers took XLA 2 min 52 s to compile on an H200, where P1's 7B program,
  # unrolled under vmap, compiled and ran 3 members in 46 s.
  fn = population.population_fn(run, member_axis="vmap", spec=spec)
  seeds, sigmas = population.draw_candidates(0, config.b5_members + 1, [1e-3])

  start = time.perf_counter()
  list(population.iter_population(fn, params, seeds[:1], sigmas[:1], chunk_size=1, args=args))
  compile_s = time.perf_counter() - start
  start = time.perf_counter()
  for _ in population.iter_population(fn, params, seeds[1:], sigmas[1:], chunk_size=1,
                                      args=args):
    pass
  seconds = (time.perf_counter() - start) / config.b5_members

  # Phase times, for the breakdown: perturbation alone, prefill (+ 1 token), whole generation.
  perturb = jax.jit(lambda p, seed, sigma: perturb_member(p, seed, sigma, spec))
  phases = {"perturb": bench.median_seconds(perturb, params, jnp.int32(1), jnp.float32(1e-3),
                                            repeats=3)}
  prefill = jax.jit(functools.partial(
      run, sampling=dataclasses.replace(sampling, max_new_tokens=1)))
  phases["prefill"] = bench.median_seconds(prefill, params, *args, repeats=3)
  phases["decode"] = (bench.median_seconds(jax.jit(run), params, *args, repeats=3)
                      - phases["prefill"])

  roof = roofline.roofline(shapes, params, mask, n)
  floors = roof.seconds(flops_rate, bandwidth)
  for phase, floor in floors.items():
    logging.info("B5 %-8s %8.1f ms, roofline floor %8.1f ms (%3.0f%%)", phase,
                 1e3 * phases[phase], 1e3 * floor, 100 * floor / phases[phase])
  logging.info("B5: %s layers; %s on %s; %d members x %d prompts (bucket %d, %d real tokens) x "
               "%d new tokens; compile %.1f s; %.2f s per member; measured %.0f TFLOP/s bf16 "
               "matmul, %.2f TB/s copy", layer_loop, config.b5_model, backend.device_kind,
               config.b5_members, rows, bucket, int(mask.sum()), n, compile_s, seconds,
               flops_rate / 1e12, bandwidth / 1e12)
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
