#!/usr/bin/env bash
# One GPU node under Slurm. Submit from the repository root:
#   sbatch launch/gpu_slurm.sh density --model qwen2.5-7b-instruct --N 1000 --workdir /scratch/$USER/d7b
# A preempted job can simply be requeued: the same flags resume from --workdir.
#SBATCH --job-name=thickets
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=thickets-%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
exec bash launch/run_in_venv.sh "${VENV:-.venv-gpu}" "jax[cuda12]>=0.10.2,<0.11" "$@"
