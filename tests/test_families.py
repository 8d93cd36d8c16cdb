"""Which measures a run computes (`jaxnorm.families`): the families cover the analyzed
measures of the table once each, the levels nest, the default judges every prediction the
paper's experiments make, `--measures` reads levels and lists, and a family's values do not
depend on which other families ran with it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import analysis, config, keys, landscape, measures, model, predictions, programs
from jaxnorm import families as families_lib
from jaxnorm.families import FAMILIES, LEVELS, MeasureConfig


def test_every_analyzed_measure_has_exactly_one_family():
  """`FAMILY_MEASURES` with the batch-statistics forms is a partition of `ANALYZED`; the
  basic measures have no family, a derived one its source's."""
  listed = [n for names in families_lib.FAMILY_MEASURES.values() for n in names]
  batch = families_lib.batch_stats_measures(FAMILIES)
  assert len(listed) == len(set(listed)) and not set(listed) & set(batch)
  assert set(listed) | set(batch) == set(measures.ANALYZED)
  assert families_lib.analyzed(FAMILIES) == measures.ANALYZED
  for family, names in families_lib.FAMILY_MEASURES.items():
    assert all(families_lib.family_of(n) == family for n in names), family
  assert all(families_lib.family_of(n) == "batch_stats" for n in batch)
  assert all(families_lib.family_of(n) is None for n in measures.BASIC)
  assert families_lib.family_of("hessian_trace_per_loss") == "hessian"
  assert families_lib.family_of("effective_lr_norm1") == "isotropy"
  assert families_lib.family_of("not a measure") is None


def test_batch_statistics_come_only_for_the_families_selected_with_them():
  assert families_lib.batch_stats_measures(("hessian",)) == ()
  with_sharpness = families_lib.batch_stats_measures(("sharpness", "batch_stats"))
  assert with_sharpness == ("loss_at_alpha0_batch_stats", "adaptive_sharpness_batch_stats")
  assert families_lib.batch_stats_measures(("batch_stats",)) == ("loss_at_alpha0_batch_stats",)


def test_levels_nest_and_the_default_judges_every_prediction():
  """basic within standard within all (= every family); the default level measures every
  measure a prediction of the paper's experiments is judged on (the comparable ones), so
  what it leaves out is only what a report lists as 'not judged'."""
  names = list(LEVELS)
  for smaller, larger in zip(names, names[1:], strict=False):
    assert set(LEVELS[smaller]) < set(LEVELS[larger])
  assert LEVELS["all"] == FAMILIES
  assert MeasureConfig().families == LEVELS[families_lib.DEFAULT_LEVEL]
  for experiment in predictions.BY_NAME.values():
    for p in experiment.predictions:
      for name in p.on:
        family = families_lib.family_of(name)
        if family is not None and measures.BY_NAME[name].comparable:
          assert family in MeasureConfig().families, (experiment.name, name)


@pytest.mark.parametrize(
  "text, expected",
  [
    ("none", None),
    ("basic", ("isotropy",)),
    ("standard", ("isotropy", "slices", "sharpness")),
    ("all", FAMILIES),
    ("hessian", ("hessian",)),
    ("hessian,isotropy", ("isotropy", "hessian")),  # stored in FAMILIES order
    (" sharpness , sharpness", ("sharpness",)),
  ],
)
def test_measures_option_reads_levels_and_lists(text, expected):
  assert families_lib.parse_families(text) == expected


@pytest.mark.parametrize(
  "text", ["", "everything", "hessian,", "hessian,curvature", "basic,slices"]
)
def test_unknown_measures_are_refused_naming_the_choices(text):
  with pytest.raises(ValueError, match="give a level .*basic, standard, all.* families"):
    families_lib.parse_families(text)


def test_a_familys_values_do_not_depend_on_the_others():
  """BatchNorm (the batch-statistics path), two seeds: every measure computed with one
  selection of families equals the same measure computed with every family, and so do the
  slice and the spectrum (to float32 rounding: each selection is its own compiled program,
  whose fusions may round differently)."""
  cfg = config.TINY.replace(steps=3, landscape_points=5)
  m = model.build(cfg, "batchnorm")
  k = jax.vmap(keys.run_keys)(jnp.arange(2))
  lr = jnp.full(2, 1e-3, jnp.float32)
  state = programs.init_states(m, cfg.task, k.train, lr)
  state, _ = programs.train_chunk(m, cfg.task, state, 3)
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  cheap = dict(lanczos_iterations=4, lanczos_restarts=1, trace_probes=2, sharpness_samples=2)
  cheap |= dict(slice_directions=2)

  def run(families):
    mc = MeasureConfig(families=families, **cheap)
    out = analysis.analyze_seeds(
      m, cfg.task, mc, state.params, state.batch_stats, k, alphas, alphas
    )
    return jax.tree.map(np.asarray, out)

  every = run(FAMILIES)
  for families in (("isotropy", "sharpness"), ("slices", "hessian", "batch_stats")):
    some = run(families)
    assert set(some.measures) == set(families_lib.analyzed(families))
    for name, values in some.measures.items():
      np.testing.assert_allclose(values, every.measures[name], rtol=1e-5, err_msg=name)
    np.testing.assert_allclose(some.landscape, every.landscape, rtol=1e-5)
    np.testing.assert_allclose(some.spectrum, every.spectrum, rtol=1e-5)
