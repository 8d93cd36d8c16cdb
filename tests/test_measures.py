"""The table of measures: one entry per reported number, consistent with what is computed."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import analysis, config, curvature, keys, landscape, measures, model, train

CFG = config.TINY.replace(landscape_points=5)


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


def test_basic_and_derived_are_what_the_summary_reads_off_and_derives():
  """The groups of the table against what `analysis.per_seed` does (pure NumPy): a result
  without measures gives exactly BASIC; given every ANALYZED measure, it passes each on
  unchanged, adds exactly DERIVED, and every measure of the table is then there."""
  seeds = 2
  r = types.SimpleNamespace(
    losses=np.ones((seeds, 10)),
    learning_rate=1e-3,
    landscape=np.ones((seeds, 5)),
    base_loss=np.full(seeds, 2.0),
    spectrum=np.array([[4.0, 2.0, 1.0]] * seeds),
    measures={},
  )
  assert set(analysis.per_seed(r)) == set(measures.BASIC)
  given = 7.0  # no basic or derived value here is 7: ||W|| = 7 gives lr / 49, per loss 3.5
  r.measures = {name: np.full(seeds, given) for name in measures.ANALYZED}
  out = analysis.per_seed(r)
  assert list(out) == [m.name for m in measures.MEASURES]
  for name in measures.ANALYZED:
    np.testing.assert_array_equal(out[name], given, err_msg=name)
  for name in (*measures.BASIC, *measures.DERIVED):
    assert not np.any(out[name] == given), name
  assert set(out) - set(measures.BASIC) - set(measures.ANALYZED) == set(measures.DERIVED)
  assert not set(measures.BASIC) & set(measures.DERIVED)


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


def test_lanczos_restarts_setting():
  assert measures.MeasureConfig().lanczos_restarts == curvature.MAX_RESTARTS
  assert measures.MeasureConfig(lanczos_restarts=0).lanczos_restarts == 0  # plain Lanczos
  for bad in (-1, True, 2.0, "8"):
    with pytest.raises(ValueError, match="lanczos_restarts"):
      measures.MeasureConfig(lanczos_restarts=bad)
  # Every lambda_max with a convergence flag: the flag and residual are measures too.
  for flag, residual in measures.CONVERGENCE.values():
    assert measures.BY_NAME[flag].kind == measures.BY_NAME[residual].kind == "diagnostic"
  assert {"hessian_top_eigenvalue", "hessian_top_eigenvalue_batch_stats"} <= set(
    measures.CONVERGENCE
  )


@pytest.mark.hostile
def test_isotropy_of_dead_or_broken_activations_is_nan_in_every_measure():
  """All-zero activations, and activations with a NaN, whatever spectrum the SVD gives for
  them: every raw and centered isotropy measure of the analysis is NaN."""
  spectrum_K = jnp.array([4.0, 3.0, 2.0, 1.0])  # finite, as an SVD may return for NaN input
  for acts_NxD, s_K in (
    (jnp.zeros((8, 4)), jnp.zeros(4)),
    (jnp.ones((8, 4)).at[0, 0].set(jnp.nan), spectrum_K),
  ):
    out = analysis._isotropy(acts_NxD, s_K)
    assert len(out) == 10 and all(bool(jnp.isnan(v)) for v in out.values()), out
  fine = analysis._isotropy(jnp.eye(8, 4), jnp.ones(4))
  assert float(fine["effective_rank"]) == pytest.approx(4.0) and fine["numerical_rank"] == 4
