"""The deep experiment end to end: experiments/deep.py as a user runs it, and the same
experiment through `pipeline.run`, at a tiny deep size (3 blocks, 2 heads), every measure
family, two seeds. What the run folder must hold: the layer-wise figures, the per-layer
arrays with their seed and layer axes, and measures.md's per-layer tables and depth
verdicts; the replot redraws the layer figures from the saved arrays."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from jaxnorm import cli, config, measures, pipeline, predictions, results
from jaxnorm.families import FAMILIES, MeasureConfig
from jaxnorm.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]
DEEP_SCRIPT = ROOT / "experiments" / "deep.py"
BLOCKS = 3
TINY_DEEP = config.TINY.replace(
  num_blocks=BLOCKS, norms=("layernorm", "l2", "none"), steps=6, landscape_points=5
)
LAYER_FIGURES = ("layers.png", "layers.pdf", "isotropy_depth.png", "isotropy_depth.pdf")


def _check_layers(result, seeds: int) -> None:
  d = TINY_DEEP.embed_dim
  for r in result.norms.values():
    assert r.layer_spectra.shape == (seeds, BLOCKS + 1, d)
    for name in measures.ISOTROPY_FIELDS:
      assert r.layer_measures[name].shape == (seeds, BLOCKS + 1)
      assert r.layer_measures["centered_" + name].shape == (seeds, BLOCKS + 1)
    assert r.layer_measures["block_hessian_top_eigenvalue"].shape == (seeds, BLOCKS)
    assert r.layer_measures["block_hessian_trace"].shape == (seeds, BLOCKS)
    # the last layer is the block output whose spectrum Figure 2 draws (post-norm)
    np.testing.assert_allclose(r.layer_spectra[:, -1], r.spectrum, rtol=1e-5)
    assert np.all(np.isfinite(r.layer_spectra))


def test_the_deep_script_end_to_end_then_replot(tmp_path):
  out = tmp_path / "run"
  env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}
  args = ["--preset", "tiny", "--blocks", str(BLOCKS), "--norms", "layernorm,l2,none"]
  args += ["--steps", "6", "--landscape-points", "5", "--seeds", "2", "--measures", "all"]
  proc = subprocess.run(
    [sys.executable, str(DEEP_SCRIPT), *args, "--no-progress", "--out", str(out)],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=900,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr
  for name in ("figure2.png", *LAYER_FIGURES, "results.npz", "measures.md"):
    assert (out / name).is_file(), name
  loaded = results.load(out)
  assert loaded.spec.config.num_blocks == BLOCKS and loaded.spec.name == "deep"
  _check_layers(loaded, seeds=2)
  report = (out / "measures.md").read_text()
  assert "Layer by layer" in report
  assert "Without normalization, representations collapse progressively with depth" in report
  assert any(isinstance(p, predictions.DepthPrediction) for p in loaded.spec.predictions)
  for name in LAYER_FIGURES:
    (out / name).unlink()
  assert cli.main(["--replot", str(out)], predictions.DEEP, prog="deep.py") == 0
  for name in LAYER_FIGURES:
    assert (out / name).is_file(), name


def test_the_deep_experiment_from_python_saves_and_loads_every_layer(tmp_path):
  spec = ExperimentSpec(
    TINY_DEEP,
    num_seeds=2,
    name="deep",
    predictions=predictions.DEEP.predictions,
    measures=MeasureConfig(families=FAMILIES),
  )
  result = pipeline.run(spec)
  _check_layers(result, seeds=2)
  results.save(result, tmp_path / "run")
  loaded = results.load(tmp_path / "run")
  for norm, r in result.norms.items():
    np.testing.assert_array_equal(loaded.norms[norm].layer_spectra, r.layer_spectra)
    assert set(loaded.norms[norm].layer_measures) == set(r.layer_measures)
    for name, values in r.layer_measures.items():
      np.testing.assert_array_equal(loaded.norms[norm].layer_measures[name], values)
