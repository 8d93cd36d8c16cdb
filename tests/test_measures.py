"""The table of measures: one entry per reported number, consistent with what is computed."""

import jax
import jax.numpy as jnp
import pytest

from jaxnorm import analysis, config, keys, landscape, measures, model, train

CFG = config.TINY.replace(landscape_points=5)


def test_the_table_is_well_formed():
  names = [m.name for m in measures.MEASURES]
  assert len(names) == len(set(names))
  for m in measures.MEASURES:
    assert m.kind in measures.KINDS, m.name
    assert m.better in ("lower", "higher", None), m.name
    assert m.label and isinstance(m.unit, str), m.name
  assert set(measures.BASIC) | set(measures.ANALYZED) | set(measures.DERIVED) == set(names)
  assert not set(measures.ANALYZED) & set(measures.DERIVED)
  assert "hessian_trace" in measures.FLATNESS and "effective_rank" in measures.ISOTROPY
  assert not measures.BY_NAME["hessian_trace"].comparable
  assert measures.label("no_such_measure") == "no_such_measure"


def test_analysis_computes_exactly_the_analyzed_measures():
  """Every analyzed entry of the table is computed, and nothing else (shapes only)."""
  m = model.build(CFG, "layernorm")
  state = jax.eval_shape(lambda: train.init_state(m, CFG.task, jax.random.key(0), 1e-3))
  alphas = landscape.alphas(CFG.landscape_points, CFG.landscape_range)
  out = jax.eval_shape(
    lambda p, b: analysis.analyze(
      m, CFG.task, measures.MeasureConfig(), p, b, keys.run_keys(0), alphas, alphas
    ),
    state.params,
    state.batch_stats,
  )
  assert set(out.measures) == set(measures.ANALYZED)
  assert all(v.shape == () for v in out.measures.values())
  assert out.landscape.shape == (CFG.landscape_points,) and out.surface is None
  without = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, None, p, b, keys.run_keys(0), alphas, alphas),
    state.params,
    state.batch_stats,
  )
  assert without.measures == {}
  grid = jnp.linspace(-1.0, 1.0, 4)
  with_surface = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, None, p, b, keys.run_keys(0), alphas, alphas, grid),
    state.params,
    state.batch_stats,
  )
  assert with_surface.surface.shape == (4, 4)


def test_bad_measure_config():
  with pytest.raises(ValueError, match="trace_probes"):
    measures.MeasureConfig(trace_probes=1)
  with pytest.raises(ValueError, match="sharpness_rho"):
    measures.MeasureConfig(sharpness_rho=0.0)
