import jax
import numpy as np
import pytest

from jaxnorm import cli, config, isotropy, measures, report, results, seeds

CFG = config.TINY.replace(steps=10, landscape_points=5)


@pytest.fixture(scope="module")
def run():
  return seeds.run(CFG, "batchnorm", [3], progress=False)


def test_measures_of_a_trained_model(run):
  mcfg = measures.MeasureConfig(lanczos_iterations=8, trace_probes=4, sharpness_samples=4)
  (m,) = measures.measure(CFG, "batchnorm", run.variables, run.seeds, mcfg)
  d = CFG.embed_dim
  assert 1 <= m["effective_rank"] <= d and 1 <= m["stable_rank"] <= d
  assert 1 <= m["participation_ratio"] <= d and m["condition_number"] >= 1
  assert isinstance(m["hessian_top_converged"], bool)
  assert isinstance(m["numerical_rank"], int)
  for name in (
    "hessian_top_eigenvalue",
    "hessian_trace",
    "adaptive_sharpness",
    "filter_landscape_max_rise",
  ):
    assert np.isfinite(m[name]), name
  # The isotropy numbers are those of the run's own (uncentered) spectrum.
  expected = isotropy.from_spectrum(jax.numpy.asarray(run.spectrum[0]))
  np.testing.assert_allclose(m["effective_rank"], expected.effective_rank, rtol=1e-4)
  np.testing.assert_allclose(m["stable_rank"], expected.stable_rank, rtol=1e-4)


def test_bad_measure_config():
  with pytest.raises(ValueError, match="trace_probes"):
    measures.MeasureConfig(trace_probes=1)
  with pytest.raises(ValueError, match="sharpness_rho"):
    measures.MeasureConfig(sharpness_rho=0.0)


def test_experiment_writes_measures_and_verdicts(tmp_path):
  pred = report.flatter(("none",), "none", "a prediction about None")
  status = cli.main(
    ["--out", str(tmp_path), "--no-progress", "--norms", "none"],
    prog="t",
    description="",
    default=CFG,
    default_out="",
    name="t",
    title="t",
    predictions=[pred],
  )
  assert status == 0
  _, summary = results.load(tmp_path)
  assert np.isfinite(summary["norms"]["none"]["measures"]["hessian_trace"])
  text = (tmp_path / "measures.md").read_text()
  assert "| Hessian trace |" in text and "**a prediction about None**" in text
