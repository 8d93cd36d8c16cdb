"""Figure 2 of the paper, the 2D slices and the learning-rate sweep, from results.

Drawn with matplotlib's object-oriented API on a bare `Figure` (no pyplot, no window), so
it never blocks and needs no display. Each normalization is drawn in the colour and line
style of its registry entry. With one seed a curve is that seed's; with several it is the
mean across seeds with a shaded band of +- one standard deviation.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.figure import Figure

from jaxnorm import density, measures, norms, runfolder, stats, trajectory
from jaxnorm.norms import label
from jaxnorm.result import ExperimentResult, SweepResult


def _draw(ax, x, y_SxN, norm: str, **kwargs) -> None:
  """The seed's line for (1, N) values, or the mean +- std band for (S, N) values."""
  y_SxN = np.asarray(y_SxN, dtype=np.float64)
  spec = norms.REGISTRY.get(norm)
  style = dict(
    color=spec.color if spec else None,
    linestyle=spec.linestyle if spec else "-",
    label=label(norm),
  )
  if y_SxN.shape[0] == 1:
    ax.plot(x, y_SxN[0], **style, **kwargs)
    return
  mean, std = np.nanmean(y_SxN, axis=0), np.nanstd(y_SxN, axis=0)
  ax.plot(x, mean, **style, **kwargs)
  ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)


def figure2(result: ExperimentResult) -> Figure:
  """The 1x3 figure: training loss (log y), landscape slice, spectrum (log y)."""
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(24, 7))
    axes = fig.subplots(1, 3)
    fig.suptitle(result.spec.title, fontsize=20, weight="bold")
    for norm, r in result.norms.items():
      _draw(axes[0], np.arange(r.losses.shape[-1]), r.losses, norm, linewidth=2.5)
      _draw(axes[1], r.alphas, r.landscape, norm, marker="o", markersize=5, alpha=0.9)
      _draw(axes[2], np.arange(r.spectrum.shape[-1]), r.spectrum, norm, linewidth=2.5)
    seeds = result.spec.num_seeds
    band = f" (mean and ±1 std over {seeds} seeds)" if seeds > 1 else ""
    axes[0].set(
      title=f"Training Loss Curves{band}",
      xlabel="Training Step",
      ylabel="Cross-Entropy Loss (Log Scale)",
      yscale="log",
    )
    axes[1].set(
      title=f"1D Loss Landscape Slice{band}",
      xlabel="Perturbation along Random Direction (α)",
      ylabel="Loss",
    )
    axes[1].ticklabel_format(style="sci", axis="y", scilimits=(0, 0))
    axes[2].set(
      title=f"Activation Singular Value Spectrum{band}",
      xlabel="Singular Value Index",
      ylabel="Singular Value Magnitude (Log Scale)",
      yscale="log",
    )
    for ax in axes:
      ax.title.set_fontsize(16)
      ax.legend(fontsize=11)
    for ax in (axes[0], axes[2]):
      ax.grid(True, which="both", ls="--")
    fig.tight_layout(rect=[0, 0.03, 1, 0.93])
  return fig


def render(fig: Figure, fmt: str) -> bytes:
  """The figure as a `fmt` ("png", "pdf") file, 100 dpi."""
  buffer = io.BytesIO()
  fig.savefig(buffer, format=fmt, dpi=100)
  return buffer.getvalue()


def save_figure(fig: Figure, path_stem: str | Path, formats=("png", "pdf")) -> list[Path]:
  """Writes `stem.png` and `stem.pdf`; returns the paths. The files are written in
  place: a run stages its folder (`runfolder`), so nothing else needs to be atomic."""
  paths = []
  for fmt in formats:
    path = Path(f"{path_stem}.{fmt}")
    runfolder.write_bytes(path, render(fig, fmt))
    paths.append(path)
  return paths


def surfaces(result: ExperimentResult) -> Figure:
  """Contour plots of the first seed's 2D loss slice, one panel per normalization.

  Entry [i, j] of a surface is at alpha = grid[i] (first direction), beta = grid[j].
  """
  drawn = {n: r for n, r in result.norms.items() if r.surface is not None}
  if not drawn:
    raise ValueError("the result holds no 2D slice (run with surface_points / --surface N)")
  fig = Figure(figsize=(7 * len(drawn), 6))
  axes = fig.subplots(1, len(drawn), squeeze=False)[0]
  for ax, (norm, r) in zip(axes, drawn.items(), strict=True):
    a = b = np.asarray(r.surface_grid)
    z = np.asarray(r.surface[0])
    cs = ax.contourf(b, a, z, levels=20, cmap="viridis")
    ax.contour(b, a, z, levels=10, colors="k", linewidths=0.5)
    fig.colorbar(cs, ax=ax, label="Loss")
    ax.plot([0], [0], "r*", markersize=12)
    ax.set(
      title=f"{label(norm)}: 2D slice, filter-normalized directions (seed {r.seeds[0]})",
      xlabel="β (second direction)",
      ylabel="α (first direction)",
    )
  fig.tight_layout()
  return fig


