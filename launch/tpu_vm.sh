#!/usr/bin/env bash
# A single-host Cloud TPU VM (e.g. v4-8, v5litepod-8): members are sharded over its chips
# along the `population` mesh axis. Run on the VM from the repository root:
#   bash launch/tpu_vm.sh signals1d --regime generalization --workdir ~/runs/gen
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-tpu}
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e . "jax[tpu]>=0.10.2,<0.11"
exp=$1; shift
exec "$VENV/bin/python" -m "experiments.$exp" "$@"
