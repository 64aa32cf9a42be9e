"""Every launch script's command, dry-run: simulated accelerators for the single-host scripts,
and two real processes for the multi-host ones (found through Slurm's variables, as JAX finds
them on a cluster), with stand-ins for `srun` and `gcloud` that start the tasks locally."""

import os
import random
import stat
import subprocess
import sys

import pytest

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Stand-in for srun / for a pod's workers: $TASKS copies of the command on this machine, each
# with the variables Slurm sets for a task (srun's own --options are skipped).
FAKE_TASKS = """#!/usr/bin/env bash
while [[ "$1" == --* ]]; do shift; done
pids=()
for i in $(seq 0 $((TASKS - 1))); do
  SLURM_JOB_ID=$JOB SLURM_STEP_NODELIST=localhost SLURM_NTASKS=$TASKS SLURM_PROCID=$i \\
    SLURM_LOCALID=$i SLURM_STEP_NUM_NODES=1 "$@" > "$LOGS/task$i.out" 2>&1 &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do wait "$p" || rc=$?; done
cat "$LOGS"/task*.out
exit $rc
"""
FAKE_GCLOUD = """#!/usr/bin/env bash
echo "gcloud $*" > "$LOGS/gcloud_args"
while [[ "$1" != --command ]]; do shift; done
exec srun bash -c "$2"
"""


def _script(directory, name, text):
  path = directory / name
  path.write_text(text)
  path.chmod(path.stat().st_mode | stat.S_IEXEC)


def _env(tmp_path, **more):
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir(exist_ok=True)
  _script(bin_dir, "srun", FAKE_TASKS)
  _script(bin_dir, "gcloud", FAKE_GCLOUD)
  (tmp_path / "logs").mkdir(exist_ok=True)
  env = toys.child_env()
  env.update(PATH=f"{bin_dir}:{env['PATH']}", THICKETS_PYTHON=sys.executable, TASKS="2",
             JOB=str(random.randrange(1, 4000)), LOGS=str(tmp_path / "logs"), **more)
  return env


def _launch(script, env, *args):
  out = subprocess.run(["bash", os.path.join(ROOT, "launch", script), *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
  return out.stdout


SCALE_UP = ("density", "--model", "qwen2.5-7b-instruct", "--task", "gsm8k", "--N", "1000",
            "--dry_run")


@pytest.mark.parametrize("script, memory, mesh", [
    ("gpu_slurm.sh", "80GB", "mesh 8 members × 1 model-parallel"),
    ("tpu_vm.sh", "16GiB", "mesh 2 members × 4 model-parallel")])
def test_single_host_launchers_plan_bf16_over_every_device(tmp_path, script, memory, mesh):
  out = _launch(script, _env(tmp_path), *SCALE_UP, "--plan_devices", "8",
                "--plan_device_memory", memory)
  assert f"bfloat16, {mesh}, member axis vmap" in out and ": fits: floor" in out


def test_multinode_slurm_launcher_runs_one_process_per_device_over_both(tmp_path, tiny_weights):
  """Two tasks with Slurm's variables and no coordinator given: JAX's Slurm detection joins
  them, and the plan spans both processes' devices (the launcher's documented layout)."""
  env = _env(tmp_path)
  out = _launch("gpu_slurm_multinode.sh", env, "density", "--model", "tiny-random-llama",
                "--weights", tiny_weights, "--task", "countdown", "--host_devices", "1",
                "--dry_run")
  assert "plan: 2 cpu device(s) on 2 host(s); float32, mesh 2 members × 1 model-parallel" in out
  assert out.count("plan: ") == 1  # process 0 prints


def test_tpu_pod_launcher_runs_its_command_on_every_worker(tmp_path, tiny_weights):
  home = tmp_path / "home"
  home.mkdir()
  os.symlink(ROOT, home / "thickets_jax")  # the repository at ~/thickets_jax on every worker
  env = _env(tmp_path, HOME=str(home), TPU="pod", ZONE="us-central2-b")
  out = _launch("tpu_pod.sh", env, "density", "--model", "tiny-random-llama", "--weights",
                tiny_weights, "--task", "countdown", "--host_devices", "1", "--dry_run")
  with open(tmp_path / "logs" / "gcloud_args") as f:
    assert "ssh pod --zone us-central2-b --worker=all" in f.read()
  assert "plan: 2 cpu device(s) on 2 host(s)" in out
