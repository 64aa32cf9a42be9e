#!/usr/bin/env bash
# A single-host Cloud TPU VM (e.g. v4-8, v5litepod-8). Run on the VM from the repository root:
#   bash launch/tpu_vm.sh density --model qwen2.5-7b-instruct --member_axis vmap --workdir ~/runs/d7b
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash launch/run_in_venv.sh "${VENV:-.venv-tpu}" "jax[tpu]>=0.10.2,<0.11" "$@"
