"""Solution density (Def. 2.1) and spectral discordance (Def. 2.2); docs/method.md §2."""

from typing import Optional, Sequence

import numpy as np
from scipy import stats


def wilson_interval(successes: int, trials: int, z: float = 1.959963984540054) -> tuple[float, float]:
  """Wilson score interval of a binomial proportion (95% by default)."""
  if trials <= 0:
    return 0.0, 1.0
  p = successes / trials
  denom = 1 + z**2 / trials
  center = (p + z**2 / (2 * trials)) / denom
  half = z * np.sqrt(p * (1 - p) / trials + z**2 / (4 * trials**2)) / denom
  return float(max(0.0, center - half)), float(min(1.0, center + half))


def mean_se(values: Sequence[float]) -> tuple[float, float]:
  """(mean, standard error of the mean) of `values`; the SE of a single value is 0."""
  values = np.asarray(values, np.float64)
  se = values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else 0.0
  return float(values.mean()), float(se)


def binomial_se(p: float, n: int) -> float:
  """Standard error of an accuracy p measured on n independent examples."""
  return float(np.sqrt(p * (1 - p) / n))


def improvements(scores: np.ndarray, base: float, relative: bool = False) -> np.ndarray:
  """s(θ+ε) − s(θ), or that divided by |s(θ)| when `relative` (for MSE-like scales)."""
  gain = np.asarray(scores, np.float64) - base
  return gain / abs(base) if relative else gain


def solution_density(scores: np.ndarray, base: float, margins: Sequence[float], *,
                     sigmas: Optional[np.ndarray] = None, relative: bool = False) -> list[dict]:
  """δ(m) = P[s(θ+ε) ≥ s(θ) + m], estimated per sigma and margin, with Wilson 95% intervals.

  Args:
    scores: [N] higher-is-better scores of the perturbations (negate losses first).
    base: the base model's score.
    margins: margins m, absolute (accuracy) or relative to |base| when `relative`.
    sigmas: [N] each perturbation's sigma; None pools everything under sigma "all".

  Returns:
    One row per (sigma, margin): {sigma, margin, density, ci_low, ci_high, count, n}.
  """
  gain = improvements(scores, base, relative)
  groups = {"all": np.ones(len(gain), bool)} if sigmas is None else {
      float(s): np.asarray(sigmas) == s for s in sorted(set(np.asarray(sigmas).tolist()))}
  rows = []
  for sigma, mask in groups.items():
    n = int(mask.sum())
    for m in margins:
      # A tiny tolerance so that "matches the base" (m = 0) is not lost to float round-off.
      count = int(np.sum(gain[mask] >= m - 1e-12))
      low, high = wilson_interval(count, n)
      rows.append({"sigma": sigma, "margin": float(m), "density": count / max(n, 1),
                   "ci_low": low, "ci_high": high, "count": count, "n": n})
  return rows


def versus_base(scores: np.ndarray, base: float, *, floor: float = 0.0,
                ceiling: Optional[float] = 1.0) -> dict:
  """How the perturbations sit against the base: strictly above, tied, below.

  δ(m = 0) counts ties as successes, so a base at the floor (every member ties a zero base)
  reads as "density 1.0"; these fractions, with Wilson 95% intervals, and `base_at` say so.

  Args:
    scores: [N] higher-is-better scores. base: the base's score.
    floor, ceiling: the score's range (ceiling None: unbounded).

  Returns:
    {above, tied, below: {fraction, ci_low, ci_high, count}, n, base_at: "floor" | "ceiling" | None}.
  """
  gain = improvements(scores, base)
  n = len(gain)
  counts = {"above": int(np.sum(gain > 1e-12)), "tied": int(np.sum(np.abs(gain) <= 1e-12))}
  counts["below"] = n - counts["above"] - counts["tied"]
  result = {}
  for name, count in counts.items():
    low, high = wilson_interval(count, n)
    result[name] = {"fraction": count / max(n, 1), "ci_low": low, "ci_high": high, "count": count}
  at_floor = base <= floor + 1e-12
  at_ceiling = ceiling is not None and base >= ceiling - 1e-12
  return {**result, "n": n, "base_at": "floor" if at_floor else "ceiling" if at_ceiling else None}


def percentile_ranks(scores: np.ndarray) -> np.ndarray:
  """Each row's percentile rank within each column, in (0, 1]; ties share their mean rank.

  [N, M] -> [N, M].
  """
  scores = np.asarray(scores, np.float64)
  return stats.rankdata(scores, axis=0) / scores.shape[0]


def spectral_discordance(scores: np.ndarray) -> dict:
  """D = 1 − mean off-diagonal Pearson correlation of the percentile-rank columns.

  Args:
    scores: [N, M] score of perturbation n on task m.

  Returns:
    {discordance, upper_bound = M/(M−1), correlation [M, M], constant_tasks}. A task whose
    column is constant has no rank order; D is then undefined and reported as None.
  """
  scores = np.asarray(scores, np.float64)
  n, m = scores.shape
  if m < 2 or n < 2:
    raise ValueError(f"spectral discordance needs N >= 2 perturbations and M >= 2 tasks, got {scores.shape}")
  ranks = percentile_ranks(scores)
  constant = [j for j in range(m) if np.ptp(ranks[:, j]) == 0]
  result = {"upper_bound": m / (m - 1), "constant_tasks": constant, "n": n, "m": m}
  if constant:
    return {**result, "discordance": None, "correlation": None}
  corr = np.corrcoef(ranks, rowvar=False)
  off_diagonal = corr[~np.eye(m, dtype=bool)]
  return {**result, "discordance": float(1 - off_diagonal.mean()), "correlation": corr.tolist()}


def discordance_interval(scores: np.ndarray, *, draws: int = 1000, seed: int = 0,
                         level: float = 0.95) -> Optional[tuple[float, float]]:
  """Percentile bootstrap interval of D, resampling the N perturbations (rows) with
  replacement; resamples in which a task's column is constant are skipped. None when fewer than
  half of the resamples define D.

  Args:
    scores: [N, M] score of perturbation n on task m.
  """
  scores = np.asarray(scores, np.float64)
  rng = np.random.default_rng(seed)
  values = []
  for _ in range(draws):
    d = spectral_discordance(scores[rng.integers(0, len(scores), len(scores))])["discordance"]
    if d is not None:
      values.append(d)
  if len(values) < draws / 2:
    return None
  tail = 100 * (1 - level) / 2
  return float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))


def pca(x: np.ndarray, components: int = 2) -> tuple[np.ndarray, list[float]]:
  """Principal components of the rows of x [N, M]: the projections [N, components] and each
  component's explained variance ratio."""
  centered = x - x.mean(0)
  _, s, vt = np.linalg.svd(centered, full_matrices=False)
  total = float((s**2).sum()) or 1.0
  return centered @ vt[:components].T, [float(v**2 / total) for v in s[:components]]
