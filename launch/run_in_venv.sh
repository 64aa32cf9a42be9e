#!/usr/bin/env bash
# Shared by the cluster launchers: a virtual environment with the package and the given JAX
# build, then one experiment. Rerunning the same command resumes from its --workdir.
#   bash launch/run_in_venv.sh VENV JAX_REQUIREMENT EXPERIMENT [flags...]
# THICKETS_PYTHON=/path/to/python skips the set-up and runs with that interpreter (a prepared
# image, or the tests).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1 jax=$2 experiment=$3
shift 3
python=${THICKETS_PYTHON:-$venv/bin/python}
if [[ -z "${THICKETS_PYTHON:-}" ]]; then
  [[ -x "$python" ]] || python3 -m venv "$venv"
  "$python" -m pip install -q --upgrade pip
  "$python" -m pip install -q -e . "$jax"
fi
exec "$python" -m "experiments.$experiment" "$@"
