"""Execution plans: chosen from the machine, refused when they cannot fit, and dry runs that
compile the real programs for 8 simulated accelerators on abstract 7B and 32B inputs."""

import os
import re
import subprocess
import sys

import jax.numpy as jnp
import pytest

from thickets_jax.errors import InputError
from thickets_jax.llm import density, discordance, plan, randopt, registry, session

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPU8 = plan.Machine.hypothetical(8, plan.parse_bytes("80GB"))
SHAPES = lambda name: {name: registry.MODELS.get(name).config}
PROTOCOL = dict(rows=16, slots=plan.PROMPT_TOKENS + 1024, dtypes=session.DTYPES)


def test_sizes_parse_in_decimal_and_binary_units():
  assert plan.parse_bytes("80GB") == 80 * 10**9
  assert plan.parse_bytes("16GiB") == 16 * 2**30
  assert plan.parse_bytes("1.5 tb") == 1.5e12
  for bad in ("lots", "-3GB", "80 parsecs"):
    with pytest.raises(InputError, match="takes a size like 80GB"):
      plan.parse_bytes(bad)
  with pytest.raises(InputError, match="must be positive"):
    plan.parse_bytes("0GB")


def test_cpu_keeps_the_offline_defaults_and_a_multi_host_cpu_run_gets_a_mesh():
  one_host = plan.choose(SHAPES("smollm2-135m-instruct"), plan.Machine("cpu", 2), **PROTOCOL)
  assert (one_host.dtype, one_host.model_parallel, one_host.member_axis,
          one_host.members_per_batch) == ("float32", 0, "map", 2)
  assert one_host.fits is None  # CPU memory is not a device limit
  two_hosts = plan.choose(SHAPES("smollm2-135m-instruct"), plan.Machine("cpu", 2, processes=2),
                          **PROTOCOL)
  assert (two_hosts.dtype, two_hosts.model_parallel, two_hosts.member_axis,
          two_hosts.members_per_batch) == ("float32", 1, "vmap", 2)


def test_accelerators_get_bf16_the_smallest_fitting_degree_and_one_member_per_slot():
  seven = plan.choose(SHAPES("qwen2.5-7b-instruct"), GPU8, **PROTOCOL)
  assert (seven.dtype, seven.model_parallel, seven.member_axis, seven.members_per_batch) == (
      "bfloat16", 1, "vmap", 8)
  assert seven.fits and seven.slots == 8
  big = plan.choose(SHAPES("qwen2.5-32b-instruct"), GPU8, **PROTOCOL)
  assert big.model_parallel == 2 and big.members_per_batch == 4 and big.fits
  # One 16 GiB chip per member cannot hold 7B twice (base + member): the plan splits it.
  v5e = plan.choose(SHAPES("qwen2.5-7b-instruct"), plan.Machine.hypothetical(
      8, plan.parse_bytes("16GiB"), "tpu"), **PROTOCOL)
  assert v5e.model_parallel == 4 and v5e.fits
  given = plan.choose(SHAPES("qwen2.5-7b-instruct"), GPU8, dtype="float32", model_parallel=4,
                      **PROTOCOL)
  assert given.dtype == "float32" and given.model_parallel == 4
  assert given.chosen == ("member_axis", "members_per_batch")


def test_floor_adds_up_the_shards():
  shapes = registry.MODELS.get("qwen2.5-7b-instruct").config.replace(dtype=jnp.bfloat16)
  one = plan.footprint(shapes, model_parallel=1, member_axis="vmap", members_per_slot=1,
                       rows=16, slots=1280)
  two = plan.footprint(shapes, model_parallel=2, member_axis="vmap", members_per_slot=1,
                       rows=16, slots=1280)
  matrices = 2 * (shapes.num_params - shapes.num_layers * (2 * shapes.hidden_size + 3584 + 2 * 512)
                  - shapes.hidden_size)
  assert abs(one.weights - matrices) < 0.01 * matrices  # vectors are float32: 4 bytes
  assert abs(two.weights - one.weights / 2) < 0.01 * one.weights  # norms replicated, tiny
  assert one.kv_cache == 2 * 28 * 16 * 4 * 1280 * 128 * 2 == 2 * two.kv_cache
  assert one.members == one.weights
  fp32 = dict(model_parallel=1, member_axis="vmap", members_per_slot=1, rows=16, slots=1280)
  shapes = shapes.replace(dtype=jnp.float32)
  assert (plan.footprint(shapes, **fp32).kv_cache
          == 2 * plan.footprint(shapes, **fp32, cache_dtype=jnp.bfloat16).kv_cache)


def test_heads_split_unevenly_and_plans_that_cannot_fit_are_refused():
  with pytest.raises(InputError, match=r"--model_parallel 8 must divide .* 28 query and 4 KV "
                                       r"heads; possible: 1, 2, 4"):
    plan.choose(SHAPES("qwen2.5-7b-instruct"), GPU8, model_parallel=8, **PROTOCOL)
  with pytest.raises(InputError, match=r"no plan fits: qwen2.5-32b-instruct in bfloat16 needs "
                                       r"[0-9.]+ GiB per device at model_parallel 1"):
    plan.choose(SHAPES("qwen2.5-32b-instruct"), plan.Machine.hypothetical(
        1, plan.parse_bytes("80GB")), **PROTOCOL)


