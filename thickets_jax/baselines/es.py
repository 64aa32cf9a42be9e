"""Evolution strategies on the perturbation core RandOpt uses.

An iteration's members are `(seed, sigma)` members exactly as in RandOpt (`perturb.perturb_member`
with the run's `PerturbSpec`), scored by any function. The update

    g = (1/N) Σᵢ zᵢ · sign(σᵢ) · dᵢ        (÷ σ with `divide_by_sigma`)
    θ ← θ + optimiser(g)                    (sgd: θ + α·g)

uses the fitness `z` shaped from the scores (z-score by default, or centred ranks) and each
member's unit-σ direction dᵢ (`perturb.direction`), regenerated from its seed inside the jitted
step: a scan over members adds one member's direction at a time to a float32 accumulator, so
memory is the base, one direction and the accumulator whatever N, and bf16 weights get a
float32 update. Antithetic pairs are the members (s, +σ) and (s, −σ).

`ES` is the method behind the ask/tell interface (`thickets_jax.search`); `train` drives it with
orbax checkpoints. The defaults are the reference ES (N = 30, σ = 1e-3, α = 5e-4, z-scores, no 1/σ, no antithetic
pairs, no weight decay, plain SGD).
"""

import dataclasses
from typing import Any, Callable, ClassVar, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from thickets_jax import checkpoint, configs, population, search
from thickets_jax.errors import InputError
from thickets_jax.perturb import PerturbSpec, mean_displacement

PyTree = Any
FITNESS = ("zscore", "centered_rank")
OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


@dataclasses.dataclass(frozen=True)
class ESConfig(configs.Config):
  """Evolution-strategies hyperparameters (flags `--es_<field>`)."""
  FLAG_PREFIX: ClassVar[str] = "es_"
  population: int = configs.setting(
      30, "ES members per iteration N (an even number with --es_antithetic).")
  sigma: float = configs.setting(1e-3, "ES noise scale of every member.")
  learning_rate: float = configs.setting(5e-4, "ES step size α of the optimiser.")
  antithetic: bool = configs.setting(False, "ES members come in pairs (s, +σ), (s, −σ).")
  fitness: str = configs.setting(
      "zscore", "ES fitness shaping: zscore, (r − mean)/(std + 1e-8), or centered_rank, ranks "
      "mapped to [−0.5, 0.5].", choices=FITNESS)
  divide_by_sigma: bool = configs.setting(
      False, "ES: the textbook gradient estimate g/σ (the reference omits it).")
  weight_decay: float = configs.setting(
      0.0, "ES: decoupled weight decay added to the update (optax add_decayed_weights).")
  optimizer: str = configs.setting(
      "sgd", "ES optimiser on the ascent direction: sgd, momentum (0.9), adam or adamw.",
      choices=OPTIMIZERS)

  def validate(self) -> None:
    flag = lambda field: configs.flag_name(self, field)
    if self.population < 2:
      raise InputError(f"{flag('population')} must be at least 2, got {self.population}.")
    if self.antithetic and self.population % 2:
      raise InputError(f"{flag('antithetic')} pairs need an even {flag('population')}, got "
                       f"{self.population}.")
    if not self.sigma > 0:
      raise InputError(f"{flag('sigma')} must be positive, got {self.sigma}.")
    if not np.isfinite(self.sigma):
      raise InputError(f"{flag('sigma')} must be finite, got {self.sigma}.")
    if not self.learning_rate > 0:
      raise InputError(f"{flag('learning_rate')} must be positive, got {self.learning_rate}.")
    if not self.weight_decay >= 0:
      raise InputError(f"{flag('weight_decay')} must be >= 0, got {self.weight_decay}.")
    if self.fitness not in FITNESS:
      raise InputError(f"unknown {flag('fitness')} {self.fitness!r}; known: "
                       f"{', '.join(FITNESS)}.")
    if self.optimizer not in OPTIMIZERS:
      raise InputError(f"unknown {flag('optimizer')} {self.optimizer!r}; known: "
                       f"{', '.join(OPTIMIZERS)}.")

  def transform(self) -> optax.GradientTransformation:
    """The optax transformation that turns −g (optax minimises) into the update."""
    lr = self.learning_rate
    base = {"sgd": lambda: optax.sgd(lr), "momentum": lambda: optax.sgd(lr, momentum=0.9),
            "adam": lambda: optax.adam(lr), "adamw": lambda: optax.adamw(lr, weight_decay=0.0)}
    parts = [optax.add_decayed_weights(self.weight_decay)] if self.weight_decay else []
    return optax.chain(*parts, base[self.optimizer]())


