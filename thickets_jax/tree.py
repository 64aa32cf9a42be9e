"""Names for pytree leaves: the path strings that noise indices, regexes and sharding rules use."""

from typing import Any

import jax

PyTree = Any


def path_name(path) -> str:
  """'layers/attn/q/kernel' for a pytree key path."""
  parts = []
  for entry in path:
    for attr in ("key", "name", "idx"):
      if hasattr(entry, attr):
        parts.append(str(getattr(entry, attr)))
        break
    else:
      parts.append(str(entry))
  return "/".join(parts)


def leaf_names(tree: PyTree) -> list[str]:
  """Path names of the leaves of `tree`, in `jax.tree` flattening order."""
  return [path_name(p) for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def stable_leaf_indices(tree: PyTree) -> list[int]:
  """Each leaf's index in the sorted list of path names: independent of dict insertion order."""
  names = leaf_names(tree)
  rank = {name: i for i, name in enumerate(sorted(names))}
  return [rank[name] for name in names]
