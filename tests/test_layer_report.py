"""measures.md's section on depth (`jaxnorm.layer_report`): the tables of layer x
normalization agree with `stats` on the arrays, the per-block Hessian is shown with its
diagnostics, the depth prediction is judged step by step and layer by layer (paired by
seed, Holm-corrected within each claim), and a run without layer data gets one line."""

import numpy as np
import pytest
from helpers import norm_result

from jaxnorm import config, layer_report, measures, predictions, report, stats
from jaxnorm.result import ExperimentResult
from jaxnorm.spec import ExperimentSpec

NORMS = ("layernorm", "l2", "none")
ISOTROPY = tuple(p + f for p in ("", "centered_") for f in measures.ISOTROPY_FIELDS)
DEPTH = predictions.collapses_with_depth(("layernorm", "l2"), "none", "Collapse with depth")


def _measures(by_layer, noise, seeds, norm):
  """Every isotropy measure at layers 0 .. N: the profile `by_layer` (N + 1,) plus a
  per-seed offset shared by every layer and model (seeds move them alike) and noise of
  size `noise`, `norm`'s own."""
  offset = np.random.default_rng(seeds).normal(0.0, 1.0, (seeds, 1))
  values = np.asarray(by_layer, np.float64)[None] + offset
  rng = np.random.default_rng(list(NORMS).index(norm))
  return {n: values + noise * rng.normal(0.0, 1.0, values.shape) for n in ISOTROPY}


def _result(profiles, seeds=4, noise=0.01, predicted=(DEPTH,), blocks_hessian=True):
  """norm -> its profile over layers 0 .. N."""
  results = {}
  for norm, profile in profiles.items():
    layer_measures = _measures(profile, noise, seeds, norm)
    depth = len(profile) - 1
    if blocks_hessian:
      layer_measures["block_hessian_top_eigenvalue"] = np.full((seeds, depth), 2.0)
      layer_measures["block_hessian_top_converged"] = np.ones((seeds, depth))
      layer_measures["block_hessian_trace"] = np.full((seeds, depth), 3.0)
      layer_measures["block_hessian_trace_stderr"] = np.full((seeds, depth), 0.5)
    results[norm] = norm_result(
      norm,
      seeds,
      layer_spectra=np.ones((seeds, depth + 1, 4)),
      layer_measures=layer_measures,
    )
  cfg = config.DEEP.replace(norms=tuple(profiles))
  spec = ExperimentSpec(cfg, num_seeds=seeds, measures=None, predictions=tuple(predicted))
  return ExperimentResult(spec, results, 0.0, {})


COLLAPSING = {"layernorm": [9, 9, 9, 9], "l2": [9, 8.5, 8.5, 8.5], "none": [9, 7, 5, 3]}


def _rows(rows, claim, norm=None, measure="effective_rank"):
  return [
    r
    for r in rows
    if r["claim"] == claim and r["measure"] == measure and (norm is None or r["norm"] == norm)
  ]


def test_a_consistent_collapse_is_supported_at_every_step_and_layer():
  result = _result(COLLAPSING)
  rows = layer_report.judge_depth(DEPTH, result.norms)
  trend = _rows(rows, "trend")
  assert [(r["from"], r["layer"]) for r in trend] == [(0, 1), (1, 2), (2, 3), (0, 3)]
  assert all(r["comparison"].verdict == "supported" and r["comparison"].n == 4 for r in trend)
  values = result.norms["none"].layer_measures["effective_rank"]
  assert trend[1]["comparison"].estimate == pytest.approx(np.mean(values[:, 2] - values[:, 1]))
  for subject in ("layernorm", "l2"):
    contrast = _rows(rows, "contrast", subject)
    assert [r["layer"] for r in contrast] == [1, 2, 3]  # the blocks' outputs, not layer 0
    assert all(r["comparison"].verdict == "supported" for r in contrast)
  assert {r["measure"] for r in rows} == set(predictions.HIGHER_IS_ISOTROPIC)
  assert layer_report.trend_summary(trend) == (
    "supported at every step (3 of 3); from layer 0 to 3: supported"
  )


def test_a_rise_at_one_step_refutes_it_there_and_noise_leaves_it_undecided():
  result = _result({**COLLAPSING, "none": [9, 7, 8, 3]})
  trend = _rows(layer_report.judge_depth(DEPTH, result.norms), "trend")
  assert [r["comparison"].verdict for r in trend] == [
    "supported",
    "opposite",
    "supported",
    "supported",
  ]
  assert layer_report.trend_summary(trend) == (
    "supported at 0→1, 2→3; opposite at 1→2; from layer 0 to 3: supported"
  )
  # Each step moves half the seeds up by 1 and half down: the seeds cannot tell.
  signs = (-1.0) ** np.add.outer(np.arange(4), np.arange(4))  # (-1)^(seed + layer)
  result.norms["none"].layer_measures["effective_rank"][:] = 9.0 + 0.5 * signs
  trend = _rows(layer_report.judge_depth(DEPTH, result.norms), "trend")
  assert {r["comparison"].verdict for r in trend} == {"undecided"}
  assert "undecided at 0→1, 1→2, 2→3; from layer 0 to 3: undecided" in (
    layer_report.trend_summary(trend)
  )


