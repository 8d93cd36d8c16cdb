"""The layer-wise figures (`jaxnorm.layer_plots`): the spectra at chosen layers in the
paper's layout and the isotropy measures against depth; what is drawn is checked against
the arrays (every seed in the mean and the band, NaN-only seeds left out), and a result
without layer data is refused."""

import json

import matplotlib.colors
import matplotlib.lines
import numpy as np
import pytest
from helpers import norm_result
from matplotlib.collections import PolyCollection

from jaxnorm import config, layer_plots, manifests, measures, norms, plotting, results
from jaxnorm.norms import label
from jaxnorm.result import ExperimentResult
from jaxnorm.spec import ExperimentSpec

NORMS = ("layernorm", "l2", "none")
ISOTROPY = tuple(p + f for p in ("", "centered_") for f in measures.ISOTROPY_FIELDS)


def _layered(norm, rng, seeds, blocks, k=8):
  """`norm`'s result with random layer spectra (S, N + 1, K), positive and decreasing, and
  every isotropy measure (S, N + 1) plus the per-block Hessian (S, N)."""
  spectra = np.sort(rng.uniform(1.0, 5.0, (seeds, blocks + 1, k)))[..., ::-1].copy()
  layer_measures = {name: rng.uniform(1.0, 9.0, (seeds, blocks + 1)) for name in ISOTROPY}
  layer_measures["block_hessian_trace"] = rng.uniform(1.0, 2.0, (seeds, blocks))
  return norm_result(norm, seeds, layer_spectra=spectra, layer_measures=layer_measures)


def _result(seeds=3, blocks=6, **by_norm):
  rng = np.random.default_rng(0)
  results = {n: by_norm.get(n) or _layered(n, rng, seeds, blocks) for n in NORMS}
  spec = ExperimentSpec(config.DEEP, num_seeds=seeds, measures=None, title="Deep")
  return ExperimentResult(spec, results, 0.0, {})


def _line(ax, norm):
  found = [line for line in ax.get_lines() if line.get_label() == label(norm)]
  assert len(found) <= 1
  return found[0] if found else None


def _band_edges(ax, norm):
  """The lower and upper edge of `norm`'s band in `ax`, per x, from the polygon's
  vertices (the one PolyCollection of its colour)."""
  color = norms.REGISTRY[norm].color
  bands = [
    c
    for c in ax.collections
    if isinstance(c, PolyCollection)
    and np.allclose(c.get_facecolor()[0][:3], matplotlib.colors.to_rgb(color))
  ]
  assert len(bands) == 1
  vertices = bands[0].get_paths()[0].vertices
  xs = np.unique(vertices[:, 0])
  low = np.array([vertices[vertices[:, 0] == x, 1].min() for x in xs])
  high = np.array([vertices[vertices[:, 0] == x, 1].max() for x in xs])
  return low, high


@pytest.mark.parametrize(
  "blocks, layers", [(6, (1, 3, 6)), (1, (0, 1)), (2, (1, 2)), (3, (1, 2, 3)), (5, (1, 3, 5))]
)
def test_default_layers_are_the_first_middle_and_last_block(blocks, layers):
  assert layer_plots.default_layers(blocks) == layers
  assert all(0 <= x <= blocks for x in layers)


def test_default_layers_refuse_a_model_without_blocks():
  with pytest.raises(ValueError, match="at least one block"):
    layer_plots.default_layers(0)


