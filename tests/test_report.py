import dataclasses
import math

import numpy as np
import pytest
from helpers import norm_result

from jaxnorm import compare_runs, config, families, findings_tables, predictions, report, stats
from jaxnorm.result import ExperimentResult, SweepResult
from jaxnorm.spec import ExperimentSpec


def test_markdown_lists_verdicts_by_kind_with_seed_counts_and_no_tally(measured_result):
  result = measured_result._replace(
    spec=ExperimentSpec(
      measured_result.spec.config,
      num_seeds=2,
      measures=measured_result.spec.measures,
      predictions=(
        predictions.flatter(("batchnorm",), "none", "BN flatter"),
        predictions.more_isotropic(("batchnorm",), "none", "BN more isotropic"),
      ),
    )
  )
  text = report.markdown(result)
  assert "**BN flatter** (lower than No Norm; 2 seed(s))" in text
  assert "- Flatness:" in text and "- Isotropy:" in text
  assert "comparisons." not in text  # no vote tally
  assert "Hessian trace: not judged" in text
  verdict_lines = [line for line in text.splitlines() if line.startswith("  - ")]
  assert verdict_lines and all("2 seeds" in line or "not judged" in line for line in verdict_lines)
  assert "(MC se " in text  # the Monte Carlo standard errors are shown


def test_markdown_says_what_was_measured_and_what_a_prediction_lacks(measured_result):
  """A run of the basic level (conftest's run, cut to its isotropy family): measures.md
  names the families that ran and the level that runs the rest; a prediction judged on
  measures of families that did not run says so, with the level that measures them,
  instead of disappearing; the isotropy one is judged as before."""
  basic = families.MeasureConfig(families=families.LEVELS["basic"])
  kept = set(families.analyzed(basic.families))
  norms = {
    n: r._replace(measures={k: v for k, v in r.measures.items() if k in kept})
    for n, r in measured_result.norms.items()
  }
  spec = ExperimentSpec(
    measured_result.spec.config,
    num_seeds=2,
    measures=basic,
    predictions=(
      predictions.flatter(("batchnorm",), "none", "BN flatter"),
      predictions.more_isotropic(("batchnorm",), "none", "BN more isotropic"),
    ),
  )
  text = report.markdown(measured_result._replace(spec=spec, norms=norms))
  assert (
    "Measured: isotropy (`--measures basic`); not measured: slices, sharpness, hessian, "
    "batch_stats (`--measures all`"
  ) in text
  flatter = text[text.index("**BN flatter**") : text.index("**BN more isotropic**")]
  assert "- Not measured: 6 of its measures, from the slices and sharpness families " in flatter
  assert "(`--measures standard` measures them)" in flatter and "- Flatness:" not in flatter
  isotropic = text[text.index("**BN more isotropic**") :]
  assert "Not measured" not in isotropic.split("How verdicts")[0] and "- Isotropy:" in isotropic
  everything = report.markdown(measured_result)
  assert "Measured: isotropy, slices, sharpness, hessian, batch_stats (`--measures all`)." in (
    everything
  )
  # A selection of its own: the hint keeps its families and adds the missing ones.
  own = families.MeasureConfig(families=("isotropy", "batch_stats"))
  kept = set(families.analyzed(own.families))
  norms = {
    n: r._replace(measures={k: v for k, v in r.measures.items() if k in kept})
    for n, r in measured_result.norms.items()
  }
  own_spec = dataclasses.replace(spec, measures=own)
  text = report.markdown(measured_result._replace(spec=own_spec, norms=norms))
  assert "from the slices and sharpness families (`--measures isotropy,slices,sharpness," in text
  none = report.measured_line(None)
  assert none.startswith("Measured: the reference's slice and spectrum only (`--measures none`)")


def test_terminal_table_has_a_row_per_norm(measured_result):
  table = report.terminal_table(measured_result)
  assert "BatchNorm" in table and "No Norm" in table and "lr" in table.splitlines()[0]
  assert math.isfinite(float(table.splitlines()[2].split()[1]))


def test_markdown_has_the_table_and_the_one_seed_verdicts():
  norms = {
    "layernorm": norm_result(
      "layernorm",
      final_loss=0.1,
      rise=0.2,
      measures={"hessian_trace": 5.0, "effective_rank": 100.0, "landscape_rise_directions": 0.2},
    ),
    "none": norm_result(
      "none",
      final_loss=0.3,
      rise=0.4,
      measures={"hessian_trace": 9.0, "effective_rank": 50.0, "landscape_rise_directions": 0.4},
    ),
  }
  spec = ExperimentSpec(
    config.TINY.replace(norms=("layernorm", "none")),
    name="t",
    predictions=(predictions.flatter(("layernorm",), "none", "LN is flatter"),),
    measures=None,
  )
  text = report.markdown(ExperimentResult(spec, norms, 0.0, {}))
  assert "| measure | LayerNorm | No Norm |" in text
  assert "| learning rate | 0.001 | 0.001 |" in text
  assert "| Hessian trace | 5 | 9 |" in text
  assert "**LN is flatter**" in text
  rise = "LayerNorm vs No Norm, slice rise, global-norm, mean over directions"
  assert f"{rise}: supported, untested (1 seed; difference -0.2)" in text
  assert "global-norm direction (one draw):" not in text  # one draw is shown, not judged
  assert "LayerNorm vs No Norm, Hessian trace: not judged" in text
  assert "| Hessian λ_max |" not in text  # a measure no model has is left out


