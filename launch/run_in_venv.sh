#!/usr/bin/env bash
# Shared by the cluster launchers: a virtual environment with the package and the given JAX
# build, then one experiment. Rerunning the same command resumes from its --workdir.
#   bash launch/run_in_venv.sh VENV JAX_REQUIREMENT EXPERIMENT [flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$1 jax=$2 experiment=$3
shift 3
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e . "$jax"
exec "$venv/bin/python" -m "experiments.$experiment" "$@"
