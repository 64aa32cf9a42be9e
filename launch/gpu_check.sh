#!/usr/bin/env bash
# The GPU checks, in one short call (under 10 minutes on one H100/H200): B5 (population scoring
# on random Qwen2.5-7B-shaped bf16 weights against the roofline), P1 (a short bf16
# population run of the execution plan on random 7B weights: measured peak memory per device
# against the plan's floor, and members per second) and B9 (slot refill against batch
# decoding on random Qwen2.5-1.5B-shaped weights, sampled lengths of mean n/4, same tokens).
# Run from the repository root:
#   bash launch/gpu_check.sh                       # python3 with jax[cuda12] and the package
#   THICKETS_PYTHON=.venv-gpu/bin/python bash launch/gpu_check.sh
# Prints each benchmark's figures; the last line of each is `<id>: <figure> (<comparison>)`.
set -euo pipefail
cd "$(dirname "$0")/.."
python=${THICKETS_PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
  echo "error: $python has no JAX GPU backend; install jax[cuda12] (e.g. launch/gpu_slurm.sh's environment) or set THICKETS_PYTHON." >&2
  exit 2
fi
"$python" -c 'import jax; print("devices:", jax.devices())'
timeout 300 "$python" -m experiments.benchmark --bench B5 --b5_members 2 --repeats 3
timeout 200 "$python" -m experiments.benchmark --bench P1 --p1_new_tokens 128
timeout 200 "$python" -m experiments.benchmark --bench B9 --b9_random_weights \
  --b9_model qwen2.5-1.5b-instruct --b9_prompts 128 --b9_batch 32 --b9_refill_rows 8 \
  --b9_new_tokens 512 --b9_members 4 --members_per_batch 2 --member_axis vmap --nob9_hf
