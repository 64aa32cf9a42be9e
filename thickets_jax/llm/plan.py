"""The execution plan of a language-model run, chosen from the machine, and its memory floor.

On accelerators a run defaults to bfloat16 weights on a `(population, model)` mesh over every
device of every host. `model_parallel` is the smallest degree that divides the query and KV
heads (a split head costs collective permutes in every layer) and whose per-device footprint
fits in `HEADROOM` of the device memory; the other mesh axis, `population`, holds one member
per slot, so a call generates one member per slot. On CPU the defaults are those the offline
jobs were measured with: float32, one member at a time (`map`), no mesh (CPU hosts of a
multi-host run get the mesh, in float32). A setting given
explicitly is always kept, and a plan that cannot fit is refused in one sentence before any
weights are read.

`Footprint` is the arithmetic floor per device, in bytes:
  weights      the base parameters' shard (matrices in the run's dtype, vectors in float32)
  members      the perturbed copies alive at once: one per member of the device's slot under
               `vmap`, one under `map` (members are built inside the call, never stored)
  noise        the float32 noise of the largest layer of a leaf shard, per member built at once
               (accelerators fuse noise generation into the add; one layer is the margin)
  kv_cache     keys and values of every row: layers × 2 × rows × kv heads × slots × head_dim
  activations  the prefill's widest hidden state (MLP) and the last position's logits
"""

import dataclasses
import math
import re
from typing import Optional

import jax
import numpy as np

from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm import sharding
from thickets_jax.llm.config import ModelConfig
from thickets_jax.population import POPULATION_AXIS
from thickets_jax.tree import path_name

HEADROOM = 0.9  # of a device's memory a plan may fill (XLA workspace, fragmentation)
PROMPT_TOKENS = 256  # prompt tokens per row assumed before prompts are tokenised (dry runs)
CPU_DEFAULTS = {"dtype": "float32", "member_axis": "map", "model_parallel": 0,
                "members_per_batch": 2}
_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str, flag: str = "plan_device_memory") -> int:
  """'80GB' -> 80e9, '16GiB' -> 16 × 2^30 (decimal and binary units, case-insensitive)."""
  match = re.fullmatch(r"\s*([0-9.]+)\s*([a-zA-Z]*)\s*", str(text))
  unit = match and _UNITS.get(match.group(2).lower())
  if not unit:
    raise InputError(f"--{flag} takes a size like 80GB or 16GiB, got {text!r}.")
  value = float(match.group(1)) * unit
  if value <= 0:
    raise InputError(f"--{flag} must be positive, got {text!r}.")
  return int(value)


def gib(n: float) -> str:
  return f"{n / 2**30:.2f} GiB"


@dataclasses.dataclass(frozen=True)
class Machine:
  """Where a run executes: `devices` over `processes` hosts, `device_memory` bytes each (None
  where the backend does not say, e.g. CPU). `simulated`: a hypothetical machine (dry runs)."""
  platform: str
  devices: int
  processes: int = 1
  device_memory: Optional[int] = None
  simulated: bool = False

  @classmethod
  def detect(cls) -> "Machine":
    device = jax.local_devices()[0]
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    memory = (stats or {}).get("bytes_limit")
    return cls(device.platform, jax.device_count(), jax.process_count(),
               int(memory) if memory else None)

  @classmethod
  def hypothetical(cls, devices: int, memory: int,
                   platform: str = "accelerator") -> "Machine":
    if devices <= 0:
      raise InputError(f"--plan_devices must be positive, got {devices}.")
    return cls(platform, devices, 1, memory, simulated=True)

  @property
  def accelerator(self) -> bool:
    return self.platform != "cpu" or self.simulated

  def describe(self) -> str:
    memory = f", {gib(self.device_memory)} each" if self.device_memory else ""
    kind = "simulated " if self.simulated else ""
    return f"{self.devices} {kind}{self.platform} device(s) on {self.processes} host(s){memory}"


@dataclasses.dataclass(frozen=True)
class Footprint:
  """Bytes per device (module docstring)."""
  weights: int
  members: int
  noise: int
  kv_cache: int
  activations: int

  @property
  def total(self) -> int:
    return self.weights + self.members + self.noise + self.kv_cache + self.activations

  def to_json(self) -> dict:
    return {**dataclasses.asdict(self), "total": self.total}


