import numpy as np
import pytest
from helpers import norm_result

from jaxnorm import config, plotting
from jaxnorm.result import ExperimentResult
from jaxnorm.spec import ExperimentSpec

NORMS = ("layernorm", "batchnorm", "none")


def _result(seeds=1, norm_results=None):
  """An ExperimentResult of the three reference models (or of `norm_results`)."""
  rng = np.random.default_rng(0)
  if norm_results is None:
    norm_results = {norm: norm_result(norm, seeds, rng=rng) for norm in NORMS}
  cfg = config.TINY.replace(norms=tuple(norm_results))
  spec = ExperimentSpec(cfg, num_seeds=seeds, measures=None)
  return ExperimentResult(spec, norm_results, 0.0, {})


@pytest.mark.parametrize("seeds", [1, 3])
def test_figure2_has_three_panels_with_every_model(seeds, tmp_path):
  fig = plotting.figure2(_result(seeds))
  axes = fig.get_axes()
  assert len(axes) == 3
  for ax in axes:
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["LayerNorm", "BatchNorm", "No Norm"]
  assert axes[0].get_yscale() == axes[2].get_yscale() == "log"
  assert len(axes[0].collections) == (3 if seeds > 1 else 0)  # shaded bands over seeds
  paths = plotting.save_figure(fig, tmp_path / "figure2")
  assert [p.name for p in paths] == ["figure2.png", "figure2.pdf"]
  assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_non_finite_values_still_plot(tmp_path):
  result = _result()
  result.norms["none"].losses[:, 10:] = np.nan
  result.norms["none"].landscape[:] = np.nan
  plotting.save_figure(plotting.figure2(result), tmp_path / "f", formats=("png",))
  assert (tmp_path / "f.png").stat().st_size > 0


def test_surfaces_draw_one_contour_panel_per_model(tmp_path):
  a = np.linspace(-1, 1, 5)
  z = a[:, None] ** 2 + 2 * a[None, :] ** 2
  result = _result(
    norm_results={
      "layernorm": norm_result("layernorm", surface_grid=a, surface=z[None]),
      "none": norm_result("none", surface_grid=a, surface=3 * z[None]),
    }
  )
  fig = plotting.surfaces(result)
  panels = [ax for ax in fig.get_axes() if ax.get_title()]
  assert [ax.get_title().split(":")[0] for ax in panels] == ["LayerNorm", "No Norm"]
  plotting.save_figure(fig, tmp_path / "s", formats=("png",))
  assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_hessian_density_has_a_panel_per_norm(measured_result, tmp_path):
  fig = plotting.hessian_density(measured_result)
  assert len([ax for ax in fig.axes if ax.get_visible()]) == len(measured_result.norms)
  assert all(ax.get_yscale() == "log" for ax in fig.axes)
  assert plotting.save_figure(fig, tmp_path / "d", formats=("png",))[0].stat().st_size > 0
