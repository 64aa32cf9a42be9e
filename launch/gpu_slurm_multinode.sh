#!/usr/bin/env bash
# Several GPU nodes under Slurm, one process per GPU (what JAX's Slurm detection expects: each
# process takes GPU $SLURM_LOCALID of its node). --workdir must be on a filesystem all nodes
# mount. Submit from the repository root:
#   sbatch launch/gpu_slurm_multinode.sh density --model qwen2.5-32b-instruct --task gsm8k \
#       --N 1000 --data /shared/gsm8k.jsonl --workdir /shared/$USER/d32b
# The plan (bf16, model-parallel degree, members per call) is chosen over all nodes' GPUs; add
# --dry_run to print it without reading weights.
#SBATCH --job-name=thickets
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=thickets-%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
venv=${VENV:-.venv-gpu} experiment=$1
shift
python=${THICKETS_PYTHON:-$venv/bin/python}
if [[ -z "${THICKETS_PYTHON:-}" ]]; then  # once, before the tasks start
  [[ -x "$python" ]] || python3 -m venv "$venv"
  "$python" -m pip install -q -e . "jax[cuda12]>=0.10.2,<0.11"
fi
# --gpu-bind=none: every task sees its node's GPUs and JAX picks the one of its local rank.
exec srun --gpu-bind=none "$python" -m "experiments.$experiment" "$@" --distributed
