#!/usr/bin/env bash
# A multi-host Cloud TPU pod slice (e.g. v4-32): the same command on every worker, from your
# machine with gcloud. The repository must be at ~/thickets_jax on every worker, and --workdir
# on a filesystem they all mount (process 0 writes; every process reads it to resume):
#   TPU=my-pod ZONE=us-central2-b bash launch/tpu_pod.sh density --model qwen2.5-32b-instruct \
#       --task gsm8k --N 1000 --data /mnt/shared/gsm8k.jsonl --workdir /mnt/shared/d32b
# The plan spans every chip of every worker; weights are read shard by shard on each worker.
set -euo pipefail
: "${TPU:?set TPU to the pod slice name}" "${ZONE:?set ZONE to its zone}"
command="cd ~/thickets_jax && bash launch/tpu_vm.sh $(printf '%q ' "$@") --distributed"
exec gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" --worker=all --command "$command"
