"""Configs declare each setting once; the flags are derived from them (`thickets_jax.configs`)."""

import ast
import dataclasses
import os

import pytest

from thickets_jax import benchmarks, configs, presets
from thickets_jax.baselines import es, grpo
from thickets_jax.errors import InputError
from thickets_jax.llm import (compare, density, discordance, distill, export, plan, predict,
                              randopt, sft)
from thickets_jax.llm import landscape as llm_landscape
from thickets_jax.signals import landscape as signals_landscape
from thickets_jax.signals import regimes, scaling
from thickets_jax.signals import runs as signal_runs
from thickets_jax.tasks import fuzz
from thickets_jax.workdir import RunDir

import toys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each entry point and the configs its flags are derived from.
EXPERIMENTS = {"randopt": (randopt.RandOptConfig,), "density": (density.DensityConfig,),
               "discordance": (discordance.DiscordanceConfig,),
               "compare": (compare.CompareConfig,), "distill": (distill.DistillConfig,),
               "predict": (predict.PredictConfig,), "fuzz_graders": (fuzz.FuzzConfig,),
               "export": (export.ExportConfig,), "scaling1d": (scaling.ScalingConfig,),
               "signals1d": (regimes.RegimesConfig, signal_runs.RunSpec),
               "landscape": (signals_landscape.LandscapeSpec, llm_landscape.LandscapeConfig),
               "benchmark": tuple(benchmarks.BENCHMARKS.get(name).config
                                  for name in benchmarks.BENCHMARKS)}
CONFIGS = [c for classes in EXPERIMENTS.values() for c in classes]


@pytest.mark.parametrize("config_class", [  # these need their paths or runs
    c for c in CONFIGS if c not in (predict.PredictConfig, export.ExportConfig,
                                    signal_runs.RunSpec)])
def test_unset_flags_give_the_config_defaults(config_class):
  assert configs.from_flags(config_class, toys.flag_values(config_class)) == config_class()


def test_every_flag_is_a_setting_with_help_and_its_default():
  for config_class in CONFIGS:
    flag_values = toys.flag_values(config_class)
    for setting in configs.settings(config_class):
      flag = flag_values[setting.name]
      assert setting.help and flag.help.endswith(setting.help)
      expected = setting.default
      if setting.kind is tuple and expected is not None:
        expected = [str(v) for v in expected]
      assert flag.value == expected, setting.name


def test_sub_config_flags_keep_their_historical_names():
  flag_values = toys.flag_values(compare.CompareConfig, [
      "--es_population", "6", "--group_size", "3", "--grpo_prompts", "6", "--grpo_mini_batch", "3",
      "--grpo_micro_batch", "3", "--kl_coef", "0.1"])
  config = configs.from_flags(compare.CompareConfig, flag_values)
  assert config.es == es.ESConfig(population=6)
  assert config.grpo == dataclasses.replace(compare.CompareConfig().grpo, group_size=3,
                                            prompts_per_step=6, mini_batch=3, micro_batch=3,
                                            kl_coef=0.1)
  identity = config.identity()
  assert identity["es_population"] == 6 and identity["group_size"] == 3
  assert identity["grpo_prompts"] == 6 and identity["kl_coef"] == 0.1
  names = {f.name for f in configs.settings(distill.DistillConfig)}
  assert {"finetune", "lora_rank", "learning_rate", "epochs", "sft_batch_size",
          "sft_micro_batch"} <= names


def test_a_workdir_written_before_the_sub_configs_resumes(tmp_path, tiny_weights):
  identity = compare.CompareConfig.tiny(tiny_weights).identity()
  older = {k: v for k, v in identity.items()
           if k not in ("es_divide_by_sigma", "es_weight_decay", "grpo_weight_decay",
                        "grpo_grad_clip", "grpo_clip_eps", "grpo_temperature")}
  run_dir = RunDir(str(tmp_path))
  run_dir.claim(older)
  run_dir.claim(identity)  # the same run: no sentence
  changed = compare.CompareConfig.tiny(tiny_weights, grpo=grpo.GRPOConfig(
      group_size=2, prompts_per_step=2, mini_batch=1, micro_batch=2, learning_rate=1e-5,
      clip_eps=0.3)).identity()
  with pytest.raises(InputError, match="grpo_clip_eps"):
    run_dir.claim(changed)


def test_a_base_config_keeps_what_no_flag_changes():
  base = randopt.RandOptConfig(N=8, ks=(2,), test_size=5, max_new_tokens=16)
  config = configs.from_flags(randopt.RandOptConfig,
                              toys.flag_values(randopt.RandOptConfig, ["--K", "1,2"]), base=base)
  assert config == dataclasses.replace(base, ks=(1, 2))
  assert configs.present(randopt.RandOptConfig,
                         toys.flag_values(randopt.RandOptConfig, ["--K", "1"])) == ["K"]


