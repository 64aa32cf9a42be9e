#!/usr/bin/env bash
# The GPU checks, in one call of under 10 minutes on one H100/H200: B5 (population scoring on
# random Qwen2.5-7B-shaped bf16 weights against the roofline), P1 (a short bf16 population run
# of the execution plan on random 7B weights: measured peak memory per device against the
# plan's floor, and members per second) and B9 (slot refill against batch decoding on random
# Qwen2.5-1.5B-shaped weights, sampled lengths of mean n/4, same tokens).
# Run from the repository root:
#   bash launch/gpu_check.sh                       # python3 with a JAX GPU backend and the package
#   THICKETS_PYTHON=.venv-gpu/bin/python bash launch/gpu_check.sh
# Each benchmark has its own time limit (B5 240 s, P1 120 s, B9 180 s) and a failing one does
# not stop the next; the script exits 1 if any failed. Each prints its figures; the last line
# of each is `<id>: <figure> (<comparison>)`. B5 runs scanned layers: on an H200 XLA took 2 min
# 44 s to compile its population program with unrolled layers (the GPU default, which pays
# off over a long population), and B5 compiles three more programs for its phase breakdown.
set -uo pipefail
cd "$(dirname "$0")/.."
python=${THICKETS_PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if ! "$python" -c 'import jax, sys; sys.exit(jax.default_backend() != "gpu")'; then
  echo "error: $python has no JAX GPU backend; install jax[cuda12] (e.g. launch/gpu_slurm.sh's environment) or set THICKETS_PYTHON." >&2
  exit 2
fi
"$python" -c 'import jax, flax; print("jax", jax.__version__, "flax", flax.__version__, "devices:", jax.devices())'
failed=()
check() {  # check <seconds> <id> <benchmark flags...>
  local seconds=$1 id=$2
  shift 2
  local start=$SECONDS
  timeout "$seconds" "$python" -m experiments.benchmark --bench "$id" "$@"
  local status=$?
  echo "gpu_check: $id exited $status after $((SECONDS - start)) s (limit $seconds s)"
  [ "$status" -eq 0 ] || failed+=("$id")
}
check 240 B5 --b5_members 2 --repeats 3 --layer_loop scan
check 120 P1 --p1_new_tokens 128
check 180 B9 --b9_random_weights --b9_model qwen2.5-1.5b-instruct --b9_prompts 128 \
  --b9_batch 32 --b9_refill_rows 8 --b9_new_tokens 512 --b9_members 4 --members_per_batch 2 \
  --member_axis vmap --nob9_hf
if [ "${#failed[@]}" -gt 0 ]; then
  echo "gpu_check: failed: ${failed[*]}" >&2
  exit 1
fi
