r"""Configs that declare each setting once, and the command-line flags derived from them.

A config is a frozen dataclass. A field a user may set is declared with `setting`, which
carries its help text (and, where the flag is not the field's name, its flag); the flags of an
experiment are derived from its config:

  @dataclasses.dataclass(frozen=True)
  class ESConfig(configs.Config):
    FLAG_PREFIX: ClassVar[str] = "es_"
    population: int = configs.setting(30, "Members per iteration.")

  configs.define_flags(CompareConfig)          # --N, --es_population, ... with their defaults
  config = configs.from_flags(CompareConfig)   # the config back from the parsed flags

A field whose default is itself a config is a sub-config: its settings become flags named
`<its FLAG_PREFIX><field>` (or the field's own `flag`), with the parent's default instance
giving their defaults, so `--helpfull` shows the defaults a run really uses. A `Config`
validates itself at construction (`validate`), one sentence for the first bad setting.

Why frozen dataclasses and not `ml_collections.ConfigDict`: the configs are typed, hashable
and immutable (a run's identity is computed from them, and `dataclasses.replace` is the only
way to change one), they carry methods (`validate`, `perturb_spec`, …), and their users type
`--N 1000`, not `--config.N=1000`; absl's dataclass flags (`DEFINE_config_dataclass`) would
give the latter and no per-field help.
"""

import dataclasses
import typing
from typing import Any, ClassVar, Iterator, Optional

from absl import flags

from thickets_jax.errors import InputError

flags.disclaim_key_flags()  # the flags `define_flags` defines belong to its caller (--helpshort)


class Config:
  """Base of every config: subclasses are frozen dataclasses, validated at construction."""
  FLAG_PREFIX: ClassVar[str] = ""  # of this config's flags when it is a sub-config

  def __post_init__(self):
    self.validate()

  def validate(self) -> None:
    """Raises `InputError` (one sentence naming the flag and value) for the first bad setting.
    Pure: reads no files."""


def setting(default: Any, help: str, *, flag: Optional[str] = None,  # pylint: disable=redefined-builtin
            choices: Optional[tuple[str, ...]] = None, kw_only: bool = False) -> Any:
  """A config field a user may set: `default`, its `help`, its flag name (default: the field's
  name with the config's `FLAG_PREFIX`) and, for strings, the `choices` it takes. A `kw_only`
  field may be declared in a base class of configs that have fields without defaults."""
  metadata = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None}
  if isinstance(default, (list, dict, set)):
    raise TypeError(f"a setting's default must be immutable, got {default!r}")
  return dataclasses.field(default=default, metadata=metadata, kw_only=kw_only)


@dataclasses.dataclass(frozen=True)
class Flag:
  """One derived flag: its `name`, the `path` of fields to its value, its `kind` (bool, int,
  float, str or tuple), the tuple's element type, default, help and choices."""
  name: str
  path: tuple[str, ...]
  kind: type
  element: Optional[type]
  default: Any
  help: str
  choices: Optional[tuple[str, ...]]


def flag_name(config: Any, field: str) -> str:
  """The flag of `config`'s setting `field` (for messages: '--es_population')."""
  cls = config if isinstance(config, type) else type(config)
  return "--" + (_metadata(cls, field)["flag"] or cls.FLAG_PREFIX + field)


def settings(config: Any, path: tuple[str, ...] = ()) -> Iterator[Flag]:
  """The flags of `config` (a config class, or an instance whose values are the defaults),
  sub-configs' flags included, in declaration order."""
  cls = config if isinstance(config, type) else type(config)
  hints = typing.get_type_hints(cls)
  for field in dataclasses.fields(config):
    default = field.default if config is cls else getattr(config, field.name)
    metadata = _metadata(cls, field.name)
    if metadata is None:
      continue
    if isinstance(default, Config):
      yield from settings(default, path + (field.name,))
      continue
    kind, element = _kind(hints[field.name])
    yield Flag(metadata["flag"] or cls.FLAG_PREFIX + field.name, path + (field.name,), kind,
               element, default, metadata["help"], metadata["choices"])