def iteration_members(seed: int, iteration: int, config: ESConfig) -> tuple[np.ndarray, np.ndarray]:
  """The members of one iteration: seeds [N] int64 and signed sigmas [N] float64.

  Drawn from the stream (seed, iteration), independent of RandOpt's stream of `seed`; with
  antithetic pairs, members 2j and 2j+1 share a seed and carry +σ and −σ.
  """
  pairs = config.population // 2 if config.antithetic else config.population
  seeds, _ = population.draw_candidates([seed, iteration], pairs, [config.sigma])
  if not config.antithetic:
    return seeds, np.full(pairs, config.sigma)
  return np.repeat(seeds, 2), np.tile([config.sigma, -config.sigma], pairs)


def shape_fitness(scores: jax.Array, fitness: str) -> jax.Array:
  """Fitness weights z [N] from scores [N] (higher is better)."""
  scores = scores.astype(jnp.float32)
  if fitness == "zscore":
    return (scores - scores.mean()) / (scores.std() + 1e-8)
  if fitness == "centered_rank":  # ties share their mean rank, so equal scores weigh the same
    n = scores.shape[0]
    below = jnp.sum(scores[None, :] < scores[:, None], axis=1)
    equal = jnp.sum(scores[None, :] == scores[:, None], axis=1)
    ranks = below + (equal - 1) / 2  # in [0, n − 1]
    return ranks / (n - 1) - 0.5
  raise InputError(f"unknown fitness shaping {fitness!r}; known: {', '.join(FITNESS)}.")


def ascent_direction(params: PyTree, seeds: jax.Array, sigmas: jax.Array, weights: jax.Array,
                     spec: PerturbSpec) -> PyTree:
  """(1/N) Σᵢ weightsᵢ · sign(σᵢ) · dᵢ, float32, one member's direction in memory at a time.

  seeds [N] int32, sigmas [N] (their sign marks antithetic members), weights [N].
  """
  signs = jnp.sign(sigmas).astype(jnp.float32)
  return mean_displacement(params, seeds, weights.astype(jnp.float32) * signs, spec)


def init(params: PyTree, config: ESConfig) -> PyTree:
  """The optimiser state, float32 whatever the parameters' dtype."""
  return config.transform().init(jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params))


def make_step(config: ESConfig, spec: PerturbSpec = PerturbSpec()) -> Callable:
  """The jitted ES step `(params, opt_state, seeds [N], sigmas [N], scores [N]) -> (params,
  opt_state)`; members as `iteration_members`, scores in their order."""
  transform = config.transform()

  @jax.jit
  def step(params, opt_state, seeds, sigmas, scores):
    weights = shape_fitness(scores, config.fitness)
    g = ascent_direction(params, seeds.astype(jnp.int32), sigmas, weights, spec)
    if config.divide_by_sigma:
      g = jax.tree.map(lambda x: x / config.sigma, g)
    descent = jax.tree.map(jnp.negative, g)
    params32 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
    updates, opt_state = transform.update(descent, opt_state, params32)
    new = jax.tree.map(lambda p, u: (p.astype(jnp.float32) + u).astype(p.dtype), params, updates)
    return new, opt_state

  return step


