"""Runs one entry point on many command lines in one process (tests/test_bad_input.py).

  python tests/workers/probe.py EXPERIMENT < cases.json   # [[arg, ...], ...]

Prints one JSON line per command line: its exit status ("traceback" for an exception that
escaped), and what it wrote to stdout and stderr. The flags are reset between command lines.
"""

import contextlib
import importlib
import io
import json
import sys
import traceback

from absl import flags

from thickets_jax import cli

name = sys.argv[1]
cases = json.load(sys.stdin)
module = importlib.import_module(f"experiments.{name}")
for argv in cases:
  flags.FLAGS.unparse_flags()
  out, err = io.StringIO(), io.StringIO()
  sys.argv = [name, *argv]
  with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
      cli.run(module.main)
      status = 0
    except SystemExit as e:
      status = e.code if isinstance(e.code, int) else 1
    except Exception:  # pylint: disable=broad-except
      traceback.print_exc()
      status = "traceback"
  print(json.dumps({"argv": argv, "status": status, "stdout": out.getvalue(),
                    "stderr": err.getvalue()}), flush=True)
