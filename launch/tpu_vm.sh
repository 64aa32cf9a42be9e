#!/usr/bin/env bash
# A single-host Cloud TPU VM (e.g. v4-8, v5litepod-8). Run on the VM from the repository root:
#   bash launch/tpu_vm.sh density --model qwen2.5-7b-instruct --task gsm8k --N 1000 \
#       --data ~/gsm8k.jsonl --workdir ~/runs/d7b
# The plan puts bf16 weights on a mesh over every chip, split over as many chips per member as
# the memory needs (v5e-8, 16 GiB a chip: 4 per member at 7B); --dry_run prints it.
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash launch/run_in_venv.sh "${VENV:-.venv-tpu}" "jax[tpu]>=0.10.2,<0.11" "$@"
