"""Figures: Figure-5-style rollouts, bar charts, density-vs-scale curves (matplotlib, Agg)."""

from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
import numpy as np

from thickets_jax import workdir

BASE, RANDOM, TOP_K, ENSEMBLE, SIGNAL = "black", "0.6", "coral", "gold", "tab:blue"


def _write(fig, path: str) -> None:
  """Every figure leaves here: laid out, written crash-safely (temp file + rename) by the
  writing process only, closed."""
  fig.tight_layout()
  workdir.atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=120, format="png"))
  plt.close(fig)


def _save(fig, ax, path: str, title: str, legend_size: int = 8) -> None:
  ax.set_title(title, fontsize=10)
  ax.legend(fontsize=legend_size)
  _write(fig, path)


def rollouts(path: str, x: np.ndarray, context: np.ndarray, truth: np.ndarray, base: np.ndarray,
             random_members: np.ndarray, top_members: np.ndarray, ensemble: np.ndarray,
             title: str) -> None:
  """Figure 5 style for one curve: context solid blue, truth dashed blue, base black,
  random perturbations thin grey, top-K coral, ensemble gold.

  Args:
    x: [ctx + fut] grid. context: [ctx]. truth, base, ensemble: [fut].
    random_members: [R, fut]. top_members: [K, fut].
  """
  ctx = len(context)
  future_x = x[ctx:]
  fig, ax = plt.subplots(figsize=(7, 4))
  for y in random_members:
    ax.plot(future_x, y, color=RANDOM, lw=0.5, alpha=0.6)
  for y in top_members:
    ax.plot(future_x, y, color=TOP_K, lw=1.0, alpha=0.8)
  ax.plot(future_x, base, color=BASE, lw=1.5, label="base")
  ax.plot(future_x, ensemble, color=ENSEMBLE, lw=2.0, label=f"ensemble of top {len(top_members)}")
  ax.plot(x[:ctx], context, color=SIGNAL, lw=2.0, label="context")
  ax.plot(future_x, truth, color=SIGNAL, lw=1.5, ls="--", label="ground truth")
  ax.plot([], [], color=RANDOM, lw=0.5, label="random perturbations")
  ax.plot([], [], color=TOP_K, label="top-K members")
  spread = np.concatenate([context, truth])
  pad = 0.5 * (np.ptp(spread) + 0.5)
  ax.set_ylim(spread.min() - pad, spread.max() + pad)
  ax.set_xlabel("x")
  _save(fig, ax, path, title, legend_size=7)


def grouped_bars(path: str, groups: Sequence[str], series: dict[str, tuple[np.ndarray, np.ndarray]],
                 ylabel: str, title: str, log: bool = True) -> None:
  """One group of bars per run, one bar per series, with error bars.

  Args:
    series: {label: (values [G], errors [G])}.
  """
  fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) * len(series) / 2), 4))
  width = 0.8 / len(series)
  colors = {"base": BASE, "top-1": TOP_K, "ensemble": ENSEMBLE}
  for i, (label, (values, errors)) in enumerate(series.items()):
    pos = np.arange(len(groups)) + (i - (len(series) - 1) / 2) * width
    ax.bar(pos, values, width, yerr=errors, label=label, color=colors.get(label), capsize=2)
  ax.set_xticks(np.arange(len(groups)), groups, rotation=30, ha="right", fontsize=8)
  if log:
    ax.set_yscale("log")
  ax.set_ylabel(ylabel)
  _save(fig, ax, path, title)


def curves_vs_scale(path: str, sizes: Sequence[float], curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    xlabel: str, ylabel: str, title: str, *, note: str = "",
                    hline: Optional[tuple[float, str]] = None,
                    ylim: Optional[tuple[float, float]] = None) -> None:
  """Lines against a log-scaled size axis with shaded intervals.

  Args:
    curves: {label: (values [S], low [S], high [S])}.
    note: a line of text printed inside the axes (e.g. "base at the floor").
    hline: (value, label) of a dashed horizontal reference line (e.g. a bound).
    ylim: the y range (default: matplotlib's).
  """
  fig, ax = plt.subplots(figsize=(6, 4))
  for label, (values, low, high) in curves.items():
    line, = ax.plot(sizes, values, marker="o", label=label)
    ax.fill_between(sizes, low, high, color=line.get_color(), alpha=0.2)
  if hline is not None:
    ax.axhline(hline[0], color=BASE, ls="--", lw=1, label=hline[1])
  if note:
    ax.text(0.02, 0.02, note, transform=ax.transAxes, fontsize=7, color="firebrick")
  if len(sizes):
    ax.set_xscale("log")
  if ylim is not None:
    ax.set_ylim(*ylim)
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _save(fig, ax, path, title)


