"""Small name -> entry registries: `--task countdown`, `--family sinusoid`, `--regime thicket`."""

from typing import Callable, Generic, Iterator, TypeVar

from thickets_jax.errors import InputError

T = TypeVar("T")


class Registry(Generic[T]):
  """A named table of entries; unknown names fail with one sentence listing the known ones."""

  def __init__(self, kind: str):
    self.kind = kind
    self._entries: dict[str, T] = {}

  def register(self, name: str) -> Callable[[T], T]:
    def add(entry: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.kind} {name!r} is registered twice")
      self._entries[name] = entry
      return entry
    return add

  def get(self, name: str) -> T:
    if name not in self._entries:
      raise InputError(
          f"unknown {self.kind} {name!r}; known: {', '.join(sorted(self._entries))}.")
    return self._entries[name]

  def __contains__(self, name: str) -> bool:
    return name in self._entries

  def __iter__(self) -> Iterator[str]:
    return iter(self._entries)

  def names(self) -> list[str]:
    return list(self._entries)
