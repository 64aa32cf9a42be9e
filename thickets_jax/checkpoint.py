"""Base-parameter checkpoints with orbax, so a resumed run reuses the exact pretrained bits."""

import os
from typing import Any, Callable

import jax
import orbax.checkpoint as ocp

PyTree = Any


def save(path: str, params: PyTree) -> None:
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(path), params)


def restore(path: str, like: PyTree) -> PyTree:
  """Restores into the shapes/dtypes of `like` (arrays or `jax.ShapeDtypeStruct`s)."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), like)
  with ocp.StandardCheckpointer() as checkpointer:
    return checkpointer.restore(os.path.abspath(path), abstract)


def cached(path: str, like: PyTree, build: Callable[[], PyTree]) -> PyTree:
  """Restores `path` if a checkpoint is there, else builds the params and saves them."""
  if os.path.exists(path):
    return restore(path, like)
  params = build()
  save(path, params)
  return params