def _shards(name: str, shape: tuple[int, ...], axes: dict[str, int]) -> int:
  spec = sharding.spec_for(name, shape, axes)
  return math.prod(axes[a] for a in spec if a is not None)


def footprint(model: ModelConfig, *, model_parallel: int, member_axis: str,
              members_per_slot: int, rows: int, slots: int,
              prompt_tokens: int = PROMPT_TOKENS, cache_dtype=None) -> Footprint:
  """The arithmetic floor per device of one population call (module docstring).

  Args:
    model: shapes, with the run's dtype. model_parallel: devices per member (0: no mesh).
    members_per_slot: members generated together on one device's population slot.
    rows: prompts per generation batch. slots: KV-cache slots per row (prompt + new tokens).
    cache_dtype: the KV cache's dtype (default: the model's).
  """
  axes = {POPULATION_AXIS: 1, sharding.MODEL_AXIS: max(model_parallel, 1)}
  weights = largest = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(llm_model.abstract_params(model))[0]:
    name = path_name(path)
    shard = leaf.size // _shards(name, leaf.shape, axes)
    weights += shard * np.dtype(leaf.dtype).itemsize
    largest = max(largest, shard // (leaf.shape[0] if re.search(llm_model.STACKED_LEAVES, name)
                                     else 1))
  copies = members_per_slot if member_axis == "vmap" else 1
  itemsize = np.dtype(model.dtype).itemsize
  split = lambda n: n // axes[sharding.MODEL_AXIS] if n % axes[sharding.MODEL_AXIS] == 0 else n
  kv = 2 * model.num_layers * rows * copies * split(model.num_kv_heads) * slots * model.head_dim
  hidden = rows * copies * prompt_tokens * (2 * split(model.intermediate_size) + model.hidden_size)
  logits = rows * copies * split(model.vocab_size) * 4
  return Footprint(weights=weights, members=copies * weights, noise=copies * largest * 4,
                   kv_cache=kv * np.dtype(cache_dtype or model.dtype).itemsize,
                   activations=hidden * itemsize + logits)


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
  """The execution settings of a run and the footprint of its largest model."""
  machine: Machine
  dtype: str
  model_parallel: int
  member_axis: str
  members_per_batch: int
  footprint: Footprint
  model: str
  chosen: tuple[str, ...]  # the settings the plan chose (the others were given)

  @property
  def slots(self) -> int:
    """Members on the population axis of the mesh (1 without a mesh)."""
    return self.machine.devices // self.model_parallel if self.model_parallel else 1

  @property
  def fits(self) -> Optional[bool]:
    memory = self.machine.device_memory
    return None if memory is None else self.footprint.total <= HEADROOM * memory

  def describe(self) -> str:
    """The one line a run prints at its start."""
    mesh = (f"mesh {self.slots} members × {self.model_parallel} model-parallel"
            if self.model_parallel else "no mesh")
    memory = self.machine.device_memory
    fit = "" if memory is None else f" of {gib(HEADROOM * memory)} usable"
    return (f"plan: {self.machine.describe()}; {self.dtype}, {mesh}, member axis "
            f"{self.member_axis}, {self.members_per_batch} members per call; {self.model} "
            f"needs {gib(self.footprint.total)} per device{fit} (chosen: "
            f"{', '.join(self.chosen) or 'nothing, all given'})")

  def to_json(self) -> dict:
    return {"machine": dataclasses.asdict(self.machine), "dtype": self.dtype,
            "model_parallel": self.model_parallel, "member_axis": self.member_axis,
            "members_per_batch": self.members_per_batch, "model": self.model,
            "footprint": self.footprint.to_json(), "fits": self.fits,
            "chosen": list(self.chosen), "headroom": HEADROOM}


def _degrees(machine: Machine, model: ModelConfig) -> list[int]:
  """Model-parallel degrees that divide the devices and every head count, smallest first."""
  return [d for d in range(1, machine.devices + 1) if machine.devices % d == 0
          and model.num_kv_heads % d == 0 and model.num_heads % d == 0]


