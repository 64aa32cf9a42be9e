"""Where each parameter lives on a `(population, model)` mesh: one table of partition rules.

`model` splits the large matrices Megatron-style (column-parallel q/k/v/gate/up and the vocab,
row-parallel o/down); norms are replicated. `population` is left to the member axis of a chunk.
A rule's spec names the axes of the leaf as stored (stacked leaves lead with the layer axis).
With `jax_threefry_partitionable` on, perturbing a sharded leaf draws only the local shard's
noise and gives the same bits as on one device.
"""

import re
from typing import Mapping, Optional, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from thickets_jax.errors import InputError
from thickets_jax.llm import model as llm_model
from thickets_jax.llm.config import ModelConfig
from thickets_jax.tree import path_name
from thickets_jax.population import POPULATION_AXIS

MODEL_AXIS = "model"
PARTITION_RULES = (
    (r"^embed/embedding$", P(MODEL_AXIS, None)),          # [vocab, d]
    (r"^lm_head/kernel$", P(None, MODEL_AXIS)),           # [d, vocab]
    (r"^layers/attn/[qkv]/kernel$", P(None, None, MODEL_AXIS)),   # [layers, d, heads·hd]
    (r"^layers/attn/[qkv]/bias$", P(None, MODEL_AXIS)),   # [layers, heads·hd]
    (r"^layers/attn/o/kernel$", P(None, MODEL_AXIS, None)),       # [layers, heads·hd, d]
    (r"^layers/mlp/(gate|up)/kernel$", P(None, None, MODEL_AXIS)),  # [layers, d, mlp]
    (r"^layers/mlp/down/kernel$", P(None, MODEL_AXIS, None)),       # [layers, mlp, d]
    (r".*", P()),                                         # norms: replicated
)


def make_mesh(model_parallel: int, devices: Optional[Sequence[jax.Device]] = None) -> Mesh:
  """A `(population, model)` mesh: `model_parallel` devices per member, the rest over members."""
  devices = list(jax.devices() if devices is None else devices)
  if model_parallel <= 0 or len(devices) % model_parallel:
    raise InputError(f"--model_parallel {model_parallel} must divide the {len(devices)} devices.")
  grid = np.asarray(devices).reshape(len(devices) // model_parallel, model_parallel)
  return Mesh(grid, (POPULATION_AXIS, MODEL_AXIS))


def spec_for(name: str, shape: tuple[int, ...], axes: Mapping[str, int]) -> P:
  """The first matching rule's spec for a leaf on a mesh of these axis sizes (`mesh.shape`),
  dropped to replication where the axis does not divide the leaf."""
  spec = next(spec for pattern, spec in PARTITION_RULES if re.search(pattern, name))
  for axis, size in zip(spec, shape):
    if axis is not None and size % axes[axis]:
      return P()
  return spec


def param_shardings(config: ModelConfig, mesh: Mesh):
  """A tree of `NamedSharding`s matching the model's parameters."""
  abstract = llm_model.abstract_params(config)
  return jax.tree_util.tree_map_with_path(
      lambda path, leaf: NamedSharding(mesh, spec_for(path_name(path), leaf.shape, mesh.shape)), abstract)


def leaf_sharding(mesh: Mesh):
  """`(leaf name, shape) -> NamedSharding` by the table: the loaders' `sharding_of`."""
  return lambda name, shape: NamedSharding(mesh, spec_for(name, shape, mesh.shape))
