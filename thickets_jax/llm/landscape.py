"""Figure 2 for a language model: the train reward on a coarse plane around the base of a
finished RandOpt run, with its saved top-K placed on the plane.

The plane is spanned by the run's two best members (σᵢεᵢ: they sit at (1, 0) and (0, 1)) or by
two filter-normalised random directions (`thickets_jax.landscape`). Every grid point is a
model, θ + a·d₁ + b·d₂, materialised one at a time and scored greedily on the run's train split
(the RandOpt protocol); each point's scores are appended to `plane.jsonl` as it finishes, so a
killed run resumes without scoring a point twice.
"""

import dataclasses
from typing import ClassVar, Optional

import jax
import numpy as np

from thickets_jax import configs, landscape, plotting
from thickets_jax.errors import InputError
from thickets_jax.llm import randopt, scoring
from thickets_jax.tasks import TASKS
from thickets_jax.workdir import RunDir


@dataclasses.dataclass(frozen=True)
class LandscapeConfig(landscape.PlaneConfig):
  """The plane (`landscape.PlaneConfig`) around the model of a finished RandOpt run."""
  run_dir: Optional[str] = configs.setting(
      None, "llm: a finished randopt run (model, task, split, noise and top-K).")
  points: int = 5
  train_size: Optional[int] = configs.setting(
      None, "llm: examples per grid point (default: the run's).")
  batch_size: int = configs.setting(32, "llm: prompts per generation batch.")
  # Random filter-normalised directions have θ's norm: 0.05 is where σ ≈ 1e-3 members live.
  RANDOM_EXTENT: ClassVar[float] = 0.05

  def validate(self) -> None:
    super().validate()
    if self.train_size is not None and self.train_size <= 0:
      raise InputError(f"--train_size must be positive, got {self.train_size}.")
    if self.batch_size <= 0:
      raise InputError(f"--batch_size must be positive, got {self.batch_size}.")


def run_landscape(config: LandscapeConfig, workdir: str) -> dict:
  """Scores the grid (resumable); writes results.json and landscape.png; returns the result."""
  if not config.run_dir:
    raise InputError("--domain llm needs --run_dir, a finished randopt run.")
  execution = {"batch_size": config.batch_size}
  if config.train_size:
    execution["train_size"] = config.train_size
  saved, run = randopt.saved_run(config.run_dir, **execution)
  if config.directions == "members" and len(saved["members"]) < 2:
    raise InputError(f"{config.run_dir} saved one member; --directions members needs two.")
  run.validate()
  train, _ = run.splits(run.task, 1)
  run_dir = RunDir.prepare(workdir)
  run_dir.claim({**dataclasses.asdict(config), "extent": config.grid_extent,
                 "run": run.identity()})
  with run_dir.session("landscape", dataclasses.asdict(config)):
    loaded = run.load(run.model)
    randopt.check_rebuildable(saved, loaded, config.run_dir)
    gen = run.generator(loaded, saved["perturbation"])
    spec = saved["perturbation"]
    if config.directions == "members":
      d1, d2 = (landscape.member_direction(loaded.params, m["seed"], m["sigma"], spec)
                for m in saved["members"][:2])
    else:
      d1, d2 = landscape.random_directions(loaded.params, run.seed, spec)
    task_set = scoring.TaskSet(TASKS.get(run.task), train)
    on_plane = jax.jit(landscape.plane_point)

    def score_points(ab):
      for a, b in ab:
        point = on_plane(loaded.params, d1, d2, np.float32(a), np.float32(b))
        summary = scoring.score_base(gen, [task_set], params=point)
        yield {"score": summary["reward"][0], "accuracy": summary["accuracy"][0],
               "forward_flops": summary["forward_flops"]}
    coordinates = landscape.grid(config.grid_extent, config.points)
    store = run_dir.store("plane", key=landscape.point_key)
    scores = landscape.score_plane(lambda ab: list(score_points(ab)), coordinates, store,
                                   chunk_size=1)
    centre = config.points // 2
    base = float(scores[centre, centre])
    members = landscape.describe_members(loaded.params, d1, d2, saved["members"], spec)
    accuracy = np.asarray([store.records[(float(a), float(b))]["accuracy"]
                           for b in coordinates for a in coordinates]).reshape(scores.shape)
    result = {
        **dataclasses.asdict(config), "extent": config.grid_extent, "model": run.model,
        "task": run.task, "train_size": len(train), "coordinates": coordinates.tolist(),
        "base_reward": base, "reward": scores.tolist(), "accuracy": accuracy.tolist(),
        "members": members,
        "forward_flops": float(sum(r["forward_flops"] for r in store.records.values())),
        **landscape.summarize(scores, coordinates, base, higher_is_better=True),
    }
    run_dir.write("results", result)
    axes = (("top-1 member", "top-2 member") if config.directions == "members"
            else ("d₁ (filter-normalised)", "d₂ (filter-normalised)"))
    plotting.landscapes(
        run_dir.figure("landscape"), coordinates,
        {f"{run.model} on {run.task}: base reward {base:.3f}\n"
         f"{100 * result['better'][0]['fraction']:.0f}% of the grid above the base":
         (landscape.relative_gain(scores, base, higher_is_better=True), members)},
        axes, f"train reward on {len(train)} examples around the base")
  return result
