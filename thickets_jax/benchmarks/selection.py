"""B7: successive halving against full scoring on the same members, on the 1D thicket over seeds
and on an offline language model: selection FLOPs, the selected top-K's test score and recall."""

import dataclasses
import os
import tempfile
from typing import Optional

import numpy as np

from thickets_jax import configs, halving, metrics, workdir
from thickets_jax.benchmarks.base import register, seeds
from thickets_jax.errors import InputError
from thickets_jax.llm import randopt, registry
from thickets_jax.signals import runs as signal_runs


@dataclasses.dataclass(frozen=True)
class B7Config(configs.Config):
  b7_eta: float = configs.setting(4.0, "B7: successive-halving eta.")
  b7_seeds: str = configs.setting("0-2", "B7: 1D seeds.")
  b7_llm: str = configs.setting("smollm2-135m-instruct",
                                "B7: offline model of the LLM part ('' skips it).")
  b7_llm_N: int = configs.setting(32, "B7: LLM members.")
  b7_workdir: Optional[str] = configs.setting(
      None, "B7: keep the runs here (default: a temporary directory).")

  def validate(self) -> None:
    if not self.b7_eta > 1:
      raise InputError(f"--b7_eta must be greater than 1, got {self.b7_eta}.")
    seeds(self.b7_seeds, "b7_seeds")
    if self.b7_llm:
      registry.MODELS.get(self.b7_llm)
    if self.b7_llm_N < 4:
      raise InputError(f"--b7_llm_N must be at least 4 (B7 votes over the top 4), got "
                       f"{self.b7_llm_N}.")


def _one_dimensional(config: B7Config, root: str) -> list[str]:
  """Full scoring vs halving on the 1D thicket (mixed -> sinusoid, 256 curves), per seed."""
  spec = dict(pretrain="mixed", posttrain="sinusoid", test="sinusoid", n=1024, ks=(5,),
              sigma=0.002, posttrain_size=256, test_size=256)
  rows = {"full": [], "halving": []}
  for seed in seeds(config.b7_seeds, "b7_seeds"):
    for name, extra in (("full", {}), ("halving", dict(halving_eta=config.b7_eta,
                                                       halving_min_examples=16))):
      rows[name].append(signal_runs.run(
          signal_runs.RunSpec(**spec, seed=seed, **extra),
          workdir.RunDir.prepare(os.path.join(root, f"1d_{name}_{seed}")),
          os.path.join(root, "bases"), plot=False))
  recall = [halving.recall([m["seed"] for m in h["top_members"]],
                           [m["seed"] for m in f["top_members"]])
            for f, h in zip(rows["full"], rows["halving"])]
  lines = []
  for name, results in rows.items():
    mse = np.asarray([r["ensemble_test_mse"]["5"]["mean"] for r in results])
    cost = np.mean([r["selection"]["flops"] for r in results])
    mean, se = metrics.mean_se(mse)
    lines.append(f"  1D {name:<8} selection FLOPs {cost:.3g}  top-5 ensemble test MSE per seed "
                 f"{np.round(mse, 4).tolist()}, mean {mean:.4f} ± {se:.4f}")
  ratio = np.mean([h["selection"]["flops"] / f["selection"]["flops"]
                   for f, h in zip(rows["full"], rows["halving"])])
  lines.append(f"  1D halving/full selection FLOPs {ratio:.3f}, top-5 recall per seed {recall}")
  return lines


def _language_model(config: B7Config, root: str) -> list[str]:
  """Full scoring vs halving on an offline model (arithmetic: its base is between 0 and 1)."""
  base = randopt.RandOptConfig(model=config.b7_llm, task="arithmetic", N=config.b7_llm_N,
                               sigmas=(5e-4, 1e-3), train_size=32, max_new_tokens=32,
                               batch_size=32, ks=(1, 4), test_size=64)
  results = {name: randopt.run_randopt(run, os.path.join(root, f"llm_{name}"))
             for name, run in (("full", base), ("halving", dataclasses.replace(
                 base, halving_eta=config.b7_eta, halving_min_examples=2)))}
  top = {name: [m["seed"] for m in randopt.load_topk(os.path.join(root, f"llm_{name}"))["members"]]
         for name in results}
  lines = []
  for name, r in results.items():
    acc = r["ensemble_accuracy"]["4"]
    lines.append(f"  {config.b7_llm} {name:<8} selection FLOPs "
                 f"{r['selection']['forward_flops']:.3g} ({r['selection']['example_evaluations']}"
                 f" example evaluations), top-4 vote test {acc:.3f} ± "
                 f"{np.sqrt(acc * (1 - acc) / r['test_size']):.3f} (base "
                 f"{results['full']['base']['test_accuracy']:.3f})")
  ratio = (results["halving"]["selection"]["forward_flops"]
           / results["full"]["selection"]["forward_flops"])
  lines.append(f"  {config.b7_llm} halving/full selection FLOPs {ratio:.3f}, top-4 recall "
               f"{halving.recall(top['halving'], top['full']):.2f}")
  return lines


@register("B7", B7Config, "successive halving vs full scoring, same members")
def b7(config: B7Config) -> str:
  with tempfile.TemporaryDirectory() as tmp:
    root = config.b7_workdir or tmp
    lines = _one_dimensional(config, root) + (
        _language_model(config, root) if config.b7_llm else [])
  return "B7: successive halving vs full scoring, same members\n" + "\n".join(lines)