def test_comparison_shows_the_largest_relative_difference_over_seeds(
  measured_result, tmp_path, capsys
):
  """A copy of a run with one measure of one seed changed by 1%: that row, and only the
  rows computed from it, show 0.01; the script prints the same table from saved runs."""
  from jaxnorm import results

  r = measured_result.norms["none"]
  trace = r.measures["hessian_trace"].copy()
  trace[1] *= 1.01
  changed = r._replace(measures={**r.measures, "hessian_trace": trace})
  other = measured_result._replace(norms={**measured_result.norms, "none": changed})
  text = report.comparison(measured_result, other, "float32", "float64")
  section = text.split("## No Norm (2 seeds)")[1]
  rows = {line.split(" | ")[0][2:]: line for line in section.splitlines() if line.startswith("|")}
  assert rows["hessian_trace"].endswith("| 0.0099 |")
  assert rows["adaptive_sharpness"].endswith("| 0 |")
  assert "| float32 | float64 |" in text and "## BatchNorm (2 seeds)" in text

  results.save(measured_result, tmp_path / "a")
  results.save(other, tmp_path / "b")
  capsys.readouterr()
  argv = [str(tmp_path / "a"), str(tmp_path / "b"), "--labels", "float32,float64"]
  assert compare_runs.main(argv) == 0  # a missing folder: test_inputs_hostile
  assert capsys.readouterr().out.strip() == text.strip()

  shifted = r._replace(seeds=r.seeds + 1)
  with pytest.raises(ValueError, match="seeds"):
    report.comparison(measured_result, measured_result._replace(norms={"none": shifted}), "a", "b")


@pytest.mark.hostile
def test_comparison_lists_what_only_one_run_has(measured_result):
  """Runs of partly different models: the common ones are compared, and the report names
  the models, and per model the measures, that only one run has."""
  r = measured_result.norms["none"]
  fewer = r._replace(measures={k: v for k, v in r.measures.items() if k != "effective_rank"})
  l2 = r._replace(norm="l2")
  other = measured_result._replace(norms={"none": fewer, "l2": l2})
  text = report.comparison(measured_result, other, "f32", "f64")
  assert "Normalizations in one run only, left out: f32: BatchNorm; f64: Manual L2 Norm." in text
  section = text.split("## No Norm (2 seeds)")[1]
  assert "Measures in one run only, left out: f32: effective_rank." in section
  assert "| effective_rank |" not in section and "| hessian_trace |" in section
  assert "## BatchNorm" not in text and "L2" not in text.split("left out")[-1]
  same = report.comparison(measured_result, measured_result, "f32", "f64")
  assert "left out" not in same


@pytest.mark.hostile
def test_comparison_refuses_runs_with_nothing_in_common(measured_result):
  r = measured_result.norms["none"]
  other = measured_result._replace(norms={"l2": r._replace(norm="l2")})
  with pytest.raises(ValueError, match=r"no normalization in common \(a: BatchNorm, No Norm; b: "):
    report.comparison(measured_result, other, "a", "b")
  with pytest.raises(ValueError, match="different labels"):
    report.comparison(measured_result, measured_result, "x", "x")


def test_comparison_of_a_diverged_seed_names_it(measured_result):
  """A value that is NaN (a diverged seed) in one run only is no agreement: the largest
  difference is taken over the other seeds and the seed is named; no value at all is n/a
  (and no warning)."""
  r = measured_result.norms["none"]

  def rows(values):
    changed = r._replace(measures={**r.measures, "effective_rank": values})
    text = report.comparison(
      measured_result, measured_result._replace(norms={"none": changed}), "a", "b"
    )
    return [line for line in text.splitlines() if line.startswith("| effective_rank |")]

  x = r.measures["effective_rank"]
  [row] = rows(np.array([x[0] * 1.01, np.nan]))
  assert row.endswith(f"| {x[0] * 1.01:.6g} | 0.0099 (seeds [4]: finite in one run only) |")
  [row] = rows(np.full(2, np.nan))
  assert row.endswith("| n/a | n/a (seeds [3, 4]: finite in one run only) |")


