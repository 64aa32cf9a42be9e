#!/usr/bin/env bash
# One GPU node under Slurm. Submit from the repository root:
#   sbatch launch/gpu_slurm.sh signals1d --regime generalization --workdir /scratch/$USER/gen
#SBATCH --job-name=thickets
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --output=thickets-%j.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
VENV=${VENV:-.venv-gpu}
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e . "jax[cuda12]>=0.10.2,<0.11"
exp=$1; shift
# Rerunning the same command resumes from --workdir, so a preempted job can simply be requeued.
exec "$VENV/bin/python" -m "experiments.$exp" "$@"