def test_each_claim_is_holm_corrected_on_its_own():
  result = _result({**COLLAPSING, "none": [9, 8.9, 8.7, 8.6]}, noise=0.05)
  rows = layer_report.judge_depth(DEPTH, result.norms)
  for claim, relation in (("trend", DEPTH.trend), ("contrast", DEPTH.relation)):
    of = [r for r in rows if r["claim"] == claim]
    raw = []
    for r in of:
      if claim == "trend":
        v = result.norms["none"].layer_measures[r["measure"]]
        a, b = v[:, r["layer"]], v[:, r["from"]]
      else:
        a = result.norms[r["norm"]].layer_measures[r["measure"]][:, r["layer"]]
        b = result.norms["none"].layer_measures[r["measure"]][:, r["layer"]]
      raw.append(stats.directional(a, b, relation).p)
    assert [r["comparison"].p for r in of] == pytest.approx(stats.holm(raw))
    assert len(of) == (4 if claim == "trend" else 6) * len(predictions.HIGHER_IS_ISOTROPIC)


def test_one_seed_gives_untested_readings_and_a_diverged_seed_no_value():
  one = _result(COLLAPSING, seeds=1)
  rows = layer_report.judge_depth(DEPTH, one.norms)
  assert {r["comparison"].verdict for r in rows} == {"supported, untested"}
  assert all("(1 seed;" in r["verdict"] for r in rows)
  result = _result(COLLAPSING, seeds=4)
  result.norms["none"].layer_measures["effective_rank"][2] = np.nan
  rows = _rows(layer_report.judge_depth(DEPTH, result.norms), "trend")
  assert {r["comparison"].n for r in rows} == {3}


def test_measures_the_baseline_lacks_are_named_not_judged():
  result = _result(COLLAPSING)
  for r in result.norms.values():
    del r.layer_measures["stable_rank"]
  rows = layer_report.judge_depth(DEPTH, result.norms)
  assert "stable_rank" not in {r["measure"] for r in rows}
  assert layer_report.not_measured(DEPTH, result.norms) == ["stable_rank"]
  text = "\n".join(layer_report.verdict_lines(DEPTH, result.norms))
  assert "- Not measured at every layer: stable rank" in text


def test_the_tables_hold_the_mean_and_interval_of_every_layer():
  result = _result(COLLAPSING, seeds=3)
  lines = layer_report.section(result)
  start = lines.index("### effective rank (dimensions)")
  table = lines[start + 2 : start + 2 + 2 + 4]
  assert table[0] == "| layer | LayerNorm | Manual L2 Norm | No Norm |"
  assert [row.split(" | ")[0] for row in table[2:]] == ["| 0 (embedding)", "| 1", "| 2", "| 3"]
  for row, layer in zip(table[2:], range(4), strict=True):
    cells = row.strip("| ").split(" | ")[1:]
    for cell, norm in zip(cells, NORMS, strict=True):
      s = stats.across_seeds(result.norms[norm].layer_measures["effective_rank"][:, layer])
      assert cell == stats.cell(s["mean"], *s["ci95"])
  titles = [line for line in lines if line.startswith("### ")]
  assert titles[: len(measures.shown(ISOTROPY))] == [
    f"### {m.label}" + (f" ({m.unit})" if m.unit else "") for m in measures.shown(ISOTROPY)
  ]


def test_the_blocks_hessian_has_one_row_per_block_with_its_diagnostics():
  result = _result(COLLAPSING, seeds=2)
  result.norms["none"].layer_measures["block_hessian_top_converged"][1, 2] = 0.0
  lines = layer_report.section(result)
  start = lines.index("### Hessian λ_max of each block's parameters (nats / parameter²)")
  table = lines[start + 4 : start + 4 + 2 + 3]
  assert table[0].startswith("| block |")
  assert [row.split(" | ")[0] for row in table[2:]] == ["| 1", "| 2", "| 3"]
  assert "**not converged** (1 of 2 seeds)" in table[4].split(" | ")[-1]
  assert "not converged" not in " ".join(table[2:4])
  trace = lines[lines.index("### Hessian trace of each block's parameters (nats / parameter²)") :]
  assert trace[6].endswith(f"| {stats.cell(3.0, 3.0, 3.0)} (MC se 0.5) |")
  assert not any("block_hessian_top_converged" in line for line in lines)
  without = _result(COLLAPSING, blocks_hessian=False)
  assert not any("each block's parameters" in line for line in layer_report.section(without))


def test_markdown_judges_the_depth_prediction_only_layer_by_layer():
  flat = predictions.more_isotropic(("layernorm",), "none", "LN more isotropic")
  result = _result(COLLAPSING, predicted=(flat, DEPTH))
  text = report.markdown(result)
  whole, layered = text.split("## Layer by layer")
  assert "**LN more isotropic**" in whole and "Collapse with depth" not in whole
  assert "**Collapse with depth** (No Norm's value at layer l + 1 lower than at layer l" in layered
  assert "- effective rank, No Norm lower at each next layer: supported at every step" in layered
  table_head = "| layer l | No Norm: layer l against l − 1 | LayerNorm vs No Norm at layer l |"
  assert table_head in layered
  assert "| whole depth, 3 against 0 | supported (4 seeds, paired;" in layered


def test_a_run_without_layer_data_gets_one_line():
  spec = ExperimentSpec(config.TINY, measures=None, predictions=(DEPTH,))
  result = ExperimentResult(spec, {n: norm_result(n) for n in NORMS}, 0.0, {})
  assert layer_report.section(result) == [layer_report.NO_LAYER_DATA, ""]
  text = report.markdown(result)
  assert layer_report.NO_LAYER_DATA in text and "Layer by layer" not in text.replace(
    layer_report.NO_LAYER_DATA, ""
  )
  assert "Collapse with depth" not in text


def test_spectra_without_measures_say_the_isotropy_family_did_not_run():
  result = _result(COLLAPSING)
  norms = {n: r._replace(layer_measures={}) for n, r in result.norms.items()}
  lines = layer_report.section(result._replace(norms=norms))
  assert "No isotropy measure at every layer (the isotropy family did not run)." in lines
  assert any(line.startswith("- Not measured at every layer: effective rank") for line in lines)
