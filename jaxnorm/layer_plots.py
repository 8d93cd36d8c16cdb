"""The layer-wise dissection's figures: the singular values of the representation at
chosen layers, one log-scale panel per layer (the paper's Experiment 4 figure: layers 1, 3
and 6 of its 6 blocks), and each isotropy measure against depth.

Layer 0 is the embedding output, layer l block l's output (`NormResult.layer_spectra`,
(S, N + 1, K), and `layer_measures`, (S, N + 1) per isotropy measure). Drawn as
`plotting.figure2` is: matplotlib's object-oriented API on a bare `Figure`, each
normalization in the colour and line style of its registry entry, with several seeds the
mean across seeds and a band of ± one standard deviation. A seed whose values are all
NaN (a diverged model) contributes nothing, and a model with no finite value draws
nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.style
import numpy as np
from matplotlib.figure import Figure

from jaxnorm import layer_report, norms, plotting
from jaxnorm.norms import label
from jaxnorm.result import ExperimentResult

# Measures drawn on a log scale (they span orders of magnitude); the ranks are linear.
LOG_SCALED = ("condition_number", "centered_condition_number")


def default_layers(num_blocks: int) -> tuple[int, ...]:
  """The layers the spectra figure shows for N blocks: the first, middle (ceil(N / 2)) and
  last block's output, (1, 3, 6) for the paper's 6; for one block, the embedding output
  and the block's, (0, 1). Raises ValueError for N < 1."""
  if num_blocks < 1:
    raise ValueError(f"a model has at least one block, got num_blocks={num_blocks}")
  if num_blocks == 1:
    return (0, 1)
  return tuple(sorted({1, math.ceil(num_blocks / 2), num_blocks}))


def mean_and_std(y_SxN: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Per column (N,), the mean and population standard deviation over the seeds whose
  value there is finite; NaN for a column without any (no warning, unlike np.nanmean)."""
  y_SxN = np.asarray(y_SxN, dtype=np.float64)
  finite = np.isfinite(y_SxN)
  count = finite.sum(axis=0)
  safe = np.maximum(count, 1)
  mean = np.where(finite, y_SxN, 0.0).sum(axis=0) / safe
  var = np.where(finite, (y_SxN - mean) ** 2, 0.0).sum(axis=0) / safe
  missing = count == 0
  return np.where(missing, np.nan, mean), np.where(missing, np.nan, np.sqrt(var))


def draw_band(ax, x, y_SxN, norm: str, legend: str | None = None, **kwargs) -> bool:
  """Draws `norm`'s values (S, N) against x (N,): with one seed holding finite values,
  that seed's line; with several, their mean and a band of ± one standard deviation. Seeds
  whose values are all NaN are left out; returns False, drawing nothing, when no seed is
  left. The legend names the norm, or says `legend`."""
  y_SxN = np.asarray(y_SxN, dtype=np.float64)
  kept = y_SxN[np.isfinite(y_SxN).any(axis=1)]
  if not len(kept):
    return False
  spec = norms.REGISTRY.get(norm)
  style = dict(
    color=spec.color if spec else None,
    linestyle=spec.linestyle if spec else "-",
    label=legend or label(norm),
  )
  if len(kept) == 1:
    ax.plot(x, kept[0], **style, **kwargs)
    return True
  mean, std = mean_and_std(kept)
  ax.plot(x, mean, **style, **kwargs)
  ax.fill_between(x, mean - std, mean + std, color=style["color"], alpha=0.2, linewidth=0)
  return True


def _band_text(result: ExperimentResult) -> str:
  seeds = result.spec.num_seeds
  return f" (mean and ±1 std over {seeds} seeds)" if seeds > 1 else ""


def accuracy_legend(norm: str, r) -> str:
  """The norm's name, and on a text data set its last epoch's training accuracy as the
  paper's Figure 4 gives it ("LayerNorm (train acc. 0.912)"; mean ± std over seeds)."""
  if getattr(r, "epoch_accuracy", None) is None:
    return label(norm)
  last_S = np.asarray(r.epoch_accuracy, np.float64)[:, -1]
  last_S = last_S[np.isfinite(last_S)]
  if not len(last_S):
    return f"{label(norm)} (diverged)"
  if len(last_S) == 1:
    return f"{label(norm)} (train acc. {last_S[0]:.3f})"
  return f"{label(norm)} (train acc. {last_S.mean():.3f} ± {last_S.std(ddof=1):.3f})"


def layer_title(layer: int) -> str:
  """A panel's title: "Layer 3", "Layer 0 (embedding output)"."""
  return "Layer 0 (embedding output)" if layer == 0 else f"Layer {layer}"


def layer_spectra(result: ExperimentResult, layers=None) -> Figure:
  """The singular values of the (B L, D) representation at each of `layers` (default
  `default_layers(N)`), one log-scale panel per layer titled by it, one line per
  normalization. Raises ValueError when no model holds layer spectra (a run saved before
  the dissection) or for a layer outside 0 .. N."""
  drawn = {n: r for n, r in result.norms.items() if r.layer_spectra is not None}
  if not drawn:
    raise ValueError(
      "the result holds no layer spectra (saved before jaxnorm measured every layer)"
    )
  depth = max(r.layer_spectra.shape[1] - 1 for r in drawn.values())
  layers = default_layers(depth) if layers is None else tuple(int(x) for x in layers)
  outside = [x for x in layers if not 0 <= x <= depth]
  if outside or not layers:
    raise ValueError(f"layers={layers} is invalid: between 0 and {depth} (N blocks), not empty")
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(8 * len(layers), 6))
    axes = fig.subplots(1, len(layers), squeeze=False)[0]
    for ax, layer in zip(axes, layers, strict=True):
      for norm, r in drawn.items():
        if layer < r.layer_spectra.shape[1]:
          s_SxK = r.layer_spectra[:, layer]
          legend = accuracy_legend(norm, r)
          draw_band(ax, np.arange(s_SxK.shape[-1]), s_SxK, norm, legend, linewidth=2.5)
      ax.set(
        title=layer_title(layer),
        xlabel="Singular Value Index",
        ylabel="Singular Value Magnitude (Log Scale)",
        yscale="log",
      )
      ax.title.set_fontsize(16)
      ax.grid(True, which="both", ls="--")
      if ax.get_lines():
        ax.legend(fontsize=11)
    fig.suptitle(
      f"{result.spec.title}: singular values by layer{_band_text(result)}",
      fontsize=18,
      weight="bold",
    )
    fig.tight_layout(rect=[0, 0.03, 1, 0.92])
  return fig


