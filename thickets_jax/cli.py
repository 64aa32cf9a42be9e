"""Entry-point plumbing shared by `experiments/*`: bad input exits with one sentence."""

import errno
import logging as std_logging
import sys
from typing import Callable, Sequence

from absl import app, flags

from thickets_jax.errors import InputError


def run(main: Callable[[Sequence[str]], None]) -> None:
  """`app.run(main)`, turning an `InputError`, a flag absl cannot parse or a full disk into
  `error: <sentence>` and exit status 2; `--help`/`--helpfull` exit 0. JAX's note that it found
  no TPU runtime (INFO, on every GPU and CPU machine) is kept off stderr."""
  std_logging.getLogger("jax._src.xla_bridge").setLevel(std_logging.WARNING)

  def checked(argv):
    if len(argv) > 1:
      _fail(f"unexpected arguments {' '.join(argv[1:])!r}; every option is a --flag.")
    try:
      main(argv)
    except InputError as e:
      _fail(str(e))
    except OSError as e:
      if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise
      _fail(f"the disk is full (writing {e.filename or 'a file'}); free some space and rerun "
            "the same command: the workdir resumes where it stopped.")
  app.run(checked, flags_parser=_parse_flags)


_HELP = ("--help", "--helpshort", "--helpfull", "--helpxml", "-?")


def _parse_flags(argv: Sequence[str]) -> list[str]:
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    _fail(f"{str(e).rstrip('.')}; see --helpfull.")
  except SystemExit as e:  # absl prints the help asked for, then exits 1
    if e.code == 1 and any(a.split("=")[0] in _HELP for a in argv[1:]):
      sys.exit(0)
    raise


def _fail(sentence: str) -> None:
  print(f"error: {sentence}", file=sys.stderr)
  sys.exit(2)


def ints(values: Sequence[str], flag: str) -> tuple[int, ...]:
  try:
    return tuple(int(v) for v in values)
  except ValueError:
    raise InputError(f"--{flag} takes integers, got {','.join(values)!r}.") from None


def floats(values: Sequence[str], flag: str) -> tuple[float, ...]:
  try:
    return tuple(float(v) for v in values)
  except ValueError:
    raise InputError(f"--{flag} takes numbers, got {','.join(values)!r}.") from None


def int_ranges(text: str, flag: str) -> tuple[int, ...]:
  """'0-4' -> (0, 1, 2, 3, 4); '0,3,7' -> (0, 3, 7); '0-2,9' -> (0, 1, 2, 9). Distinct, in order."""
  values = []
  try:
    for part in text.split(","):
      first, _, last = part.strip().partition("-")
      values += range(int(first), int(last) + 1) if last else [int(first)]
  except ValueError:
    raise InputError(f"--{flag} takes integers and ranges like 0-4 or 0,3,7, got {text!r}.") from None
  if not values or len(set(values)) != len(values):
    raise InputError(f"--{flag} must name distinct integers, got {text!r}.")
  return tuple(values)
