r"""The paper's runs as configs, big_vision style: a preset is a function of a variant.

  python -m experiments.compare --preset figure1c --workdir /runs/fig1c     # at scale
  python -m experiments.compare --preset figure1c:tiny --weights DIR ...    # a test's variant
  python -m experiments.signals1d --preset figure5 --workdir /tmp/fig5      # 1D, CPU
  config = presets.get("figure1c")                                          # from Python

`--preset NAME[:VARIANT]` gives an experiment its config; flags given on the same command line
change it (`configs.from_flags(..., base=preset)`). Variant "" is the paper's run; "tiny" is
the suite's: a language-model preset's is the experiment's `tiny` config on
`tiny-random-llama` (run with `--weights` of a tiny checkpoint), a 1D preset's runs small MLPs
on one or two seeds. Where the paper does not state a setting, the choice is ours and its
docstring says so.

Each preset imports its experiment's module when it is called, so that every entry point can
list the presets without importing the other domains' models.
"""

import dataclasses
from typing import Callable

from thickets_jax.configs import Config
from thickets_jax.errors import InputError
from thickets_jax.registry import Registry

VARIANTS = ("", "tiny")
PRESETS: Registry[Callable[[str], Config]] = Registry("preset")
QWEN25_SIZES = ("0.5b", "1.5b", "3b", "7b", "14b", "32b")
# The 1D tiny variants' MLPs and data (a few seconds per run on a CPU).
TINY_1D = dict(width=16, depth=3, pretrain_steps=20, posttrain_size=32, test_size=8, fut=12)


@PRESETS.register("figure1c")
def figure1c(variant: str = "") -> Config:
  """Figure 1c: RandOpt against ES and GRPO on OLMo-3-7B-Instruct, Countdown (200 train, 2000
  test, 1024 new tokens), every method voted over K = 50 at test time.

  RandOpt: N = 5000, σ ∈ {5e-4, 1e-3, 2e-3}. ES: 30 members per iteration, σ 1e-3, α 5e-4, 300
  iterations (the reference's job script). GRPO: G 8, 1024 prompts per step, mini-batch 64, AdamW
  lr 1e-6, weight decay 0.01, clip 1.0, ε 0.2, no KL (the reference's verl settings). Ours: 30
  GRPO steps (the paper does not say how many; 30 spends about RandOpt's training FLOPs, 8·B·G
  = 65,536 sequence passes a step against 2·N·D = 2e6) and an evaluation every 50 ES iterations
  or GRPO steps (each costs 2000 × 51 completions).
  """
  from thickets_jax.baselines.es import ESConfig  # pylint: disable=g-import-not-at-top
  from thickets_jax.baselines.grpo import GRPOConfig  # pylint: disable=g-import-not-at-top
  from thickets_jax.llm import compare  # pylint: disable=g-import-not-at-top
  paper = compare.CompareConfig(
      model="olmo-3-7b-instruct", task="countdown", N=5000, sigmas=(5e-4, 1e-3, 2e-3),
      train_size=200, test_size=2000, max_new_tokens=1024, vote_k=50,
      es=ESConfig(population=30, sigma=1e-3, learning_rate=5e-4), es_iterations=300,
      grpo=GRPOConfig(group_size=8, prompts_per_step=1024, mini_batch=64, learning_rate=1e-6),
      grpo_steps=30, eval_every=50)
  return compare.CompareConfig.tiny(None) if variant == "tiny" else paper


@PRESETS.register("figure3a")
def figure3a(variant: str = "") -> Config:
  """Figure 3a: solution density δ(m) against size over the Qwen2.5 instruct models, 0.5B to
  32B, on Countdown (the reference protocol: 200 train examples, 1024 new tokens), σ ∈ {5e-4,
  1e-3, 2e-3}. Ours: N = 1000 members per model (δ's Wilson interval is then at most ±3 points),
  margins 0, 0.05 and 0.1, and 16 prompts per batch: one plan serves every size, its
  model-parallel degree must divide the 0.5B's two KV heads, and at degree 2 the 32B fits an
  80 GB device with 16 rows (65.2 GiB of 67.1 usable) but not with 32."""
  from thickets_jax.llm import density  # pylint: disable=g-import-not-at-top
  paper = density.DensityConfig(
      models=tuple(f"qwen2.5-{size}-instruct" for size in QWEN25_SIZES), task="countdown",
      N=1000, sigmas=(5e-4, 1e-3, 2e-3), train_size=200, max_new_tokens=1024, batch_size=16)
  return density.DensityConfig.tiny(None) if variant == "tiny" else paper


@PRESETS.register("table1")
def table1(variant: str = "") -> Config:
  """The reference RandOpt job behind the results table: Qwen2.5-3B-Instruct on Countdown, N =
  5000, σ ∈ {5e-4, 1e-3, 2e-3}, top-K over all σ for K ∈ {1, 50, 200, 250, 500}, 200 train and
  2000 test examples, 1024 new tokens."""
  from thickets_jax.llm import randopt  # pylint: disable=g-import-not-at-top
  paper = randopt.RandOptConfig(
      model="qwen2.5-3b-instruct", task="countdown", N=5000, sigmas=(5e-4, 1e-3, 2e-3),
      ks=(1, 50, 200, 250, 500), train_size=200, test_size=2000, max_new_tokens=1024)
  return randopt.RandOptConfig.tiny(None) if variant == "tiny" else paper


@PRESETS.register("figure2")
def figure2(variant: str = "") -> Config:
  """Figure 2 on the 1D MLPs: the post-train MSE (`one_line`) on the plane of the top two of N =
  256 members around a pretrained (`mixed`) and an untrained (`xavier`) base, a 21 × 21 grid over
  [−2, 2]², over seeds 0–2 (ours: the paper draws one plane per base; we report the fractions
  of the plane that beat the base across seeds)."""
  from thickets_jax.signals import landscape  # pylint: disable=g-import-not-at-top
  if variant == "tiny":
    return landscape.LandscapeSpec(n=16, points=5, pretrain_steps=100, seeds="0")
  return landscape.LandscapeSpec()


@PRESETS.register("figure5")
def figure5(variant: str = "") -> Config:
  """Figure 5: the 1D approximation regimes, needle (xavier init), thicket (pretrained on
  `mixed`) and ceiling (pretrained on `line`), each post-trained on `one_line` with N = 1000,
  K = 5, over seeds 0–4 (the paper's figure is one seed; we report median and mean ± SE)."""
  from thickets_jax.signals import regimes  # pylint: disable=g-import-not-at-top
  paper = regimes.RegimesConfig(regime="approximation", seeds="0-4")
  if variant != "tiny":
    return paper
  specs = tuple(dataclasses.replace(spec, n=8, ks=(2,), **TINY_1D) for spec in paper.specs())
  return dataclasses.replace(paper, seeds="0-2", run_specs=specs)


def get(spec: str) -> Config:
  """The config of `spec`, "NAME" or "NAME:VARIANT"."""
  name, _, variant = spec.partition(":")
  preset = PRESETS.get(name)
  if variant not in VARIANTS:
    raise InputError(f"unknown --preset variant {variant!r} of {name}; known: "
                     f"{', '.join(v or '(none)' for v in VARIANTS)}.")
  return preset(variant)
