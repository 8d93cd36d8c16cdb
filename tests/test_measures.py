"""The table of measures (one entry per reported number) and the estimator settings."""

import pytest

from jaxnorm import curvature, measures
from jaxnorm import families as families_lib


def test_the_table_is_well_formed():
  names = [m.name for m in measures.MEASURES]
  assert len(names) == len(set(names))
  for m in measures.MEASURES:
    assert m.kind in measures.KINDS, m.name
    assert m.better in ("lower", "higher", None), m.name
    assert m.label and isinstance(m.unit, str), m.name
  assert "hessian_trace" in measures.FLATNESS and "effective_rank" in measures.ISOTROPY
  assert not measures.BY_NAME["hessian_trace"].comparable
  assert measures.label("no_such_measure") == "no_such_measure"


def test_bad_measure_config():
  with pytest.raises(ValueError, match="trace_probes"):
    families_lib.MeasureConfig(trace_probes=1)
  with pytest.raises(ValueError, match="sharpness_rho"):
    families_lib.MeasureConfig(sharpness_rho=0.0)


def test_lanczos_restarts_setting():
  assert families_lib.MeasureConfig().lanczos_restarts == curvature.MAX_RESTARTS
  assert families_lib.MeasureConfig(lanczos_restarts=0).lanczos_restarts == 0  # plain Lanczos
  for bad in (-1, True, 2.0, "8"):
    with pytest.raises(ValueError, match="lanczos_restarts"):
      families_lib.MeasureConfig(lanczos_restarts=bad)
  # Every lambda_max with a convergence flag: the flag and residual are measures too.
  for flag, residual in measures.CONVERGENCE.values():
    assert measures.BY_NAME[flag].kind == measures.BY_NAME[residual].kind == "diagnostic"
  assert {"hessian_top_eigenvalue", "hessian_top_eigenvalue_batch_stats"} <= set(
    measures.CONVERGENCE
  )