def test_layer_spectra_draws_the_papers_three_panels_from_every_seed(tmp_path):
  result = _result(seeds=3, blocks=6)
  fig = layer_plots.layer_spectra(result)
  axes = fig.get_axes()
  assert [ax.get_title() for ax in axes] == ["Layer 1", "Layer 3", "Layer 6"]
  for ax, layer in zip(axes, (1, 3, 6), strict=True):
    assert ax.get_yscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [label(n) for n in NORMS]
    for norm in NORMS:
      s_SxK = result.norms[norm].layer_spectra[:, layer]
      line = _line(ax, norm)
      assert line.get_color() == norms.REGISTRY[norm].color
      assert (
        line.get_linestyle()
        == matplotlib.lines.Line2D([], [], linestyle=norms.REGISTRY[norm].linestyle).get_linestyle()
      )
      np.testing.assert_allclose(line.get_xdata(), np.arange(s_SxK.shape[1]))
      np.testing.assert_allclose(line.get_ydata(), s_SxK.mean(axis=0))  # every seed
      low, high = _band_edges(ax, norm)
      np.testing.assert_allclose(low, s_SxK.mean(0) - s_SxK.std(0))
      np.testing.assert_allclose(high, s_SxK.mean(0) + s_SxK.std(0))
  assert plotting.save_figure(fig, tmp_path / "layers", formats=("png",))[0].stat().st_size


def test_layer_spectra_at_chosen_layers_and_the_embedding():
  result = _result(seeds=1, blocks=2)
  axes = layer_plots.layer_spectra(result, layers=[0, 2]).get_axes()
  assert [ax.get_title() for ax in axes] == ["Layer 0 (embedding output)", "Layer 2"]
  for ax, layer in zip(axes, (0, 2), strict=True):
    assert not ax.collections  # one seed: its line, no band
    for norm in NORMS:
      np.testing.assert_array_equal(
        _line(ax, norm).get_ydata(), result.norms[norm].layer_spectra[0, layer]
      )
  for layers in ([3], [-1], []):
    with pytest.raises(ValueError, match="layers="):
      layer_plots.layer_spectra(result, layers=layers)


def test_nan_only_seeds_draw_nothing():
  """A seed whose values are all NaN (a diverged model) is left out of the mean and the
  band; a model none of whose seeds has a finite value draws no line (and no warning)."""
  result = _result(seeds=3, blocks=6)
  result.norms["none"].layer_spectra[1] = np.nan
  result.norms["none"].layer_measures["effective_rank"][1] = np.nan
  result.norms["l2"].layer_spectra[:] = np.nan
  result.norms["l2"].layer_measures["effective_rank"][:] = np.nan
  spectra = layer_plots.layer_spectra(result).get_axes()
  kept = result.norms["none"].layer_spectra[[0, 2], 3]
  np.testing.assert_allclose(_line(spectra[1], "none").get_ydata(), kept.mean(0))
  np.testing.assert_allclose(_band_edges(spectra[1], "none")[1], kept.mean(0) + kept.std(0))
  assert all(_line(ax, "l2") is None for ax in spectra)
  assert all(len(ax.collections) == 2 for ax in spectra)  # LayerNorm's and No Norm's bands
  depth = layer_plots.isotropy_by_depth(result)
  panel = next(ax for ax in depth.get_axes() if ax.get_title() == "effective rank")
  kept = result.norms["none"].layer_measures["effective_rank"][[0, 2]]
  np.testing.assert_allclose(_line(panel, "none").get_ydata(), kept.mean(0))
  assert _line(panel, "l2") is None


def test_a_seed_with_some_finite_values_keeps_them():
  result = _result(seeds=2, blocks=1)
  result.norms["none"].layer_spectra[1, 1, 3:] = np.nan
  ax = layer_plots.layer_spectra(result, layers=[1]).get_axes()[0]
  s_SxK = result.norms["none"].layer_spectra[:, 1]
  expected = np.concatenate([s_SxK[:, :3].mean(0), s_SxK[0, 3:]])
  np.testing.assert_allclose(_line(ax, "none").get_ydata(), expected)


