from jaxnorm import experiment, report


def _stats(values):
  return experiment.across_seeds(values)


def test_one_seed_verdicts_compare_point_values():
  norms = {
    "a": {"final_loss": 1.0, "measures": {"hessian_trace": 2.0}},
    "b": {"final_loss": 3.0, "measures": {"hessian_trace": 1.0}},
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
  norms = {"a": {"x": 1.0, "y": None}, "b": {"x": 1.9, "y": 1.0}}
  rows = report.judge(report.Prediction("", ("a",), "b", "similar", ("x", "y")), norms)
  assert [r["verdict"] for r in rows] == ["supported (1 seed)", "no data"]
  assert report.judge(report.Prediction("", ("zzz",), "b", "lower", ("x",)), norms) == []


def test_markdown_has_the_table_and_the_verdicts():
  norms = {
    "layernorm": {
      "final_loss": 0.1,
      "landscape_max_rise": 0.2,
      "measures": {"hessian_trace": 5.0, "effective_rank": 100.0},
    },
    "none": {
      "final_loss": 0.3,
      "landscape_max_rise": 0.4,
      "measures": {"hessian_trace": 9.0, "effective_rank": 50.0},
    },
  }
  text = report.markdown(
    {"experiment": "t", "seeds": 1, "norms": norms},
    [report.flatter(("layernorm",), "none", "LN is flatter")],
    {"layernorm": "LayerNorm", "none": "No Norm"},
  )
  assert "| measure | LayerNorm | No Norm |" in text
  assert "| Hessian trace | 5 | 9 |" in text
  assert "**LN is flatter**" in text
  assert "LayerNorm vs No Norm, Hessian trace: supported (1 seed)" in text
  assert "| Hessian λ_max | n/a | n/a |" in text