def isotropy_by_depth(result: ExperimentResult) -> Figure:
  """Each isotropy measure that tables show against depth 0 .. N (0: the embedding
  output), one panel per measure, one line per normalization. Raises ValueError when no
  model holds isotropy measures at every layer (an older run, or one without the isotropy
  family)."""
  drawn = layer_report.layered(result)
  shown = layer_report.isotropy_shown(drawn)
  if not shown:
    raise ValueError(
      "the result holds no isotropy measure at every layer (saved before jaxnorm measured "
      "every layer, or run without the isotropy family)"
    )
  columns = min(3, len(shown))
  rows = math.ceil(len(shown) / columns)
  with matplotlib.style.context("seaborn-v0_8-whitegrid"):
    fig = Figure(figsize=(6 * columns, 4.5 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, m in zip(axes, shown, strict=False):
      depth = 0
      for norm, r in drawn.items():
        values = layer_report.layer_measure(r, m.name)
        if values is not None:
          depth = max(depth, values.shape[1] - 1)
          draw_band(ax, np.arange(values.shape[1]), values, norm, marker="o", markersize=4)
      log = m.name in LOG_SCALED
      ax.set(
        title=m.label,
        xlabel="layer (0: embedding output)",
        ylabel=(m.unit or "value") + (" (log scale)" if log else ""),
        yscale="log" if log else "linear",
        xticks=np.arange(depth + 1),
      )
      if ax.get_lines():
        ax.legend()
    for ax in axes[len(shown) :]:
      ax.set_visible(False)
    fig.suptitle(f"{result.spec.title}: isotropy by depth{_band_text(result)}")
    fig.tight_layout()
  return fig


def has_layer_spectra(result: ExperimentResult) -> bool:
  """Whether `layer_spectra` can draw `result` (some model holds layer spectra)."""
  return any(r.layer_spectra is not None for r in result.norms.values())


def has_layer_isotropy(result: ExperimentResult) -> bool:
  """Whether `isotropy_by_depth` can draw `result`."""
  return bool(layer_report.isotropy_shown(layer_report.layered(result)))


def save_figures(result: ExperimentResult, stem: str | Path) -> list[Path]:
  """Writes the figures `result` holds data for into the folder `stem`: layers.png and
  .pdf (`layer_spectra`), isotropy_depth.png and .pdf (`isotropy_by_depth`); nothing for
  a run without layer data. Returns the paths written."""
  paths = []
  if has_layer_spectra(result):
    paths += plotting.save_figure(layer_spectra(result), Path(stem) / "layers")
  if has_layer_isotropy(result):
    paths += plotting.save_figure(isotropy_by_depth(result), Path(stem) / "isotropy_depth")
  return paths
