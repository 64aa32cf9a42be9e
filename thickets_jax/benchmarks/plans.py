"""P1: the execution plan's memory floor against the compiled program (CPU: for the host's
simulated devices, corrected for the CPU backend's bf16-upcast buffers) or against
the peak a short bf16 run measures (accelerators)."""

import dataclasses
import time

import jax
import numpy as np

from thickets_jax import configs, population
from thickets_jax.benchmarks.base import check_positive, register
from thickets_jax.llm import chunk, density, dryrun, generate, plan, registry, roofline, session
from thickets_jax.llm import sharding


@dataclasses.dataclass(frozen=True)
class P1Config(configs.Config):
  p1_models: tuple[str, ...] = configs.setting(
      ("qwen2.5-7b-instruct", "qwen2.5-32b-instruct", "olmo-3-7b-instruct"),
      "P1: models planned (accelerators: the first one runs).")
  p1_device_memory: str = configs.setting("80GB", "P1 on CPU: memory of each simulated device.")
  p1_new_tokens: int = configs.setting(128, "P1 on accelerators: new tokens of the short run.")

  def validate(self) -> None:
    check_positive(self, "p1_new_tokens")
    plan.parse_bytes(self.p1_device_memory, "p1_device_memory")
    for model in self.p1_models:
      registry.MODELS.get(model)


def _planned(model: str, machine: plan.Machine, **settings) -> density.DensityConfig:
  """The README's scale-up settings (gsm8k, the reference protocol) planned for `machine`."""
  return density.DensityConfig(models=(model,), task="gsm8k", N=1000, dry_run=True,
                               **settings).planned(machine)


@register("P1", P1Config, "execution plans: compiled (CPU) or measured (GPU/TPU) vs their floor")
def p1(config: P1Config) -> str:
  if jax.default_backend() == "cpu":
    return _compiled(config)
  return _measured(config)


def _compiled(config: P1Config) -> str:
  machine = plan.Machine.hypothetical(jax.device_count(),
                                      plan.parse_bytes(config.p1_device_memory))
  lines = []
  for model in config.p1_models:
    planned = _planned(model, machine)
    floor = planned.execution_plan([model]).footprint
    compiled = dryrun.compile_population(planned, model)["total"]
    corrected = dryrun.corrected_total(planned, model, floor)
    lines.append(f"P1 {model}: {planned.plan['summary']}")
    lines.append(f"P1: {model} floor {floor.total / 2**30:.2f} GiB per device; compiled for CPU "
                 f"{compiled / 2**30:.2f} GiB ({compiled / floor.total:.2f}x); corrected "
                 f"{corrected / 2**30:.2f} GiB = {corrected / floor.total:.2f}x the floor "
                 "(target within 15%)")
  return "\n".join(lines)


def _measured(config: P1Config) -> str:
  """A short bf16 population run of the plan on random weights of the first model: the peak
  device memory against the plan's floor, and members per second."""
  model = config.p1_models[0]
  planned = _planned(model, plan.Machine.detect(), max_new_tokens=config.p1_new_tokens,
                     batch_size=16)
  shapes = registry.MODELS.get(model).config.replace(dtype=session.DTYPES[planned.dtype])
  mesh = planned.mesh()
  params = jax.device_put(roofline.random_params(shapes, jax.random.key(0)),
                          sharding.param_shardings(shapes, mesh))
  sampling = generate.Sampling(max_new_tokens=planned.max_new_tokens, ignore_eos=True)
  run = generate.token_generator(shapes, sampling, stop_ids=(0,), pad_id=0)
  program = chunk.population_program(run, planned.perturb_spec(),
                                     member_axis=planned.member_axis, factored=False)
  rng = np.random.default_rng(0)
  prompt = (1, planned.batch_size, plan.PROMPT_TOKENS)
  args = (rng.integers(1000, shapes.vocab_size - 1000, prompt).astype(np.int32),
          np.ones(prompt, bool), generate.prompt_keys(sampling, None, *prompt[:2]), np.zeros((0,), np.int32))
  per_call = planned.members_per_batch
  seeds, sigmas = population.draw_candidates(0, 3 * per_call, [1e-3])
  list(population.iter_population(program, params, seeds[:per_call], sigmas[:per_call],
                                  chunk_size=per_call, mesh=mesh, args=args))  # compiles
  start = time.perf_counter()
  list(population.iter_population(program, params, seeds[per_call:], sigmas[per_call:],
                                  chunk_size=per_call, mesh=mesh, args=args))
  rate = 2 * per_call / (time.perf_counter() - start)
  floor = planned.execution_plan([model]).footprint.total
  peak = max((d.memory_stats() or {}).get("peak_bytes_in_use", 0) for d in jax.local_devices())
  return (f"P1: {planned.plan['summary']}\nP1: {model} measured peak {peak / 2**30:.2f} GiB per "
          f"device = {peak / floor:.2f}x the plan's floor {floor / 2**30:.2f} GiB (target within "
          f"10%); {rate:.2f} members/s ({planned.batch_size} prompts x "
          f"{planned.max_new_tokens} new tokens each)")
