"""What every experiment does first: host devices, logging to the workdir, recording its flags."""

import math
import os
import sys
import time
from typing import Optional

import jax
from absl import flags, logging
from jax.sharding import Mesh

from thickets_jax import population, workdir

flags.DEFINE_integer(
    "host_devices", os.cpu_count(),
    "CPU only: split the host into this many XLA devices; population chunks are sharded over "
    "them (mesh axis `population`), so one device's elementwise work overlaps another's matmuls.")


def setup_devices() -> None:
  """Applies --host_devices; call before anything touches a JAX backend."""
  n = flags.FLAGS.host_devices
  if n > 1 and "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={n}").strip()


def population_mesh(chunk_size: int) -> tuple[Optional[Mesh], int]:
  """The population mesh over all devices (None for one) and the chunk rounded up to fit it."""
  devices = jax.devices()
  if len(devices) == 1:
    return None, chunk_size
  return population.population_mesh(devices), math.ceil(chunk_size / len(devices)) * len(devices)


def start(root: str, experiment: str) -> None:
  """Mirrors logs to `root/log.txt` and appends this invocation's flags to `root/flags.json`."""
  workdir.log_to_file(root)
  main_module = sys.modules["__main__"]
  values = {f.name: f.value for f in flags.FLAGS.get_key_flags_for_module(main_module)}
  path = os.path.join(root, "flags.json")
  history = workdir.read_json(path) if os.path.exists(path) else []
  history.append({"experiment": experiment, "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
                  "flags": values})
  workdir.write_json(path, history)
  logging.info("%s: writing to %s", experiment, root)
