"""Statistics over seeds (`jaxnorm.stats`): the mean and confidence interval of a measure
across seeds, the paired and equivalence tests with their verdicts, Holm's correction over
one prediction's comparisons, and what `judge` leaves unjudged (measures not comparable
between models, seeds without data, estimates that did not converge)."""

import numpy as np
import pytest
import scipy.stats

from jaxnorm import measures, predictions, stats


def _stats(values):
  return stats.across_seeds(values)


def _verdict(subject, baseline, relation, name="final_loss"):
  norms = {"a": {name: _stats(subject)}, "b": {name: _stats(baseline)}}
  rows = stats.judge(predictions.Prediction("", ("a",), "b", relation, (name,)), norms)
  return rows[0]["comparison"], rows[0]["verdict"]


def test_confidence_interval_known_answer():
  s = stats.across_seeds([1.0, 2.0, 3.0, None, float("nan")])
  assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0
  # Student's t with 2 degrees of freedom has the closed-form CDF 1/2 + t / (2 sqrt(2 + t^2)):
  # its 0.975 quantile solves t / sqrt(2 + t^2) = 0.95, t^2 = 1.805 / 0.0975 = 722 / 39
  # (t = 4.3026527...). Half-width t * sd / sqrt(n) = sqrt(722 / 117) = 2.4841377117503311,
  # around the mean 2 (40-digit decimal arithmetic, rounded to 17 digits).
  np.testing.assert_allclose(s["ci95"], [-0.48413771175033107, 4.4841377117503311], rtol=1e-12)
  assert s["values"] == [1.0, 2.0, 3.0, None, None]
  assert stats.across_seeds([None])["mean"] is None
  one = stats.across_seeds([5.0])
  assert one["mean"] == 5.0 and one["ci95"] == [None, None] and one["n"] == 1


def test_pairing_by_seed_finds_a_difference_the_seed_spread_hides():
  """Seeds move both models alike (common random numbers): the paired test sees a
  consistent 0.1 gap that unpaired intervals (overlapping) cannot."""
  base = np.array([1.0, 3.0, 5.0, 7.0, 9.0])
  lower = base - 0.1 + np.array([0.01, -0.01, 0.0, 0.02, -0.02])
  c, text = _verdict(lower, base, "lower")
  assert c.verdict == "supported" and c.n == 5 and "5 seeds, paired" in text
  assert c.p == pytest.approx(scipy.stats.ttest_rel(lower, base).pvalue)
  assert c.estimate == pytest.approx(-0.1)
  assert _verdict(lower, base, "higher")[0].verdict == "opposite"


def test_undecided_tie_and_one_seed():
  noisy = _verdict([1.0, 2.0, 0.5], [1.2, 1.1, 1.0], "lower")[0]
  assert noisy.verdict == "undecided" and noisy.p > 0.05
  assert _verdict([1.0, 2.0], [1.0, 2.0], "lower")[0].verdict == "tie"
  c, text = _verdict([1.0], [2.0], "lower")
  assert c.verdict == "supported, untested" and "(1 seed;" in text
  assert _verdict([3.0], [2.0], "lower")[0].verdict == "opposite, untested"


def test_similar_respects_sign_and_scale():
  assert _verdict([1.0], [-1.0], "similar")[0].verdict.startswith("different")  # opposite signs
  assert _verdict([70.0], [115.0], "similar")[0].verdict == "different, untested"  # 1.6x apart
  close = _verdict([1.00, 2.02, 3.01, 4.0], [1.01, 2.0, 3.0, 4.02], "similar")[0]
  assert close.verdict == "supported" and close.estimate == pytest.approx(1.0, abs=0.01)
  far = _verdict([2.0, 4.1, 6.0, 8.1], [1.0, 2.0, 3.0, 4.0], "similar")[0]
  assert far.verdict == "different" and far.estimate == pytest.approx(2.0, rel=0.02)


def test_holm_correction_known_answer():
  # p = (0.01, 0.04, 0.03) -> sorted 0.01*3, 0.03*2, 0.04*1 -> 0.03, 0.06, 0.06
  assert stats.holm([0.01, 0.04, None, 0.03]) == pytest.approx([0.03, 0.06, None, 0.06])


def test_holm_turns_a_borderline_family_member_undecided():
  rng = np.random.default_rng(0)
  base = rng.normal(size=(3, 6))
  # Three comparisons, each significant alone (p = 0.038: the differences are -0.1, -0.9).
  lower = base - 0.5 + 0.4 * np.array([[1, -1, 1, -1, 1, -1]] * 3)
  norms = {"a": {}, "b": {}}
  for i in range(3):
    norms["a"][f"m{i}"] = _stats(lower[i])
    norms["b"][f"m{i}"] = _stats(base[i])
  raw = [stats.directional(lower[i], base[i], "lower").p for i in range(3)]
  assert all(p < 0.05 < 3 * p for p in raw)
  rows = stats.judge(predictions.Prediction("", ("a",), "b", "lower", ("m0", "m1", "m2")), norms)
  assert [r["comparison"].verdict for r in rows] == ["undecided"] * 3


def test_non_comparable_measures_and_missing_data_are_not_judged():
  norms = {
    "a": {"hessian_trace": _stats([1.0, 2.0]), "y": _stats([None, None])},
    "b": {"hessian_trace": _stats([3.0, 4.0]), "y": _stats([1.0, 2.0])},
  }
  rows = stats.judge(
    predictions.Prediction("", ("a",), "b", "lower", ("hessian_trace", "y")), norms
  )
  assert rows[0]["verdict"].startswith("not judged") and rows[0]["comparison"] is None
  assert rows[1]["verdict"] == "no data (0 seeds)"
  assert stats.judge(predictions.Prediction("", ("zzz",), "b", "lower", ("y",)), norms) == []


@pytest.mark.hostile
def test_a_seed_whose_estimate_did_not_converge_gives_no_value_to_a_verdict(monkeypatch):
  """With the last seed's estimate unconverged (and far off), the paired test rests on the
  three others, and says so; with none converged nothing is judged."""
  monkeypatch.setitem(measures.CONVERGENCE, "m", ("m_converged", "m_residual"))
  subject = {"m": _stats([1.0, 2.0, 3.0, 10.0]), "m_converged": _stats([1.0, 1.0, 1.0, 0.0])}
  baseline = {"m": _stats([2.0, 3.0, 4.0, 0.0]), "m_converged": _stats([1.0] * 4)}
  prediction = predictions.Prediction("", ("a",), "b", "lower", ("m",))
  (row,) = stats.judge(prediction, {"a": subject, "b": baseline})
  assert row["comparison"].n == 3 and row["comparison"].verdict == "supported"
  assert row["verdict"].endswith("; 1 seed left out: the estimate did not converge")
  assert stats.converged_values(subject, "m") == [1.0, 2.0, 3.0, None]
  none = {**subject, "m_converged": _stats([0.0] * 4)}
  (row,) = stats.judge(prediction, {"a": none, "b": baseline})
  assert row["comparison"] is None
  assert row["verdict"] == "not judged: the estimate did not converge"
  (row,) = stats.judge(prediction, {"a": {"m": subject["m"]}, "b": baseline})  # no flag
  assert row["comparison"].n == 4
