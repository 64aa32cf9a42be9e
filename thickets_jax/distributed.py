"""Multi-host runs (TPU pods, GPU clusters): one process per host, all running one program.

Every process executes the same host code and the same compiled calls (SPMD). Population chunks
are sharded over every host's devices and their outputs gathered to all processes (`to_host`),
so every process holds every score; only process 0 writes files (`is_writer`). The workdir must
therefore be a filesystem all hosts see: resuming reads it on each of them.
"""

import os
from typing import Any, Optional, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils


def initialize(coordinator: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None,
               local_device_ids: Optional[Sequence[int]] = None) -> None:
  """`jax.distributed.initialize`, before any computation. Arguments left None are detected
  (Cloud TPU pods, Slurm, Open MPI); CPU processes exchange data over gloo.

  Under Slurm JAX gives each process the GPU of its local rank (`SLURM_LOCALID`): right for one
  process per GPU that sees all of its node's GPUs. Where the scheduler has already bound one
  GPU to the process (`CUDA_VISIBLE_DEVICES` lists one), that GPU is its device 0 instead.
  """
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
  if local_device_ids is None and visible and "," not in visible:
    local_device_ids = [0]
  jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes,
                             process_id=process_id, local_device_ids=local_device_ids)


def is_writer() -> bool:
  """Whether this process writes results, logs and plots (process 0 only)."""
  return jax.process_index() == 0


def to_host(tree: Any) -> Any:
  """NumPy copies of a pytree of arrays; arrays spread over other hosts are gathered first."""
  def fetch(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)
  return jax.tree.map(fetch, tree)
