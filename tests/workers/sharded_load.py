"""One process of a 2-process shard-local load (tests/test_llm_model.py): loads a checkpoint
on a model-parallel mesh spanning both processes, with cross-process gathers forbidden, and
prints what it read and the logits."""

import json
import sys

import jax

jax.config.update("jax_cpu_collectives_implementation", "gloo")
directory, coordinator, process = sys.argv[1], sys.argv[2], int(sys.argv[3])
jax.distributed.initialize(coordinator, 2, process)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position
from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

from thickets_jax.llm import model as M, sharding, weights  # pylint: disable=g-import-not-at-top


def refuse(*args, **kwargs):
  raise AssertionError("a cross-process gather while loading")


multihost_utils.process_allgather = refuse
multihost_utils.assert_equal = refuse
read = {"bytes": 0}
reader = weights._slice_reader  # pylint: disable=protected-access


def counting_reader(*args):
  inner = reader(*args)

  def read_slice(name, index, shape):
    out = inner(name, index, shape)
    read["bytes"] += out.nbytes
    return out
  return read_slice


weights._slice_reader = counting_reader  # pylint: disable=protected-access
config = weights.hf_config(directory, np.float32)
mesh = sharding.make_mesh(model_parallel=2)
params = weights.load_safetensors(directory, config, sharding.leaf_sharding(mesh))
logits = M.forward(config, params, jax.numpy.asarray([[1, 5, 9, 13, 2]]))
print(json.dumps({"bytes": read["bytes"],
                  "logits": np.asarray(jax.jit(lambda x: x, out_shardings=jax.sharding.NamedSharding(
                      mesh, jax.sharding.PartitionSpec()))(logits).addressable_data(0)).tolist()}))
