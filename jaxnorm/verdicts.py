"""Paired statistics for comparing two normalizations on one measure, over the same seeds.

Every normalization of a run trains from the same seeds (common random numbers: the same
initialization key, batches, directions and probes, `keys.run_keys`), so the comparison is
made on the per-seed differences, which removes the seed-to-seed variation the two models
share. With n seeds where both values are finite:

  * "lower" / "higher": a paired t-test on d_s = subject_s - baseline_s (Student 1908); the
    p-values of one prediction's comparisons are corrected together by Holm's step-down
    method (Holm 1979). Verdict: "supported" (p < 0.05, the predicted sign), "opposite"
    (p < 0.05, the other sign), "undecided" (p >= 0.05), "tie" (every d_s = 0).
  * "similar": an equivalence test (two one-sided tests, Schuirmann 1987) on the log ratio
    r_s = log(subject_s / baseline_s) with margin log(SIMILAR_RATIO): "supported" when the
    90% interval of the mean log ratio lies within the margin, "different" when the 95%
    interval lies outside it, else "undecided". Values of opposite signs (or a zero) are
    never similar: "different".

With one seed nothing can be tested: the verdict says what the point values show, marked
"untested". Every verdict carries n.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import scipy.stats

ALPHA = 0.05
SIMILAR_RATIO = 1.25  # "similar": within 25% of each other, on every seed's scale


class Comparison(NamedTuple):
  """One subject-vs-baseline comparison on one measure.

  n: seeds where both values are finite. estimate: the mean difference (lower/higher) or
  the mean ratio exp(mean log ratio) (similar). low, high: its 95% interval (None for
  n < 2). p: the p-value before correction (None when untested). verdict: see the module
  docstring.
  """

  n: int
  estimate: float | None
  low: float | None
  high: float | None
  p: float | None
  verdict: str


def _pairs(subject: Sequence, baseline: Sequence) -> tuple[np.ndarray, np.ndarray]:
  a = np.array([np.nan if v is None else v for v in subject], dtype=np.float64)
  b = np.array([np.nan if v is None else v for v in baseline], dtype=np.float64)
  keep = np.isfinite(a) & np.isfinite(b)
  return a[keep], b[keep]


def _t_interval(x: np.ndarray, level: float) -> tuple[float, float]:
  half = scipy.stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
  return float(x.mean() - half), float(x.mean() + half)


def directional(subject: Sequence, baseline: Sequence, relation: str) -> Comparison:
  """Is the subject `relation` ("lower" / "higher") than the baseline, seed by seed?
  (p uncorrected; `holm` corrects a family.)"""
  a, b = _pairs(subject, baseline)
  d = a - b
  n = len(d)
  if n == 0:
    return Comparison(0, None, None, None, None, "no data")
  sign = 1.0 if relation == "higher" else -1.0
  mean = float(d.mean())
  if not np.any(d):
    return Comparison(n, 0.0, None, None, None, "tie")
  if n == 1:
    word = "supported" if sign * mean > 0 else "opposite"
    return Comparison(1, mean, None, None, None, f"{word}, untested")
  if np.all(d == d[0]):  # no spread: the difference is certain
    p = 0.0
  else:
    p = float(scipy.stats.ttest_1samp(d, 0.0).pvalue)
  low, high = _t_interval(d, 0.95)
  return Comparison(n, mean, low, high, p, _directional_word(p, sign * mean))


def _directional_word(p: float, signed_mean: float) -> str:
  if p >= ALPHA:
    return "undecided"
  return "supported" if signed_mean > 0 else "opposite"


def similar(subject: Sequence, baseline: Sequence) -> Comparison:
  """Are the two within a factor SIMILAR_RATIO of each other, seed by seed?"""
  a, b = _pairs(subject, baseline)
  n = len(a)
  if n == 0:
    return Comparison(0, None, None, None, None, "no data")
  if np.any(a * b <= 0):
    return Comparison(n, None, None, None, None, "different (values of opposite signs or zero)")
  r = np.log(a / b)
  margin = math.log(SIMILAR_RATIO)
  ratio = float(math.exp(r.mean()))
  if n == 1:
    word = "supported" if abs(r[0]) <= margin else "different"
    return Comparison(1, ratio, None, None, None, f"{word}, untested")
  if np.all(r == r[0]):
    inside, outside, p = abs(r[0]) < margin, abs(r[0]) > margin, 0.0
  else:
    low90, high90 = _t_interval(r, 0.90)
    low95, high95 = _t_interval(r, 0.95)
    inside = -margin < low90 and high90 < margin
    outside = low95 > margin or high95 < -margin
    se = r.std(ddof=1) / math.sqrt(n)
    # TOST: the larger of the two one-sided p-values.
    p_low = 1 - scipy.stats.t.cdf((r.mean() + margin) / se, n - 1)
    p_high = scipy.stats.t.cdf((r.mean() - margin) / se, n - 1)
    p = float(max(p_low, p_high))
  low, high = (None, None) if np.all(r == r[0]) else _t_interval(r, 0.95)
  word = "supported" if inside else "different" if outside else "undecided"
  return Comparison(
    n,
    ratio,
    None if low is None else math.exp(low),
    None if high is None else math.exp(high),
    p,
    word,
  )


def holm(p_values: Sequence[float | None]) -> list[float | None]:
  """Holm's step-down correction of a family of p-values (None: not tested, left out):
  the k-th smallest of m becomes max over j <= k of min(1, (m - j + 1) p_(j))."""
  tested = sorted((p, i) for i, p in enumerate(p_values) if p is not None)
  m, running = len(tested), 0.0
  out: list[float | None] = [None] * len(p_values)
  for k, (p, i) in enumerate(tested):
    running = max(running, min(1.0, (m - k) * p))
    out[i] = running
  return out


def corrected(comparisons: Sequence[Comparison], relation: str) -> list[Comparison]:
  """The directional comparisons of one prediction with Holm-corrected p-values and
  verdicts (equivalence verdicts are left as they are)."""
  if relation == "similar":
    return list(comparisons)
  adjusted = holm([c.p for c in comparisons])
  sign = 1.0 if relation == "higher" else -1.0
  return [
    c if p is None else c._replace(p=p, verdict=_directional_word(p, sign * c.estimate))
    for c, p in zip(comparisons, adjusted, strict=True)
  ]
