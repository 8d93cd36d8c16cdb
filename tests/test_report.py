import numpy as np

from jaxnorm import config, pipeline, report, summary


def _stats(values):
  return summary.across_seeds(values)


def test_one_seed_verdicts_compare_point_values():
  norms = {
    "a": {"final_loss": _stats([1.0]), "hessian_trace": _stats([2.0])},
    "b": {"final_loss": _stats([3.0]), "hessian_trace": _stats([1.0])},
  }
  p = report.Prediction("a lower", ("a",), "b", "lower", ("final_loss", "hessian_trace"))
  rows = report.judge(p, norms)
  assert [r["verdict"] for r in rows] == ["supported (1 seed)", "not supported (1 seed)"]


def test_several_seeds_use_confidence_intervals():
  low, high, mid = _stats([1.0, 1.1, 0.9]), _stats([5.0, 5.1, 4.9]), _stats([0.0, 6.0, 3.0])
  norms = {"low": {"m": low}, "high": {"m": high}, "mid": {"m": mid}}
  verdict = lambda s, b, rel: report.judge(  # noqa: E731
    report.Prediction("", (s,), b, rel, ("m",)), norms
  )[0]["verdict"]
  assert verdict("low", "high", "lower") == "supported"
  assert verdict("low", "high", "higher") == "contradicted"
  assert verdict("mid", "high", "lower") == "inconclusive"  # overlapping intervals
  assert verdict("low", "mid", "similar") == "not supported"


def test_similar_within_a_factor_of_two_and_missing_data():
  norms = {
    "a": {"x": _stats([1.0]), "y": _stats([None])},
    "b": {"x": _stats([1.9]), "y": _stats([1.0])},
  }
  rows = report.judge(report.Prediction("", ("a",), "b", "similar", ("x", "y")), norms)
  assert [r["verdict"] for r in rows] == ["supported (1 seed)", "no data"]
  assert report.judge(report.Prediction("", ("zzz",), "b", "lower", ("x",)), norms) == []


def _norm_result(norm, final_loss, landscape_max_rise, measured):
  """One seed whose final loss, slice rise and measures are the given values."""
  return pipeline.NormResult(
    norm=norm,
    learning_rate=1e-3,
    seeds=np.array([0]),
    losses=np.full((1, 5), final_loss),
    alphas=np.array([-0.5, 0.0, 0.5]),
    offsets=np.array([-0.5, 0.0, 0.5]),
    landscape=np.array([[1.0 + landscape_max_rise, 1.0, 1.0]]),
    base_loss=np.array([1.0]),
    spectrum=np.array([[4.0, 2.0, 1.0]]),
    measures={name: np.array([value]) for name, value in measured.items()},
    surface_grid=None,
    surface=None,
    variables=None,
    first_nonfinite_step=np.array([-1]),
    seconds={"train": 0.0, "analysis": 0.0},
  )


def test_markdown_has_the_table_and_the_verdicts():
  norms = {
    "layernorm": _norm_result(
      "layernorm", 0.1, 0.2, {"hessian_trace": 5.0, "effective_rank": 100.0}
    ),
    "none": _norm_result("none", 0.3, 0.4, {"hessian_trace": 9.0, "effective_rank": 50.0}),
  }
  spec = pipeline.ExperimentSpec(
    config.TINY.replace(norms=("layernorm", "none")),
    name="t",
    predictions=(report.flatter(("layernorm",), "none", "LN is flatter"),),
    measures=None,
  )
  text = report.markdown(pipeline.ExperimentResult(spec, norms, 0.0, {}))
  assert "| measure | LayerNorm | No Norm |" in text
  assert "| Hessian trace | 5 | 9 |" in text
  assert "**LN is flatter**" in text
  assert "LayerNorm vs No Norm, Hessian trace: supported (1 seed)" in text
  assert "| Hessian λ_max | n/a | n/a |" in text
