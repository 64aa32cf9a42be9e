"""Dry runs: a run's generation program compiled ahead of time on abstract inputs.

`report(config)` lowers and compiles the call that generates one chunk of members, exactly as
the run would build it (`chunk.population_program` on the plan's mesh, dtype and member
axis), on `jax.ShapeDtypeStruct`s carrying the plan's shardings, so no weights are read and
nothing is allocated. XLA's `memory_analysis()` then gives the bytes one device holds: the
arguments (the base's shard), the outputs and the temporaries (member copies, noise, KV cache,
activations). The layer loop is always the scan (compile time independent of depth).

Compiled for simulated host (CPU) devices, the figure overstates an accelerator's: the CPU
backend upcasts every bfloat16 dot to float32, keeping a float32 copy of each member's matrices
for the whole decode (its threefry draws fuse into the add that writes the member, as on
accelerators, only because `thickets_jax.cpu_threefry` lowers large draws unrolled).
`corrected_total` removes the upcast: it compiles the generation alone, with the members as
arguments, in float32 (every dot is native there), scales its temporaries to the run's dtype,
and adds the base and member copies, whose size is exact.
"""

import time
from typing import Optional

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P

from thickets_jax.llm import chunk, generate, plan as llm_plan, registry, session, sharding
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.generator import generation_function
from thickets_jax.population import POPULATION_AXIS


def _abstract(shape, dtype, mesh, spec=P()):
  return jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec) if mesh else None)


def _prompt_inputs(config: session.ScoringConfig, sampling: generate.Sampling, mesh) -> tuple:
  """Abstract (prompts, masks, keys, prefix) of one generation batch, replicated."""
  prompt = (1, config.batch_size, llm_plan.PROMPT_TOKENS)
  keys = jax.eval_shape(lambda: generate.prompt_keys(sampling, None, 1, config.batch_size))
  return (_abstract(prompt, jnp.int32, mesh), _abstract(prompt, jnp.bool_, mesh),
          _abstract(keys.shape, keys.dtype, mesh), _abstract((0,), jnp.int32, mesh))


def compile_population(config: session.ScoringConfig, name: str) -> dict:
  """Per-device bytes of the compiled population call of `config` (planned) for model `name`:
  arguments, outputs, temporaries, their total, and the compile time in seconds."""
  shapes = registry.entry(name, config.weights).config.replace(dtype=session.DTYPES[config.dtype])
  sampling = config.sampling()
  run = generation_function(shapes, sampling, config.decoding(), config.batch_size,
                            stop_ids=(0,), pad_id=0, layer_loop="scan")
  program = chunk.population_program(run, config.perturb_spec(),
                                        member_axis=config.member_axis,
                                        factored=config.noise == "lowrank")
  mesh = config.mesh()
  members = config.members_per_batch
  args = (_abstract_params(shapes, mesh),
          _abstract((members,), jnp.int32, mesh, P(POPULATION_AXIS)),
          _abstract((members,), jnp.float32, mesh, P(POPULATION_AXIS)),
          *_prompt_inputs(config, sampling, mesh))
  start = time.perf_counter()
  analysis = program.lower(*args).compile().memory_analysis()
  seconds = time.perf_counter() - start
  out = {"arguments": analysis.argument_size_in_bytes, "outputs": analysis.output_size_in_bytes,
         "temporaries": analysis.temp_size_in_bytes, "aliased": analysis.alias_size_in_bytes}
  out["total"] = out["arguments"] + out["outputs"] + out["temporaries"] - out["aliased"]
  return {**out, "compile_seconds": seconds}


def _abstract_params(shapes, mesh):
  """The parameters as `ShapeDtypeStruct`s, with the sharding table's shardings on a mesh."""
  params = llm_model.abstract_params(shapes)
  if mesh is None:
    return params
  return jax.tree.map(lambda leaf, s: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=s),
                      params, sharding.param_shardings(shapes, mesh))


def _stacked(leaf: jax.ShapeDtypeStruct, axis: int, count: int, mesh) -> jax.ShapeDtypeStruct:
  """`count` members of `leaf` stacked at `axis`, the member axis over the population slots."""
  shape = leaf.shape[:axis] + (count,) + leaf.shape[axis:]
  if mesh is None:
    return jax.ShapeDtypeStruct(shape, leaf.dtype)
  spec = list(leaf.sharding.spec) + [None] * (len(leaf.shape) - len(leaf.sharding.spec))
  spec.insert(axis, POPULATION_AXIS)
  return jax.ShapeDtypeStruct(shape, leaf.dtype, sharding=NamedSharding(mesh, P(*spec)))


def corrected_total(config: session.ScoringConfig, name: str,
                    floor: llm_plan.Footprint) -> Optional[int]:
  """Per-device bytes of the population call with the CPU backend's bf16-upcast buffers removed
  (module docstring); None for factored low-rank members."""
  if config.noise == "lowrank":
    return None
  shapes = registry.entry(name, config.weights).config.replace(dtype=jnp.float32)
  sampling = config.sampling()
  run = generation_function(shapes, sampling, config.decoding(), config.batch_size,
                            stop_ids=(0,), pad_id=0, layer_loop="scan")
  mesh = config.mesh()
  params = _abstract_params(shapes, mesh)
  inputs = _prompt_inputs(config, sampling, mesh)
  if config.member_axis == "vmap":
    axes = chunk.member_axes(params)
    members = {k: jax.tree.map(lambda leaf, a=axes[k]: _stacked(leaf, a, config.members_per_batch,
                                                                 mesh), tree)
               for k, tree in params.items()}
    program = jax.jit(lambda m, *a: run(None, *a, members=chunk.MaterialisedMembers(m)))
  else:
    members, program = params, jax.jit(run)
  temporaries = program.lower(members, *inputs).compile().memory_analysis().temp_size_in_bytes
  scale = jnp.dtype(session.DTYPES[config.dtype]).itemsize / 4
  return floor.weights + floor.members + int(temporaries * scale)


def report(config: session.ScoringConfig) -> str:
  """The plan's line and, per model, the floor and the compiled per-device bytes."""
  lines = [config.plan["summary"]]
  for name in config.model_names():
    planned = config.execution_plan([name])
    compiled = compile_population(config, name)
    lines.append(f"{name}: compiled in {compiled.pop('compile_seconds'):.0f} s")
    lines.append(llm_plan.footprint_table(planned, compiled))
    memory = planned.machine.device_memory
    verdict = ("fits" if planned.fits else "does not fit") if memory else "memory unknown"
    floor = planned.footprint.total
    line = (f"{name}: {verdict}: floor {llm_plan.gib(floor)} per device"
            + (f" of {llm_plan.gib(llm_plan.HEADROOM * memory)} usable" if memory else "")
            + f"; compiled for {jax.default_backend()}: {llm_plan.gib(compiled['total'])} "
            f"({compiled['total'] / floor:.2f}x the floor)")
    if jax.default_backend() == "cpu":
      corrected = corrected_total(config, name, planned.footprint)
      if corrected is not None:
        line += (f", corrected for the CPU backend's bf16 upcast: "
                 f"{llm_plan.gib(corrected)} ({corrected / floor:.2f}x the floor)")
    lines.append(line)
  return "\n".join(lines)