def test_configs_take_the_reference_protocol_on_the_papers_tasks():
  assert (density.DensityConfig().with_protocol().train_size,
          density.DensityConfig().with_protocol().max_new_tokens) == (32, 32)  # offline main job
  for task in ("gsm8k", "countdown", "math500"):
    config = density.DensityConfig(task=task).with_protocol()
    assert (config.train_size, config.max_new_tokens) == (200, 1024)
  mixed = discordance.DiscordanceConfig(tasks=("arithmetic", "gsm8k")).with_protocol()
  assert (mixed.train_size, mixed.max_new_tokens) == (200, 1024)
  given = randopt.RandOptConfig(task="gsm8k", max_new_tokens=512).with_protocol()
  assert (given.train_size, given.max_new_tokens) == (200, 512)
  assert randopt.RandOptConfig(task="arithmetic").with_protocol().max_new_tokens == 128


def _dry_run(*args):
  env = toys.child_env()  # --plan_devices decides
  out = subprocess.run([sys.executable, "-m", "experiments.density", "--task", "gsm8k",
                        "--N", "1000", "--dry_run", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out.stdout


@pytest.mark.parametrize("model, mesh", [("qwen2.5-7b-instruct", "8 members × 1 model-parallel"),
                                         ("qwen2.5-32b-instruct", "2 members × 4 model-parallel"),
                                         ("olmo-3-7b-instruct", "8 members × 1 model-parallel")])
def test_the_readme_scale_up_line_dry_runs_on_8_simulated_gpus(model, mesh):
  """The README's command with --dry_run: a bf16 plan over all 8 devices that fits, and the
  real population program compiled for them on abstract inputs (no weights exist here)."""
  out = _dry_run("--model", model, "--plan_devices", "8", "--plan_device_memory", "80GB")
  assert f"bfloat16, mesh {mesh}, member axis vmap" in out
  assert "8 simulated accelerator device(s)" in out
  floor = float(re.search(r"floor total +([0-9.]+)", out).group(1))
  weights = float(re.search(r"compiled arguments +([0-9.]+)", out).group(1))
  assert abs(weights - float(re.search(r"floor weights +([0-9.]+)", out).group(1))) < 0.05
  assert f"{model}: fits: floor {floor:.2f} GiB per device of 67.06 GiB usable" in out
  assert "compiled for cpu" in out and "Traceback" not in out
  # P1: with the CPU backend's bf16-upcast buffers removed, the compiled figure
  # is the floor within 15%.
  ratio = float(re.search(r"bf16 upcast: [0-9.]+ GiB \(([0-9.]+)x the floor\)", out).group(1))
  assert 0.85 <= ratio <= 1.15


def test_experiments_that_train_keep_float32_weights_on_accelerators():
  from thickets_jax.llm import compare  # pylint: disable=g-import-not-at-top
  searched = density.DensityConfig(models=("qwen2.5-7b-instruct",), dry_run=True).planned(GPU8)
  trained = compare.CompareConfig(model="qwen2.5-7b-instruct", dry_run=True).planned(GPU8)
  assert (searched.dtype, trained.dtype) == ("bfloat16", "float32")
  assert searched.plan["dtype"] == "bfloat16" and "bfloat16" in searched.plan["summary"]


def test_truncation_is_reported_and_a_mostly_cut_run_says_so():
  config = density.DensityConfig(max_new_tokens=64)
  fine = session.truncation(config, {"truncated": 0.1}, [{"truncated": 0.2}, {"truncated": 0.4}],
                         "m")
  assert fine == {"max_new_tokens": 64, "base": 0.1, "members_mean": pytest.approx(0.3)}
  cut = session.truncation(config, {"truncated": 0.9}, [{"truncated": 0.2}, {}], "m")
  assert cut["members_mean"] == 0.2  # a record scored before the fraction existed is left out
  assert cut["warning"].startswith("m: 90% of completions were cut at max_new_tokens=64")


def test_one_plan_for_several_models_takes_a_degree_every_model_admits():
  """0.5B has 2 KV heads: a run over 0.5B and 32B cannot shard 4 ways, whatever 32B needs."""
  models = {**SHAPES("qwen2.5-0.5b-instruct"), **SHAPES("qwen2.5-32b-instruct")}
  chosen = plan.choose(models, GPU8, **PROTOCOL)
  assert chosen.model_parallel == 2 and chosen.model == "qwen2.5-32b-instruct"
  with pytest.raises(InputError, match=r"qwen2.5-0.5b-instruct's 14 query and 2 KV heads.*; "
                                       r"possible: 1, 2\."):
    plan.choose(models, GPU8, model_parallel=4, **PROTOCOL)