def choose(models: dict[str, ModelConfig], machine: Machine, *, dtype: Optional[str] = None,
           model_parallel: Optional[int] = None, member_axis: Optional[str] = None,
           members_per_batch: Optional[int] = None, rows: int, slots: int,
           dtypes: dict, accelerator_dtype: str = "bfloat16", cache_dtype=None) -> ExecutionPlan:
  """The plan for `models` (name -> shapes; the largest decides the memory, and the
  model-parallel degree divides every model's heads: one plan serves them all) on `machine`;
  each setting given (not None) is kept. `accelerator_dtype`: the dtype chosen on accelerators
  (runs that train weights keep float32, where small updates survive); `cache_dtype`: the KV
  cache's (default: the model's).

  Raises:
    InputError: a given `model_parallel` that splits heads or devices unevenly, or no plan
      that fits the device memory.
  """
  name, shapes = max(models.items(), key=lambda item: item[1].num_params)
  chosen = tuple(k for k, v in (("dtype", dtype), ("model_parallel", model_parallel),
                                ("member_axis", member_axis),
                                ("members_per_batch", members_per_batch)) if v is None)
  dtype = dtype or (accelerator_dtype if machine.accelerator else CPU_DEFAULTS["dtype"])
  if not machine.accelerator and machine.processes == 1:
    model_parallel = CPU_DEFAULTS["model_parallel"] if model_parallel is None else model_parallel
    member_axis = member_axis or ("vmap" if model_parallel else CPU_DEFAULTS["member_axis"])
    members_per_batch = members_per_batch or CPU_DEFAULTS["members_per_batch"]
  else:  # accelerators, and CPU hosts of a multi-host run: a mesh over every device
    member_axis = member_axis or "vmap"
  shapes = shapes.replace(dtype=dtypes[dtype])

  def plan_for(degree: int) -> ExecutionPlan:
    slots_on_mesh = machine.devices // degree if degree else 1
    per_call = members_per_batch or slots_on_mesh
    per_slot = max(1, per_call // slots_on_mesh)
    use = footprint(shapes, model_parallel=degree, member_axis=member_axis,
                    members_per_slot=per_slot, rows=rows, slots=slots, cache_dtype=cache_dtype)
    return ExecutionPlan(machine, dtype, degree, member_axis, per_call, use, name, chosen)

  degrees = [d for d in _degrees(machine, shapes)
              if all(d in _degrees(machine, m) for m in models.values())]
  if model_parallel is not None:
    if model_parallel and model_parallel not in degrees:
      raise InputError(
          f"--model_parallel {model_parallel} must divide the {machine.devices} devices and "
          + ", ".join(f"{n}'s {m.num_heads} query and {m.num_kv_heads} KV heads"
                      for n, m in models.items())
          + f"; possible: {', '.join(map(str, degrees))}.")
    plan = plan_for(model_parallel)
  else:
    candidates = [plan_for(d) for d in degrees]
    plan = next((p for p in candidates if p.fits is not False), candidates[-1])
  if plan.fits is False:
    others = "" if len(models) == 1 else (
        f" (the degrees every model of {', '.join(models)} admits: "
        f"{', '.join(map(str, degrees))}; a separate run for {name} may fit)")
    raise InputError(
        f"no plan fits: {name} in {dtype} needs {gib(plan.footprint.total)} per device at "
        f"model_parallel {plan.model_parallel} against {gib(HEADROOM * machine.device_memory)} "
        f"usable{others}; use more devices, a smaller --batch_size or --max_new_tokens, or "
        "fewer --members_per_batch.")
  return plan


def footprint_table(plan: ExecutionPlan, compiled: Optional[dict] = None) -> str:
  """The per-device bytes of a plan (and of its compiled program, when given) as a table."""
  lines = [f"{'per device':24s} {'GiB':>9s}"]
  for field, value in plan.footprint.to_json().items():
    lines.append(f"{'floor ' + field:24s} {value / 2**30:9.2f}")
  for field, value in (compiled or {}).items():
    if isinstance(value, (int, float)):
      lines.append(f"{'compiled ' + field:24s} {value / 2**30:9.2f}")
  return "\n".join(lines)