@pytest.mark.parametrize("config_class, argv, sentence", [
    (randopt.RandOptConfig, ["--K", "1,x"], "--K takes integers, got '1,x'."),
    (density.DensityConfig, ["--margins", "nan"], "--margins must be finite numbers, got nan."),
    (discordance.DiscordanceConfig, ["--tasks", "arithmetic,arithmetic"], "names a task twice"),
    (discordance.DiscordanceConfig, ["--spectra_shown", "-1"], "--spectra_shown must be at least 1"),
    (predict.PredictConfig, ["--run_dir", "r"], "--prompts, --out are required"),
    (predict.PredictConfig, ["--run_dir", "r", "--prompts", "p", "--out", "o",
                             "--max_new_tokens", "0"], "--max_new_tokens must be positive"),
    (distill.DistillConfig, ["--sft_micro_batch", "3"], "--sft_micro_batch 3 must divide "
                                                        "--sft_batch_size 8."),
    (distill.DistillConfig, ["--lora_rank", "0"], "--lora_rank must be positive, got 0."),
])
def test_bad_values_are_refused_at_construction(config_class, argv, sentence):
  with pytest.raises(InputError, match=sentence.replace("(", r"\(")):
    configs.from_flags(config_class, toys.flag_values(config_class, argv))


def test_sub_configs_validate_themselves():
  with pytest.raises(InputError, match="--es_sigma must be positive"):
    es.ESConfig(sigma=0.0)
  with pytest.raises(InputError, match="--finetune"):
    sft.SFTConfig(finetune="qlora")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_entry_points_declare_no_setting_of_their_config(name):
  """A setting is declared once, in its config: the entry point defines no flag of that name."""
  with open(os.path.join(ROOT, "experiments", f"{name}.py")) as f:
    tree = ast.parse(f.read())
  defined = {node.args[0].value for node in ast.walk(tree)
             if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
             and node.func.attr.startswith("DEFINE_") and node.args
             and isinstance(node.args[0], ast.Constant)}
  settings = {f.name for c in EXPERIMENTS[name] for f in configs.settings(c)}
  assert not defined & settings


def test_a_setting_two_benchmarks_share_is_declared_once():
  """Benchmarks share a setting only through a mixin of `benchmarks.base`: every flag name is
  declared by one class, whatever the benchmarks that inherit it."""
  declared = {}
  for name in benchmarks.BENCHMARKS:
    config_class = benchmarks.BENCHMARKS.get(name).config
    for field in dataclasses.fields(config_class):
      owner = next(base for base in reversed(config_class.__mro__)
                   if field.name in getattr(base, "__annotations__", {}))
      assert declared.setdefault(field.name, owner) is owner, field.name
  assert declared["repeats"] is benchmarks.base.Repeats  # B1, B3, B5, B8
  assert declared["b4_sizes"] is benchmarks.base.Sizes  # B4, ES


def test_a_benchmark_runs_from_python_and_checks_its_settings_first():
  line = benchmarks.run("B1", N=8, chunk_size=4, repeats=1)
  assert line.startswith("B1: ") and "% of measured peak" in line
  with pytest.raises(InputError, match="--b6_members 8 needs at least two chunks of --b6_chunk"):
    benchmarks.run("B6", b6_members=8)
  with pytest.raises(InputError, match="unknown --bench 'B99'"):
    benchmarks.run("B99")


def test_the_paper_presets_hold_the_reference_settings_and_plan_on_a_gpu_node():
  fig1c = presets.get("figure1c")
  assert (fig1c.model, fig1c.task, fig1c.N, fig1c.sigmas, fig1c.vote_k) == (
      "olmo-3-7b-instruct", "countdown", 5000, (5e-4, 1e-3, 2e-3), 50)
  assert (fig1c.es.population, fig1c.es.sigma, fig1c.es.learning_rate, fig1c.es_iterations) == (
      30, 1e-3, 5e-4, 300)
  assert (fig1c.grpo.group_size, fig1c.grpo.prompts_per_step, fig1c.grpo.mini_batch,
          fig1c.grpo.learning_rate, fig1c.grpo.kl_coef) == (8, 1024, 64, 1e-6, 0.0)
  fig3a = presets.get("figure3a")
  assert [m.split("-")[1] for m in fig3a.models] == list(presets.QWEN25_SIZES)
  node = plan.Machine.hypothetical(8, plan.parse_bytes("80GB"))
  for name in ("figure1c", "figure3a", "table1"):
    planned = dataclasses.replace(presets.get(name), dry_run=True).planned(node)  # no weights
    assert planned.plan["machine"]["devices"] == 8 and planned.max_new_tokens == 1024, name
    if name == "figure3a":  # one degree serves 0.5B (2 KV heads) to 32B
      assert planned.model_parallel == 2
  for name, config_class in (("figure1c", compare.CompareConfig),
                             ("figure3a", density.DensityConfig), ("table1", randopt.RandOptConfig)):
    assert presets.get(f"{name}:tiny") == config_class.tiny(None)
  fig2, fig5 = presets.get("figure2"), presets.get("figure5")
  assert (fig2.n, fig2.k, fig2.points, fig2.grid_extent, fig2.seed_list()) == (256, 5, 21, 2.0,
                                                                              (0, 1, 2))
  assert fig5.seed_list() == (0, 1, 2, 3, 4) and [(s.name, s.n, s.ks) for s in fig5.specs()] == [
      (f"{base}_to_one_line", 1000, (5,)) for base in ("xavier", "mixed", "line")]


