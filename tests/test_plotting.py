import numpy as np
import pytest

from jaxnorm import plotting


def _arrays(seeds=None):
  lead = () if seeds is None else (seeds,)
  rng = np.random.default_rng(0)
  return {
    norm: {
      "loss": rng.uniform(0.1, 5, lead + (30,)),
      "alphas": np.linspace(-0.5, 0.5, 7),
      "landscape": rng.uniform(0, 1, lead + (7,)),
      "spectrum": np.sort(rng.uniform(0.1, 10, lead + (16,)))[..., ::-1],
    }
    for norm in ("layernorm", "batchnorm", "none")
  }


@pytest.mark.parametrize("seeds", [None, 3])
def test_figure2_has_three_panels_with_every_model(seeds, tmp_path):
  fig = plotting.figure2(_arrays(seeds))
  axes = fig.get_axes()
  assert len(axes) == 3
  for ax in axes:
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["LayerNorm", "BatchNorm", "No Norm"]
  assert axes[0].get_yscale() == axes[2].get_yscale() == "log"
  assert len(axes[0].collections) == (3 if seeds else 0)  # shaded bands over seeds
  paths = plotting.save_figure(fig, tmp_path / "figure2")
  assert [p.name for p in paths] == ["figure2.png", "figure2.pdf"]
  assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert paths[1].read_bytes()[:5] == b"%PDF-"


def test_non_finite_values_still_plot(tmp_path):
  arrays = _arrays()
  arrays["none"]["loss"][10:] = np.nan
  arrays["none"]["landscape"][:] = np.nan
  plotting.save_figure(plotting.figure2(arrays), tmp_path / "f", formats=("png",))
  assert (tmp_path / "f.png").stat().st_size > 0


def test_surfaces_draw_one_contour_panel_per_model(tmp_path):
  a = np.linspace(-1, 1, 5)
  z = a[:, None] ** 2 + 2 * a[None, :] ** 2
  fig = plotting.surfaces({"layernorm": (a, a, z), "none": (a, a, 3 * z)})
  panels = [ax for ax in fig.get_axes() if ax.get_title()]
  assert [ax.get_title().split(":")[0] for ax in panels] == ["LayerNorm", "No Norm"]
  plotting.save_figure(fig, tmp_path / "s", formats=("png",))
  assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