class ES(search.Method):
  """ES behind the ask/tell interface: one ask per iteration, its members around the current
  iterate under the store name `iteration_<t>`; each tell takes one step.

  `state` ({"params", "opt_state", "iteration"}) is what `train` checkpoints; set it to a
  restored state to resume.
  """

  def __init__(self, params: PyTree, config: ESConfig, *, iterations: int, seed: int,
               spec: PerturbSpec = PerturbSpec()):
    self.config, self.iterations, self.seed = config, iterations, seed
    self.step = make_step(config, spec)
    self.state = {"params": params, "opt_state": init(params, config),
                  "iteration": jnp.int32(0)}
    self._asked: Optional[search.Ask] = None  # the outstanding ask, told next

  @property
  def iteration(self) -> int:
    return int(self.state["iteration"])

  def ask(self) -> Optional[search.Ask]:
    if self.iteration >= self.iterations:
      return None
    seeds, sigmas = iteration_members(self.seed, self.iteration, self.config)
    self._asked = search.Ask(seeds, sigmas, f"iteration_{self.iteration:04d}",
                             center=self.state["params"])
    return self._asked

  def tell(self, scores: search.Scores) -> None:
    params, opt_state = self.step(self.state["params"], self.state["opt_state"],
                                  jnp.asarray(self._asked.seeds, jnp.int32),
                                  jnp.asarray(self._asked.sigmas, jnp.float32),
                                  jnp.asarray(np.asarray(scores.mean, np.float32)))
    self.state = {"params": params, "opt_state": opt_state,
                  "iteration": jnp.int32(self.iteration + 1)}


def run_resumable(method: ES, score: Callable[[search.Ask], search.Scores], checkpoints=None,
                  checkpoint_every: int = 1,
                  after_tell: Callable[[search.Ask, search.Scores], None] = lambda a, s: None
                  ) -> ES:
  """`search.run` of `method`, first restored from `checkpoints` (a
  `checkpoint.TrainingCheckpoints`, or None); after each tell `after_tell`, then the state is
  checkpointed every `checkpoint_every` iterations and after the last."""
  method.state = checkpoint.resume(checkpoints, method.state)

  def after(ask: search.Ask, scores: search.Scores) -> None:
    after_tell(ask, scores)
    checkpoint.save_when_due(checkpoints, method.iteration, method.iterations, checkpoint_every,
                             method.state)
  return search.run(method, score, after)


def train(params: PyTree, score: Callable, config: ESConfig, *, iterations: int, seed: int,
          spec: PerturbSpec = PerturbSpec(), checkpoints=None, checkpoint_every: int = 1,
          on_iteration: Callable = lambda iteration, params, scores: None) -> PyTree:
  """Runs `iterations` ES iterations (`ES` driven by `search.run`), or resumes them from
  `checkpoints`.

  Args:
    params: the starting parameters θ₀.
    score: `(params, iteration, seeds [N], sigmas [N]) -> scores [N]`, higher is better; the
      members are `(seed, sigma)` perturbations of `params` under `spec`.
    config: the ES hyperparameters. seed: the run's root seed (member draws).
    checkpoints: a `checkpoint.TrainingCheckpoints`, or None; step t holds the state after t
      iterations, saved every `checkpoint_every` iterations and after the last.
    on_iteration: `(iterations done, params, scores)` after each update and before its
      checkpoint, so a resumed run may call it again for the same iteration (make it idempotent).

  Returns:
    θ after `iterations` iterations; a resumed run returns the same bits as an uninterrupted one
    when `score` is deterministic.
  """
  method = ES(params, config, iterations=iterations, seed=seed, spec=spec)

  def score_ask(ask: search.Ask) -> search.Scores:
    return search.Scores.means(np.asarray(
        score(ask.center, method.iteration, ask.seeds, ask.sigmas), np.float32))

  def after_tell(ask: search.Ask, scores: search.Scores) -> None:
    on_iteration(method.iteration, method.state["params"], np.asarray(scores.mean, np.float32))

  run_resumable(method, score_ask, checkpoints, checkpoint_every, after_tell)
  return method.state["params"]
