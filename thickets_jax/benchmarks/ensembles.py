"""B11: the ways a top K answers together, on the same members: majority vote, the
averaged-weights model and probability averaging, by test accuracy and test FLOPs, on an
offline language model over seeds."""

import dataclasses
import os
import tempfile
from typing import Optional

import numpy as np

from thickets_jax import configs, metrics, plotting
from thickets_jax.benchmarks.base import Figure, register, seeds
from thickets_jax.errors import InputError
from thickets_jax.llm import randopt, registry

ENSEMBLES = (("top-1", None), ("vote", "ensemble_accuracy"),
             ("averaged weights", "averaged_weights_accuracy"),
             ("probability average", "probability_average_accuracy"))


@dataclasses.dataclass(frozen=True)
class B11Config(Figure):
  b11_llm: str = configs.setting("smollm2-135m-instruct", "B11: the offline model.")
  b11_task: str = configs.setting("arithmetic", "B11: the task.")
  b11_seeds: str = configs.setting("0-2", "B11: root seeds of the RandOpt runs.")
  b11_N: int = configs.setting(32, "B11: members searched per seed.")
  b11_K: int = configs.setting(4, "B11: the top K that answers together.")
  b11_test_size: int = configs.setting(64, "B11: test examples.")
  b11_workdir: Optional[str] = configs.setting(
      None, "B11: keep the runs here (default: a temporary directory).")

  def validate(self) -> None:
    super().validate()
    registry.MODELS.get(self.b11_llm)
    seeds(self.b11_seeds, "b11_seeds")
    if not 2 <= self.b11_K <= self.b11_N or self.b11_test_size <= 0:
      raise InputError("B11 needs 2 <= --b11_K <= --b11_N and a positive --b11_test_size.")


@register("B11", B11Config, "vote vs averaged weights vs probability averaging, same members")
def b11(config: B11Config) -> str:
  k = str(config.b11_K)
  with tempfile.TemporaryDirectory() as tmp:
    root = config.b11_workdir or tmp
    results = [randopt.run_randopt(randopt.RandOptConfig(
        model=config.b11_llm, task=config.b11_task, N=config.b11_N, sigmas=(5e-4, 1e-3),
        train_size=32, max_new_tokens=32, batch_size=32, ks=(1, config.b11_K),
        test_size=config.b11_test_size, seed=seed, average_probabilities=True),
        os.path.join(root, f"seed{seed}"))
               for seed in seeds(config.b11_seeds, "b11_seeds")]
  flops = {"top-1": [r["test_flops"]["top1"] for r in results],
           "vote": [r["test_flops"]["vote"][k] for r in results],
           "averaged weights": [r["test_flops"]["averaged_weights"][k] for r in results],
           "probability average": [r["test_flops"]["probability_average"][k] for r in results]}
  lines = [f"B11: {config.b11_llm} on {config.b11_task}, top-{k} of N = {config.b11_N}, "
           f"{config.b11_test_size} test examples, seeds {config.b11_seeds}; base "
           f"{np.mean([r['base']['test_accuracy'] for r in results]):.3f}"]
  points = {}
  for label, key in ENSEMBLES:
    values = np.asarray([r["top1_accuracy"] if key is None else r[key][k] for r in results])
    mean, se = metrics.mean_se(values)
    points[label] = (np.asarray([np.mean(flops[label])]), np.asarray([mean]), np.asarray([se]))
    lines.append(f"  {label:<20} test accuracy per seed {np.round(values, 3).tolist()}, mean "
                 f"{mean:.3f} ± {se:.3f}, median {np.median(values):.3f}; test FLOPs "
                 f"{np.mean(flops[label]):.3g} "
                 f"({np.mean(flops[label]) / np.mean(flops['vote']):.2f} of the vote's)")
  if config.figure:
    base = np.asarray([r["base"]["test_accuracy"] for r in results])
    plotting.metric_vs_flops(
        config.figure, points, {"base": (base.mean(), 0.0)},
        f"test accuracy, mean ± SE over seeds {config.b11_seeds}",
        f"{config.b11_llm}, {config.b11_task}: the top {k} of {config.b11_N} answering together",
        xlabel="test FLOPs")
  return "\n".join(lines)
