"""The analysis of trained models (`jaxnorm.analysis`): `analyze` computes exactly the
analyzed measures of the table, `per_seed` passes them on and derives the rest as the
table's groups say, and the isotropy measures and the spectrum's top/bottom ratio of
dead, broken or degenerate activations are NaN rather than a number or a warning."""

import types
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import analysis, config, keys, landscape, measures, model, train
from jaxnorm import families as families_lib

CFG = config.TINY.replace(landscape_points=5)


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
  assert list(out) == [m.name for m in measures.MEASURES if m.name not in measures.TEXT]
  # A text data set's: the last epoch's accuracy, the test split's passed on.
  r.epoch_accuracy = np.array([[0.25, 0.5], [0.5, 0.75]])
  r.measures |= {"test_accuracy": np.full(seeds, 0.5), "test_loss": np.full(seeds, 1.5)}
  out = analysis.per_seed(r)
  assert list(out) == [m.name for m in measures.MEASURES]
  np.testing.assert_array_equal(out["train_accuracy"], [0.5, 0.75])
  for name in measures.ANALYZED:
    np.testing.assert_array_equal(out[name], given, err_msg=name)
  for name in (*measures.BASIC, *measures.DERIVED):
    assert not np.any(out[name] == given), name
  assert set(out) - set(measures.BASIC + measures.ANALYZED + measures.TEXT) == set(measures.DERIVED)
  assert not set(measures.BASIC) & set(measures.DERIVED)


def test_analysis_computes_exactly_the_analyzed_measures():
  """With every family, every analyzed entry of the table is computed, and nothing else;
  without a config, nothing (shapes only)."""
  m = model.build(CFG, "layernorm")
  state = jax.eval_shape(lambda: train.init_state(m, CFG.task, jax.random.key(0), 1e-3))
  alphas = landscape.alphas(CFG.landscape_points, CFG.landscape_range)
  every = families_lib.MeasureConfig(families=families_lib.FAMILIES)
  out = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, every, p, b, keys.run_keys(0), alphas, alphas),
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
  assert without.measures == {} and without.hessian_density is None
  grid = jnp.linspace(-1.0, 1.0, 4)
  with_surface = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, None, p, b, keys.run_keys(0), alphas, alphas, grid),
    state.params,
    state.batch_stats,
  )
  assert with_surface.surface.shape == (4, 4)


SELECTIONS = [
  *families_lib.LEVELS.values(),
  *((f,) for f in families_lib.FAMILIES),
  ("batch_stats", "hessian"),
]


@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
@pytest.mark.parametrize("families", SELECTIONS, ids=",".join)
def test_analysis_computes_exactly_the_selected_families(norm, families):
  """Each level and each family alone: exactly `families.analyzed(families)`, the Hessian's
  density only with "hessian" (shapes only; BatchNorm takes the batch-statistics path)."""
  m = model.build(CFG, norm)
  state = jax.eval_shape(lambda: train.init_state(m, CFG.task, jax.random.key(0), 1e-3))
  alphas = landscape.alphas(CFG.landscape_points, CFG.landscape_range)
  config_ = families_lib.MeasureConfig(families=families)
  out = jax.eval_shape(
    lambda p, b: analysis.analyze(m, CFG.task, config_, p, b, keys.run_keys(0), alphas, alphas),
    state.params,
    state.batch_stats,
  )
  assert set(out.measures) == set(families_lib.analyzed(families))
  assert (out.hessian_density is not None) == ("hessian" in families)
  assert {families_lib.family_of(n) for n in out.measures} <= set(families)


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


@pytest.mark.hostile
def test_the_spectrum_ratio_follows_the_nan_convention_of_the_isotropy_measures():
  spectra = np.array([[4.0, 2.0, 1.0], [0.0, 0.0, 0.0], [1.0, np.nan, 1.0], [3.0, 1.0, 0.0]])
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # no 0 / 0 warning either
    ratio = analysis._top_bottom_ratio(spectra)
  np.testing.assert_array_equal(ratio, [4.0, np.nan, np.nan, np.inf])


def test_one_seed_is_analyzed_as_each_seed_of_many():
  """S = 1 takes the program without vmap (`analyze_seeds`): its every output equals that
  seed's in a vmapped group (to float32 rounding), with the seed axis kept."""
  m = model.build(CFG, "batchnorm")
  k2 = jax.vmap(keys.run_keys)(jnp.array([5, 6]))
  state = jax.vmap(lambda k: train.init_state(m, CFG.task, k, 1e-3))(k2.train)
  alphas = landscape.alphas(CFG.landscape_points, CFG.landscape_range)
  mc = families_lib.MeasureConfig(
    families=families_lib.FAMILIES, lanczos_iterations=4, trace_probes=2, sharpness_samples=2
  )
  args = (state.params, state.batch_stats, k2, alphas, alphas, jnp.linspace(-1.0, 1.0, 3))
  both = analysis.analyze_seeds(m, CFG.task, mc, *args)
  first = jax.tree.map(lambda x: x[:1], args[:3])
  alone = analysis.analyze_seeds(m, CFG.task, mc, *first, *args[3:])
  assert jax.tree.structure(alone) == jax.tree.structure(both)
  for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(both), strict=True):
    assert a.shape == (1, *b.shape[1:])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-6)
