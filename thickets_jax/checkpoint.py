"""orbax checkpoints: pretrained bases (a resumed run reuses the exact bits) and the state of a
training run (ES, GRPO) that resumes where it was killed."""

import os
from typing import Any, Callable, Optional

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


class TrainingCheckpoints:
  """Orbax checkpoints of a training run's state (params, optimiser state, step, RNG...).

  Saves are synchronous, so a step whose checkpoint exists is complete on disk whatever kills
  the process afterwards; orbax writes each step to a temporary directory and renames it, so a
  kill mid-save leaves the previous checkpoint as the latest. The last `keep` are kept.
  """

  def __init__(self, directory: str, keep: int = 2):
    options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

  def latest_step(self):
    return self._manager.latest_step()

  def save(self, step: int, state: PyTree) -> None:
    self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

  def restore(self, step: int, like: PyTree) -> PyTree:
    """The state saved at `step`, in the structure, shapes and dtypes of `like`."""
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
    return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))

  def close(self) -> None:
    self._manager.close()


def resume(checkpoints: Optional[TrainingCheckpoints], state: PyTree) -> PyTree:
  """`state` as the latest checkpoint holds it; as given without checkpoints or before any."""
  done = checkpoints.latest_step() if checkpoints is not None else None
  return state if done is None else checkpoints.restore(done, state)


def save_when_due(checkpoints: Optional[TrainingCheckpoints], done: int, total: int, every: int,
                  state: PyTree) -> None:
  """Saves the state after `done` of `total` steps when `done` is a multiple of `every` or the
  last step (nothing without checkpoints)."""
  if checkpoints is not None and (done % every == 0 or done == total):
    checkpoints.save(done, state)