def test_isotropy_by_depth_draws_each_shown_measure_against_depth(tmp_path):
  result = _result(seeds=3, blocks=4)
  fig = layer_plots.isotropy_by_depth(result)
  panels = [ax for ax in fig.get_axes() if ax.get_visible()]
  shown = measures.shown(ISOTROPY)
  assert [ax.get_title() for ax in panels] == [m.label for m in shown]
  assert "stable rank, centered" not in [ax.get_title() for ax in panels]  # not shown
  for ax, m in zip(panels, shown, strict=True):
    assert ax.get_yscale() == ("log" if "condition_number" in m.name else "linear")
    assert ax.get_xlabel() == "layer (0: embedding output)"
    for norm in NORMS:
      values = result.norms[norm].layer_measures[m.name]
      line = _line(ax, norm)
      np.testing.assert_array_equal(line.get_xdata(), np.arange(5))
      np.testing.assert_allclose(line.get_ydata(), values.mean(axis=0))
      low, high = _band_edges(ax, norm)
      np.testing.assert_allclose(low, values.mean(0) - values.std(0))
      np.testing.assert_allclose(high, values.mean(0) + values.std(0))
  assert plotting.save_figure(fig, tmp_path / "iso", formats=("png",))[0].stat().st_size


def test_a_result_without_layer_data_is_refused_with_the_reason():
  old = {n: norm_result(n) for n in NORMS}  # an older folder: both fields None
  spec = ExperimentSpec(config.TINY, measures=None)
  result = ExperimentResult(spec, old, 0.0, {})
  assert not layer_plots.has_layer_spectra(result)
  assert not layer_plots.has_layer_isotropy(result)
  with pytest.raises(ValueError, match="no layer spectra"):
    layer_plots.layer_spectra(result)
  with pytest.raises(ValueError, match="no isotropy measure at every layer"):
    layer_plots.isotropy_by_depth(result)
  # Spectra but no isotropy family: the spectra draw, the isotropy figure is refused.
  spectra_only = {
    n: r._replace(layer_spectra=np.ones((1, 2, 3)), layer_measures={}) for n, r in old.items()
  }
  result = result._replace(norms=spectra_only)
  assert layer_plots.has_layer_spectra(result) and not layer_plots.has_layer_isotropy(result)
  layer_plots.layer_spectra(result)
  with pytest.raises(ValueError, match="without the isotropy family"):
    layer_plots.isotropy_by_depth(result)


def test_mean_and_std_of_columns_without_finite_values_is_nan_without_warning():
  mean, std = layer_plots.mean_and_std(np.array([[1.0, np.nan], [3.0, np.nan]]))
  np.testing.assert_array_equal(mean, [2.0, np.nan])
  np.testing.assert_array_equal(std, [1.0, np.nan])


def test_save_figures_writes_what_the_result_holds_data_for(tmp_path):
  result = _result(seeds=2, blocks=2)
  paths = layer_plots.save_figures(result, tmp_path)
  names = ["layers.png", "layers.pdf", "isotropy_depth.png", "isotropy_depth.pdf"]
  assert [p.name for p in paths] == names
  assert all((tmp_path / n).stat().st_size for n in names)
  spectra_only = {n: r._replace(layer_measures={}) for n, r in result.norms.items()}
  result = result._replace(norms=spectra_only)
  (tmp_path / "a").mkdir()
  assert [p.name for p in layer_plots.save_figures(result, tmp_path / "a")] == names[:2]
  old = {n: r._replace(layer_spectra=None, layer_measures=None) for n, r in spectra_only.items()}
  assert layer_plots.save_figures(result._replace(norms=old), tmp_path / "b") == []


def test_a_saved_run_holds_the_layer_figures_only_with_layer_data(tmp_path):
  """`results.save` (through `write_figures`) writes layers.* and isotropy_depth.* beside
  figure2, and lists them in run.json; a run without layer data gets neither."""
  names = {"layers.png", "layers.pdf", "isotropy_depth.png", "isotropy_depth.pdf"}
  result = _result(seeds=2, blocks=2)
  results.save(result, tmp_path / "deep")
  listed = set(json.loads((tmp_path / "deep" / manifests.MANIFEST).read_text())["files"])
  assert names <= listed and all((tmp_path / "deep" / n).is_file() for n in names)
  old = {n: r._replace(layer_spectra=None, layer_measures=None) for n, r in result.norms.items()}
  results.save(result._replace(norms=old), tmp_path / "old")
  assert not any((tmp_path / "old" / n).exists() for n in names)
  assert (tmp_path / "old" / "figure2.png").is_file()
