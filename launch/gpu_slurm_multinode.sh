#!/usr/bin/env bash
# Several GPU nodes under Slurm, one process per node (JAX reads the Slurm environment to find
# its peers). --workdir must be on a filesystem all nodes mount. Submit from the repository root:
#   sbatch launch/gpu_slurm_multinode.sh density --model qwen2.5-32b-instruct --model_parallel 4 \
#       --member_axis vmap --members_per_batch 4 --N 1000 --workdir /shared/$USER/d32b
#SBATCH --job-name=thickets
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=thickets-%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
venv=${VENV:-.venv-gpu} experiment=$1
shift
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"  # once, before the nodes start
"$venv/bin/python" -m pip install -q -e . "jax[cuda12]>=0.10.2,<0.11"
exec srun "$venv/bin/python" -m "experiments.$experiment" "$@" --distributed