def _metadata(cls: type, name: str) -> Optional[dict]:
  """The `setting` metadata of field `name`: a subclass that only changes a setting's default
  (`N: int = 32`) keeps the help its base class declared."""
  for base in cls.__mro__:
    fields = {f.name: f for f in dataclasses.fields(base)} if dataclasses.is_dataclass(base) else {}
    if name in fields and "help" in fields[name].metadata:
      return fields[name].metadata
  return None


def _kind(annotation) -> tuple[type, Optional[type]]:
  """(bool | int | float | str | tuple, the tuple's element type) of a field's annotation;
  Optional[X] is X."""
  if typing.get_origin(annotation) is typing.Union:
    annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
  if typing.get_origin(annotation) is tuple:
    return tuple, typing.get_args(annotation)[0]
  if annotation not in (bool, int, float, str):
    raise TypeError(f"a setting cannot be a {annotation!r}")
  return annotation, None


_DEFINE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
           str: flags.DEFINE_string}


def define_flags(config: Any, flag_values: flags.FlagValues = flags.FLAGS, *,
                 shared: bool = False) -> list[Flag]:
  """Defines the flags of `config` (class or default instance), each with its setting's
  default and help; returns them. With `shared`, a flag another config already defined (a
  setting both inherit from one base config) is left as it is."""
  defined = [f for f in settings(config) if not (shared and f.name in flag_values)]
  for flag in defined:
    if flag.kind is tuple:
      default = None if flag.default is None else [str(v) for v in flag.default]
      flags.DEFINE_list(flag.name, default, flag.help, flag_values=flag_values)
    elif flag.choices:
      flags.DEFINE_enum(flag.name, flag.default, flag.choices, flag.help,
                        flag_values=flag_values)
    else:
      _DEFINE[flag.kind](flag.name, flag.default, flag.help, flag_values=flag_values)
  return defined


def from_flags(config_class: type, flag_values: flags.FlagValues = flags.FLAGS,
               base: Any = None, **overrides) -> Any:
  """`config_class` from the parsed flags that `define_flags` derived from it, then `overrides`
  (field name: value) on top. With `base` (a config), the flags given on the command line
  change `base` and the others keep its values. A list flag's items are parsed here (one
  sentence for an item that is not of its type)."""
  values = {}
  for flag in settings(config_class):
    if flag.name not in flag_values or flag.path[0] in overrides:
      continue
    if base is None or flag_values[flag.name].present:
      value = flag_values[flag.name].value
      _nest(values, flag.path, _parse(flag, value) if flag.kind is tuple else value)
  for name, value in values.items():  # a sub-config: its defaults, with the flags' values
    if isinstance(value, dict):
      sub = (config_class.__dataclass_fields__[name].default if base is None
             else getattr(base, name))
      values[name] = dataclasses.replace(sub, **value)
  if base is not None:
    return dataclasses.replace(base, **values, **overrides)
  return config_class(**values, **overrides)


def present(config_class: type, flag_values: flags.FlagValues = flags.FLAGS) -> list[str]:
  """The flags of `config_class` given on the command line."""
  return [f.name for f in settings(config_class)
          if f.name in flag_values and flag_values[f.name].present]


def flat(config: Any) -> dict:
  """The config's fields as a flat dict: top-level fields by name, a sub-config's settings by
  their flag names (how run identities have always recorded them)."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if isinstance(value, Config):
      out.update({f.name: getattr(value, f.path[-1]) for f in settings(value)})
    else:
      out[field.name] = value
  return out


def _nest(values: dict, path: tuple[str, ...], value: Any) -> None:
  for key in path[:-1]:
    values = values.setdefault(key, {})
  values[path[-1]] = value


def _parse(flag: Flag, items) -> Optional[tuple]:
  if items is None:
    return None
  try:
    return tuple(flag.element(v) for v in items)
  except ValueError:
    kind = {int: "integers", float: "numbers"}[flag.element]
    raise InputError(f"--{flag.name} takes {kind}, got {','.join(items)!r}.") from None
