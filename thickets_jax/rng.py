"""Every PRNG purpose of the project, derived from one integer seed in one place.

A run has one root seed. Each purpose gets its own stream, `fold_in(key(seed), PURPOSE)`, so two
purposes never share a key however the seed is chosen; per-item keys (a member's leaves, a
generation step, a prompt batch) are then derived with `fold_in`, never by re-splitting a parent.

  init      parameters of an untrained base (1D MLPs)
  pretrain  pretraining batches (1D MLPs)
  data      sampled data sets (1D post-train and test signals)
  sampling  temperature sampling during generation (GRPO rollouts: one key per step)
  evaluation  test-time samples voted on (every evaluated model draws the same keys)
  landscape random directions of a landscape plane
  member    a population member's noise; its seed is the member's own, drawn by
            `population.draw_candidates` from the root seed with numpy's SeedSequence

The member purpose's value is fixed forever: it defines which parameters `(seed, sigma)` names.
"""

import jax

PURPOSES = {"init": 1, "pretrain": 2, "data": 3, "sampling": 4, "evaluation": 5, "landscape": 6,
            "member": 0x7E7B}


def key(seed, purpose: str) -> jax.Array:
  """The key of `purpose` for integer `seed` (a Python int or a traced int32)."""
  if purpose not in PURPOSES:
    raise ValueError(f"unknown PRNG purpose {purpose!r}; known: {', '.join(PURPOSES)}")
  return jax.random.fold_in(jax.random.key(seed), PURPOSES[purpose])


def member_key(seed) -> jax.Array:
  """The key of the population member with integer `seed`."""
  return key(seed, "member")
