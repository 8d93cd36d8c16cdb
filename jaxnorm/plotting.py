"""Figure 2 of the paper from saved results: loss curves, landscape slice, spectrum.

Drawn with matplotlib's object-oriented API on a bare `Figure` (no pyplot, no window), so
it never blocks and needs no display. Arrays with a leading seed axis are drawn as the
mean across seeds with a shaded band of +- one standard deviation.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.figure import Figure

from jaxnorm import norms
from jaxnorm.results import atomic_write

# The reference's colours and line styles, and the paper's for Experiment 3's L2 model.
COLORS = {
  "layernorm": "blue",
  "batchnorm": "green",
  "none": "red",
  "l2": "purple",
  "rmsnorm": "orange",
}
LINESTYLES = {"layernorm": "-", "batchnorm": (0, (3, 3)), "none": "-", "l2": ":", "rmsnorm": "-."}


def label(norm: str) -> str:
  spec = norms.REGISTRY.get(norm)
  return spec.label if spec else norm


def _draw(ax, x, y, norm: str, **kwargs) -> None:
  """A line for (N,) values, or mean +- std band for (S, N) values over S seeds."""
  y = np.asarray(y, dtype=np.float64)
  style = dict(color=COLORS.get(norm), linestyle=LINESTYLES.get(norm, "-"), label=label(norm))
  if y.ndim == 1:
    ax.plot(x, y, **style, **kwargs)
    return
  mean, std = np.nanmean(y, axis=0), np.nanstd(y, axis=0)
  ax.plot(x, mean, **style, **kwargs)
  ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)


def figure2(arrays: dict[str, dict[str, np.ndarray]], title: str | None = None) -> Figure:
  """The 1x3 figure: training loss (log y), landscape slice, spectrum (log y)."""
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(24, 7))
    axes = fig.subplots(1, 3)
    fig.suptitle(
      title or "Comparative Analysis of Normalization Techniques", fontsize=20, weight="bold"
    )
    seeds = None
    for norm, a in arrays.items():
      loss = np.asarray(a["loss"])
      seeds = loss.shape[0] if loss.ndim == 2 else None
      _draw(axes[0], np.arange(loss.shape[-1]), loss, norm, linewidth=2.5)
      alphas = np.asarray(a["alphas"])
      _draw(
        axes[1],
        alphas if alphas.ndim == 1 else alphas[0],
        a["landscape"],
        norm,
        marker="o",
        markersize=5,
        alpha=0.9,
      )
      spec = np.asarray(a["spectrum"])
      _draw(axes[2], np.arange(spec.shape[-1]), spec, norm, linewidth=2.5)
    band = f" (mean and ±1 std over {seeds} seeds)" if seeds else ""
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


def save_figure(fig: Figure, path_stem: str | Path, formats=("png", "pdf")) -> list[Path]:
  """Writes `stem.png` and `stem.pdf` atomically; returns the paths."""
  paths = []
  for fmt in formats:
    path = Path(f"{path_stem}.{fmt}")
    atomic_write(path, lambda f, fmt=fmt: fig.savefig(f, format=fmt, dpi=100))
    paths.append(path)
  return paths


def surfaces(grids: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> Figure:
  """Contour plots of 2D loss slices, one panel per normalization.

  grids: norm -> (alphas (A,), betas (B,), losses (A, B)) as from
  `directions.model_surface`; entry [i, j] is at alpha = alphas[i], beta = betas[j].
  """
  fig = Figure(figsize=(7 * len(grids), 6))
  axes = fig.subplots(1, len(grids), squeeze=False)[0]
  for ax, (norm, (a, b, z)) in zip(axes, grids.items(), strict=True):
    cs = ax.contourf(np.asarray(b), np.asarray(a), np.asarray(z), levels=20, cmap="viridis")
    ax.contour(np.asarray(b), np.asarray(a), np.asarray(z), levels=10, colors="k", linewidths=0.5)
    fig.colorbar(cs, ax=ax, label="Loss")
    ax.plot([0], [0], "r*", markersize=12)
    ax.set(
      title=f"{label(norm)}: 2D slice, filter-normalized directions",
      xlabel="β (second direction)",
      ylabel="α (first direction)",
    )
  fig.tight_layout()
  return fig