def score_histogram(path: str, groups: dict[str, np.ndarray], base: float, xlabel: str,
                    title: str) -> None:
  """Histograms of perturbation scores, one per group (e.g. per sigma), the base as a line."""
  fig, ax = plt.subplots(figsize=(6, 3.5))
  for label, scores in groups.items():
    ax.hist(scores, bins=20, alpha=0.6, label=label)
  ax.axvline(base, color=BASE, lw=2, label="base")
  ax.set_xlabel(xlabel)
  ax.set_ylabel("perturbations")
  _save(fig, ax, path, title)


def correlation_heatmap(path: str, correlation: np.ndarray, names: Sequence[str], title: str) -> None:
  fig, ax = plt.subplots(figsize=(5.5, 4.5))
  image = ax.imshow(correlation, vmin=-1, vmax=1, cmap="coolwarm")
  ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=7)
  ax.set_yticks(range(len(names)), names, fontsize=7)
  ax.set_title(title, fontsize=9)
  fig.colorbar(image)
  _write(fig, path)


def spectra(path: str, gains: np.ndarray, labels: np.ndarray, names: Sequence[str], title: str) -> None:
  """Performance vectors [R, M] as lines across the M tasks, coloured by cluster label."""
  fig, ax = plt.subplots(figsize=(7, 4))
  for row, label in zip(gains, labels):
    ax.plot(range(len(names)), row, color=plt.cm.tab10(label % 10), lw=0.8, alpha=0.6)
  ax.axhline(0, color=BASE, lw=1)
  ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=7)
  ax.set_ylabel("score − base score")
  ax.set_title(title, fontsize=9)
  _write(fig, path)


def clusters_2d(path: str, points: np.ndarray, labels: np.ndarray, title: str) -> None:
  """[R, 2] points coloured by cluster label."""
  fig, ax = plt.subplots(figsize=(5, 4.5))
  ax.scatter(points[:, 0], points[:, 1], c=[plt.cm.tab10(l % 10) for l in labels], s=14)
  ax.set_xlabel("PC 1")
  ax.set_ylabel("PC 2")
  ax.set_title(title, fontsize=9)
  _write(fig, path)


def metric_vs_flops(path: str, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                    levels: dict[str, tuple[float, float]], ylabel: str, title: str,
                    log_y: bool = False, xlabel: str = "training FLOPs") -> None:
  """Figure 1c style: one curve of points per method against training FLOPs (log x), error
  bars ± SE; `levels` (e.g. the base, which trains nothing) are horizontal lines with an SE band.

  Args:
    curves: {method: (training FLOPs [P], value [P], SE [P])}.
    levels: {label: (value, SE)}.
  """
  fig, ax = plt.subplots(figsize=(6.5, 4.2))
  for (label, (value, se)), color in zip(levels.items(), ("black", "0.5", "0.7")):
    ax.axhline(value, color=color, linestyle="--", linewidth=1, label=label)
    ax.axhspan(value - se, value + se, color=color, alpha=0.12)
  for label, (x, y, se) in curves.items():
    ax.errorbar(x, y, yerr=se, marker="o", capsize=3, label=label)
  ax.set_xscale("log")
  if log_y:
    ax.set_yscale("log")
  ax.set_xlabel(xlabel)
  ax.set_ylabel(ylabel)
  _save(fig, ax, path, title)


def landscapes(path: str, coordinates: np.ndarray, panels: dict[str, tuple[np.ndarray, list]],
               axis_labels: tuple[str, str], title: str) -> None:
  """Figure 2 as heat maps: per panel, the relative gain [points (b), points (a)] in % over the
  plane (positive: better than the base, clipped to ±100), the base (0, 0) as a star and the
  projected members as circles labelled by rank.

  Args:
    panels: {title: (gain [points, points], members [{"a", "b"}] best-ranked first)}.
  """
  fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 4.0), squeeze=False)
  extent = (coordinates[0], coordinates[-1], coordinates[0], coordinates[-1])
  for ax, (name, (gain, members)) in zip(axes[0], panels.items()):
    image = ax.imshow(np.clip(gain, -100, 100), origin="lower", extent=extent, cmap="RdBu",
                      vmin=-100, vmax=100, interpolation="nearest")
    ax.plot(0, 0, marker="*", color=BASE, markersize=12, label="base")
    for rank, m in enumerate(members, 1):
      ax.plot(m["a"], m["b"], "o", mfc="none", mec=TOP_K, markersize=8,
              label="top-K members" if rank == 1 else None)
      ax.annotate(str(rank), (m["a"], m["b"]), fontsize=7, color=TOP_K,
                  xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.set_title(name, fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.colorbar(image, ax=ax, label="gain over base, % (clipped ±100)")
  fig.suptitle(title, fontsize=10)
  _write(fig, path)