def sweep(result: SweepResult) -> Figure:
  """One panel per measure of `measures.md`: its mean across seeds against the learning
  rate (log x; log y where every value is positive), one line per normalization, error
  bars the 95% confidence interval with several seeds."""
  by_rate = stats.by_rate(result)
  shown = measures.shown(next(iter(by_rate.values())))
  columns = min(4, len(shown))
  rows = math.ceil(len(shown) / columns)
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(5 * columns, 4 * rows))
    axes = np.atleast_1d(fig.subplots(rows, columns, squeeze=False).ravel())
    for ax, m in zip(axes, shown, strict=False):
      positive = True
      for norm, by_name in by_rate.items():
        cells = by_name[m.name]
        mean = np.array([np.nan if s["mean"] is None else s["mean"] for s in cells])
        low = np.array([np.nan if s["ci95"][0] is None else s["ci95"][0] for s in cells])
        high = np.array([np.nan if s["ci95"][1] is None else s["ci95"][1] for s in cells])
        spec = norms.REGISTRY.get(norm)
        err = np.nan_to_num(np.stack([mean - low, high - mean]))
        ax.errorbar(
          result.rates,
          mean,
          yerr=err if np.isfinite(low).any() else None,
          color=spec.color if spec else None,
          linestyle=spec.linestyle if spec else "-",
          marker="o",
          capsize=3,
          label=label(norm),
        )
        positive &= bool(np.all(mean[np.isfinite(mean)] > 0))
      ax.set(title=m.label, xlabel="learning rate", xscale="log")
      if positive:
        ax.set_yscale("log")
    for ax in axes[len(shown) :]:
      ax.set_visible(False)
    axes[0].legend()
    seeds = result.runs[0].spec.num_seeds
    fig.suptitle(f"Measures against the learning rate ({seeds} seed(s) per point)")
    fig.tight_layout()
  return fig


def hessian_density(result: ExperimentResult) -> Figure:
  """The Hessian's eigenvalue density of every normalization (stochastic Lanczos
  quadrature, `density.density_on`), the mean over seeds, on a log scale: the bulk near 0,
  the outliers, and the mass below 0 (in the legend)."""
  drawn = {n: r for n, r in result.norms.items() if r.hessian_density is not None}
  if not drawn:
    raise ValueError("the result holds no Hessian density (run with measures)")
  fig = Figure(figsize=(7 * len(drawn), 5))
  axes = fig.subplots(1, len(drawn), squeeze=False)[0]
  for ax, (norm, r) in zip(axes, drawn.items(), strict=True):
    nodes, weights = (np.asarray(x, dtype=np.float64) for x in r.hessian_density)
    finite = np.isfinite(nodes).all(axis=1) & np.isfinite(weights).all(axis=1)
    if not finite.any():
      ax.set(title=f"{label(norm)}: no finite density")
      continue
    nodes, weights = nodes[finite], weights[finite]
    low, high = nodes.min(), nodes.max()
    pad = 0.05 * max(high - low, 1e-12)
    grid = np.linspace(low - pad, high + pad, 2000)
    sigma = (high - low + 2 * pad) / 60
    smoothed = np.asarray(density.density_on(grid, nodes, weights, sigma))
    negative = float(density.negative_mass(nodes, weights))
    spec = norms.REGISTRY.get(norm)
    ax.plot(grid, np.maximum(smoothed, 1e-8), color=spec.color if spec else None)
    ax.set(
      title=f"{label(norm)}: Hessian eigenvalue density",
      xlabel="eigenvalue",
      ylabel="density (log scale)",
      yscale="log",
    )
    ax.axvline(0.0, color="gray", linewidth=0.8)
    ax.text(0.02, 0.95, f"mass below 0: {negative:.3f}", transform=ax.transAxes, va="top")
  fig.suptitle(
    f"Stochastic Lanczos quadrature, {int(nodes.shape[1])} nodes per seed, "
    f"mean over {result.spec.num_seeds} seed(s)"
  )
  fig.tight_layout()
  return fig


def curvature_over_training(result: ExperimentResult) -> Figure:
  """Left: the Hessian's lambda_max at the end of every training chunk; right: Adam's
  preconditioned sharpness with its stability threshold 38 / eta dashed (Cohen et al. 2022),
  one line per normalization (mean over seeds, log y)."""
  drawn = {n: r for n, r in result.norms.items() if r.trajectory is not None}
  if not drawn:
    raise ValueError("the result holds no curvature over training (curvature_iterations)")
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(14, 5))
    left, right = fig.subplots(1, 2)
    for norm, r in drawn.items():
      _draw(left, r.trajectory_steps, r.trajectory[..., 0], norm, marker="o", markersize=3)
      _draw(right, r.trajectory_steps, r.trajectory[..., 1], norm, marker="o", markersize=3)
      spec = norms.REGISTRY.get(norm)
      right.axhline(
        trajectory.stability_threshold(r.learning_rate),
        color=spec.color if spec else None,
        linestyle=":",
        linewidth=1,
      )
    left.set(title="Hessian λ_max (training loss)", xlabel="step", yscale="log")
    right.set(
      title="Adam preconditioned sharpness; dotted: 38/η",
      xlabel="step",
      yscale="log",
    )
    left.legend()
    fig.tight_layout()
  return fig
