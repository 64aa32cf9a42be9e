"""What every experiment does first: host devices, logging to the workdir, recording its flags."""

import os
import sys

from absl import flags

from thickets_jax import distributed
from thickets_jax.errors import InputError

flags.DEFINE_integer(
    "host_devices", os.cpu_count(),
    "CPU only: split the host into this many XLA devices; population chunks are sharded over "
    "them (mesh axis `population`), so one device's elementwise work overlaps another's matmuls.")


flags.DEFINE_bool(
    "distributed", False,
    "Multi-host (TPU pod, GPU cluster): run the same command on every host; chunks of members "
    "are sharded over all hosts' devices and process 0 writes. --workdir must be shared.")
flags.DEFINE_string("coordinator", None, "--distributed: host:port of process 0 "
                    "(default: detected on Cloud TPU pods, SLURM and Open MPI).")
flags.DEFINE_integer("num_processes", None, "--distributed: processes in all (default: detected).")
flags.DEFINE_integer("process_id", None, "--distributed: this process's index (default: detected).")
flags.DEFINE_list("local_device_ids", None, "--distributed: this process's accelerators, e.g. "
                  "0,1,2,3 (default: detected; under Slurm the GPU of the local rank).")


def setup_devices(multi_host: bool = False) -> None:
  """Applies --host_devices and --distributed; call before anything touches a JAX backend.

  Args:
    multi_host: whether the calling experiment supports --distributed.
  """
  n = flags.FLAGS.host_devices
  if n is None or n < 1:
    raise InputError(f"--host_devices must be at least 1, got {n}.")
  if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()
  if flags.FLAGS.distributed:
    if not multi_host:
      raise InputError("--distributed is supported by the language-model experiments "
                       "(density, randopt, discordance).")
    ids = flags.FLAGS.local_device_ids
    try:
      ids = None if ids is None else [int(i) for i in ids]
    except ValueError:
      raise InputError(f"--local_device_ids takes integers, got {','.join(ids)!r}.") from None
    distributed.initialize(flags.FLAGS.coordinator, flags.FLAGS.num_processes,
                           flags.FLAGS.process_id, ids)


def key_flag_values() -> dict:
  """The flags the running experiment defines, as set: what its `config.json` entry records."""
  main_module = sys.modules["__main__"]
  return {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(main_module)}
