#!/usr/bin/env bash
# One GPU node under Slurm, one process over all its GPUs: the execution plan puts bf16 weights
# on a mesh over every GPU (see docs/scale.md; add --dry_run to print it). Submit from the
# repository root:
#   sbatch launch/gpu_slurm.sh density --model qwen2.5-7b-instruct --task gsm8k --N 1000 \
#       --data /data/gsm8k.jsonl --workdir /scratch/$USER/d7b
# A preempted job can simply be requeued: the same flags resume from --workdir.
#SBATCH --job-name=thickets
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --output=thickets-%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
exec bash launch/run_in_venv.sh "${VENV:-.venv-gpu}" "jax[cuda12]>=0.10.2,<0.11" "$@"