def test_findings_tables_print_every_judged_comparison(measured_result, tmp_path, capsys):
  """findings_tables (`jaxnorm findings-tables`): the verdicts of `stats.judge` for each
  state of a saved run, and BatchNorm with batch statistics against No Norm as a family of
  its own."""
  from jaxnorm import results

  results.save(measured_result, tmp_path / "a")
  capsys.readouterr()
  assert findings_tables.main([str(tmp_path / "a")]) == 0
  out = capsys.readouterr().out
  lines = out.splitlines()
  assert lines[0] == "| comparison | end, a |"
  by_norm = {n: stats.stats(r) for n, r in measured_result.norms.items()}
  flatter = predictions.flatter(("batchnorm",), "none", "")
  row = next(r for r in stats.judge(flatter, by_norm) if r["measure"] == "adaptive_sharpness")
  c = row["comparison"]
  expected = f"| {c.verdict} (estimate {c.estimate:.3g}, p = {c.p:.2g}) |"
  assert f"| BatchNorm lower No Norm: adaptive_sharpness {expected}" in out
  family = [r for r in lines if r.startswith("| BatchNorm (batch statistics) lower than No Norm")]
  assert len(family) == 3
  assert "similar to LayerNorm" not in out  # this run has no LayerNorm


def _seeds_result(norm, measured):
  """Seeds 0 .. S - 1 with the given per-seed measures (name -> (S,) values)."""
  s = len(next(iter(measured.values())))
  return norm_result(norm, s, final_loss=0.1, rise=0.2, measures=measured)


def _lambda_max(values, converged, residuals):
  return {
    "hessian_top_eigenvalue": values,
    "hessian_top_converged": converged,
    "hessian_top_relative_residual": residuals,
    "hessian_top_eigenvalue_batch_stats": values,
    "hessian_top_converged_batch_stats": [1.0] * len(values),
    "hessian_top_relative_residual_batch_stats": [1e-3] * len(values),
  }


@pytest.mark.hostile
@pytest.mark.parametrize("seeds", [1, 2])
def test_a_lambda_max_that_did_not_converge_is_marked_where_shown(seeds):
  """The issue's case: BatchNorm's λ_max 1.486 with residual 0.019 over the tolerance is
  marked in measures.md (λ_max and λ_max / loss, not the converged batch-statistics
  value) and under the terminal table; a converged one is not."""
  values, flags, residuals = [1.486, 2.0][:seeds], [0.0, 1.0][:seeds], [0.019, 0.001][:seeds]
  norms = {
    "batchnorm": _seeds_result("batchnorm", _lambda_max(values, flags, residuals)),
    "none": _seeds_result("none", _lambda_max([3.0, 4.0][:seeds], [1.0] * seeds, [1e-4] * seeds)),
  }
  spec = ExperimentSpec(
    config.TINY.replace(norms=("batchnorm", "none")), num_seeds=seeds, name="t", measures=None
  )
  result = ExperimentResult(spec, norms, 0.0, {})
  note = "(relative residual 0.019)" if seeds == 1 else "(1 of 2 seeds, relative residual 0.019)"
  mark = f"**not converged** {note}"
  rows = {line.split(" | ")[0]: line for line in report.markdown(result).splitlines()}
  bn, none = rows["| Hessian λ_max"].split(" | ")[1:3]
  assert mark in bn and "converged" not in none
  assert mark in rows["| Hessian λ_max / loss"]
  assert "converged" not in rows["| Hessian λ_max, batch statistics"]
  table = report.terminal_table(result)
  marked = [line.strip() for line in table.splitlines() if "not converged" in line]
  assert marked == [f"BatchNorm, Hessian λ_max: not converged {note}"]
  converged = ExperimentResult(spec, {"none": norms["none"]}, 0.0, {})
  assert "converged" not in report.terminal_table(converged)


@pytest.mark.hostile
def test_a_lambda_max_that_did_not_converge_is_marked_in_the_sweep_tables():
  unconverged = _seeds_result("none", _lambda_max([1.486], [0.0], [0.019]))
  converged = _seeds_result("none", _lambda_max([2.0], [1.0], [1e-4]))
  spec = ExperimentSpec(config.TINY.replace(norms=("none",)), name="t", measures=None)
  runs = tuple(ExperimentResult(spec, {"none": r}, 0.0, {}) for r in (unconverged, converged))
  text = report.sweep_markdown(SweepResult((1e-3, 1e-2), runs), names=("hessian_top_eigenvalue",))
  row = next(line for line in text.splitlines() if line.startswith("| No Norm | 1.486"))
  at_low_rate, at_high_rate = row.split(" | ")[1:3]
  assert "**not converged** (relative residual 0.019)" in at_low_rate
  assert "converged" not in at_high_rate


@pytest.mark.hostile
def test_a_lambda_max_that_did_not_converge_is_marked_in_a_comparison():
  spec = ExperimentSpec(config.TINY.replace(norms=("none",)), name="t", measures=None)
  runs = [
    ExperimentResult(spec, {"none": _seeds_result("none", _lambda_max(*v))}, 0.0, {})
    for v in (([1.486], [0.0], [0.019]), ([1.601], [1.0], [1e-4]))
  ]
  row = next(
    line
    for line in report.comparison(*runs, "A", "B").splitlines()
    if line.startswith("| hessian_top_eigenvalue |")
  )
  in_a, in_b = row.split(" | ")[1:3]
  assert "**not converged** (relative residual 0.019)" in in_a and "converged" not in in_b
