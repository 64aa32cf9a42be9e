r"""The paper's runs as configs, big_vision style: a preset is a function of a variant.

  python -m experiments.compare --preset figure1c --workdir /runs/fig1c     # at scale
  python -m experiments.compare --preset figure1c:tiny --weights DIR ...    # a test's variant
  config = presets.get("figure1c")                                          # from Python

`--preset NAME[:VARIANT]` gives an experiment its config; flags given on the same command line
change it (`configs.from_flags(..., base=preset)`). Variant "" is the paper's run; "tiny" is
the experiment's `tiny` config on `tiny-random-llama`, the one the suite runs (with `--weights`
of a tiny checkpoint). Where the paper does not state a setting, the choice is ours and its docstring says
so.
"""

from typing import Callable

from thickets_jax.baselines.es import ESConfig
from thickets_jax.baselines.grpo import GRPOConfig
from thickets_jax.errors import InputError
from thickets_jax.llm import compare, runs
from thickets_jax.registry import Registry

VARIANTS = ("", "tiny")
PRESETS: Registry[Callable[[str], runs.ScoringConfig]] = Registry("preset")
QWEN25_SIZES = ("0.5b", "1.5b", "3b", "7b", "14b", "32b")


@PRESETS.register("figure1c")
def figure1c(variant: str = "") -> compare.CompareConfig:
  """Figure 1c: RandOpt against ES and GRPO on OLMo-3-7B-Instruct, Countdown (200 train, 2000
  test, 1024 new tokens), every method voted over K = 50 at test time.

  RandOpt: N = 5000, σ ∈ {5e-4, 1e-3, 2e-3}. ES: 30 members per iteration, σ 1e-3, α 5e-4, 300
  iterations (the reference's job script). GRPO: G 8, 1024 prompts per step, mini-batch 64, AdamW
  lr 1e-6, weight decay 0.01, clip 1.0, ε 0.2, no KL (the reference's verl settings). Ours: 30
  GRPO steps (the paper does not say how many; 30 spends about RandOpt's training FLOPs, 8·B·G
  = 65,536 sequence passes a step against 2·N·D = 2e6) and an evaluation every 50 ES iterations
  or GRPO steps (each costs 2000 × 51 completions).
  """
  paper = compare.CompareConfig(
      model="olmo-3-7b-instruct", task="countdown", N=5000, sigmas=(5e-4, 1e-3, 2e-3),
      train_size=200, test_size=2000, max_new_tokens=1024, vote_k=50,
      es=ESConfig(population=30, sigma=1e-3, learning_rate=5e-4), es_iterations=300,
      grpo=GRPOConfig(group_size=8, prompts_per_step=1024, mini_batch=64, learning_rate=1e-6),
      grpo_steps=30, eval_every=50)
  return compare.CompareConfig.tiny(None) if variant == "tiny" else paper


@PRESETS.register("figure3a")
def figure3a(variant: str = "") -> runs.DensityConfig:
  """Figure 3a: solution density δ(m) against size over the Qwen2.5 instruct models, 0.5B to
  32B, on Countdown (the reference protocol: 200 train examples, 1024 new tokens), σ ∈ {5e-4,
  1e-3, 2e-3}. Ours: N = 1000 members per model (δ's Wilson interval is then at most ±3 points),
  margins 0, 0.05 and 0.1, and 16 prompts per batch: one plan serves every size, its
  model-parallel degree must divide the 0.5B's two KV heads, and at degree 2 the 32B fits an
  80 GB device with 16 rows (65.2 GiB of 67.1 usable) but not with 32."""
  paper = runs.DensityConfig(
      models=tuple(f"qwen2.5-{size}-instruct" for size in QWEN25_SIZES), task="countdown",
      N=1000, sigmas=(5e-4, 1e-3, 2e-3), train_size=200, max_new_tokens=1024, batch_size=16)
  return runs.DensityConfig.tiny(None) if variant == "tiny" else paper


@PRESETS.register("table1")
def table1(variant: str = "") -> runs.RandOptConfig:
  """The reference RandOpt job behind the results table: Qwen2.5-3B-Instruct on Countdown, N =
  5000, σ ∈ {5e-4, 1e-3, 2e-3}, top-K over all σ for K ∈ {1, 50, 200, 250, 500}, 200 train and
  2000 test examples, 1024 new tokens."""
  paper = runs.RandOptConfig(
      model="qwen2.5-3b-instruct", task="countdown", N=5000, sigmas=(5e-4, 1e-3, 2e-3),
      ks=(1, 50, 200, 250, 500), train_size=200, test_size=2000, max_new_tokens=1024)
  return runs.RandOptConfig.tiny(None) if variant == "tiny" else paper


def get(spec: str) -> runs.ScoringConfig:
  """The config of `spec`, "NAME" or "NAME:VARIANT"."""
  name, _, variant = spec.partition(":")
  preset = PRESETS.get(name)
  if variant not in VARIANTS:
    raise InputError(f"unknown --preset variant {variant!r} of {name}; known: "
                     f"{', '.join(v or '(none)' for v in VARIANTS)}.")
  return preset(variant)
