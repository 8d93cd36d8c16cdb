"""Statistics over seeds: each measure's mean and confidence interval (`across_seeds`,
`stats`), and the paired tests that judge the paper's predictions (`judge`).

Every normalization of a run trains from the same seeds (common random numbers: the same
initialization key, batches, directions and probes, `keys.run_keys`), so a comparison of
two normalizations on one measure is made on the per-seed differences, which removes the
seed-to-seed variation the two models share. With n seeds where both values are finite:

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
"untested". Every verdict carries n. Intervals and tests are scipy.stats'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import scipy.stats

from jaxnorm import analysis, measures
from jaxnorm.predictions import Prediction
from jaxnorm.result import Matched, NormResult, SweepResult

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


def t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
  """The Student-t confidence interval of the mean of `x` (n >= 2 values) at `level`:
  mean ± t_{(1 + level) / 2, n - 1} s / sqrt(n), s the sample standard deviation (a
  point for values without spread)."""
  x = np.asarray(x, dtype=np.float64)
  n = len(x)
  half = float(scipy.stats.t.ppf(0.5 + level / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
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
  low, high = t_interval(d, 0.95)
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
    low90, high90 = t_interval(r, 0.90)
    low95, high95 = t_interval(r, 0.95)
    inside = -margin < low90 and high90 < margin
    outside = low95 > margin or high95 < -margin
    # TOST: the larger of the two one-sided p-values.
    p_low = scipy.stats.ttest_1samp(r, -margin, alternative="greater").pvalue
    p_high = scipy.stats.ttest_1samp(r, margin, alternative="less").pvalue
    p = float(max(p_low, p_high))
  low, high = (None, None) if np.all(r == r[0]) else t_interval(r, 0.95)
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


def across_seeds(values) -> dict[str, Any]:
  """Mean, sample standard deviation and 95% Student-t confidence interval of the mean
  over the finite values; n says how many seeds contributed. Non-finite values are
  listed as None (JSON null)."""
  listed = [float(v) if v is not None and np.isfinite(v) else None for v in values]
  finite = np.array([v for v in listed if v is not None], dtype=np.float64)
  n = len(finite)
  out: dict[str, Any] = {"mean": None, "std": None, "ci95": [None, None], "n": n, "values": listed}
  if n:
    out["mean"] = float(finite.mean())
  if n > 1:
    out.update(std=float(finite.std(ddof=1)), ci95=list(t_interval(finite, 0.95)))
  return out


def cell(mean, low, high, empty: str = "n/a") -> str:
  """A table's text of one `across_seeds` value: "mean ± half-width of the 95% interval",
  the mean alone for one seed (`low` None), `empty` for no value (`mean` None)."""
  if mean is None:
    return empty
  return f"{mean:.4g}" if low is None else f"{mean:.4g} ± {(high - low) / 2:.2g}"


def stats(r: NormResult | Matched) -> dict[str, dict[str, Any]]:
  """`across_seeds` of every measure of `r` (`analysis.per_seed`)."""
  return {name: across_seeds(v) for name, v in analysis.per_seed(r).items()}


def by_rate(sweep: SweepResult) -> dict[str, dict[str, list[dict[str, Any]]]]:
  """norm -> measure -> one `across_seeds` per rate of a learning-rate sweep."""
  out: dict[str, dict[str, list]] = {}
  for run in sweep.runs:
    for norm, r in run.norms.items():
      for name, value in stats(r).items():
        out.setdefault(norm, {}).setdefault(name, []).append(value)
  return out


def diverged_by_rate(sweep: SweepResult) -> dict[str, list[int]]:
  """norm -> per rate of a sweep, how many seeds diverged."""
  return {
    norm: [int(run.norms[norm].diverged.sum()) for run in sweep.runs]
    for norm in sweep.runs[0].norms
  }


def judge(prediction: Prediction, norms: dict[str, dict]) -> list[dict[str, Any]]:
  """One row per (subject, measure): {"subject", "measure", "comparison" (a
  `Comparison`, None for a measure that is not comparable), "verdict" (text,
  with the seed count)}. `norms` maps a normalization to its `stats`, whose
  per-seed values are paired by seed."""
  rows, tested = [], []
  for subject in prediction.subjects:
    if subject not in norms or prediction.baseline not in norms:
      continue
    for name in prediction.on:
      a, b = norms[subject].get(name), norms[prediction.baseline].get(name)
      row = {"subject": subject, "measure": name, "comparison": None}
      if a is None or b is None:
        row["verdict"] = "no data"
      elif name in measures.BY_NAME and not measures.BY_NAME[name].comparable:
        row["verdict"] = "not judged: not comparable across normalizations"
      else:
        va = converged_values(norms[subject], name)
        vb = converged_values(norms[prediction.baseline], name)
        left_out = sorted(
          set(not_converged(norms[subject], name))
          | set(not_converged(norms[prediction.baseline], name))
        )
        row["left_out"] = len(left_out)
        if left_out and (all(v is None for v in va) or all(v is None for v in vb)):
          row["verdict"] = "not judged: the estimate did not converge"
        elif prediction.relation == "similar":
          row["comparison"] = similar(va, vb)
        else:
          row["comparison"] = directional(va, vb, prediction.relation)
      if row["comparison"] is not None:
        tested.append(row)
      rows.append(row)
  fixed = corrected([r["comparison"] for r in tested], prediction.relation)
  for row, comparison in zip(tested, fixed, strict=True):
    row["comparison"] = comparison
    row["verdict"] = verdict_text(comparison, prediction.relation)
    if row["left_out"]:
      row["verdict"] += f"; {_seeds(row['left_out'])} left out: the estimate did not converge"
  return rows


def not_converged(stats_norm: dict, name: str) -> list[int]:
  """Positions of the seeds whose value of `name` is an estimate that did not converge
  (`measures.CONVERGENCE`; its flag is 0). Empty for a measure without a flag, or one whose
  flag was not recorded; a seed without a flag value (diverged) is not listed."""
  if name not in measures.CONVERGENCE or measures.CONVERGENCE[name][0] not in stats_norm:
    return []
  flags = stats_norm[measures.CONVERGENCE[name][0]]["values"]
  return [i for i, flag in enumerate(flags) if flag is not None and flag != 1.0]


def converged_values(stats_norm: dict, name: str) -> list[float | None]:
  """The per-seed values of `name`, None for a seed whose estimate did not converge: what
  a verdict may use."""
  dropped = set(not_converged(stats_norm, name))
  return [None if i in dropped else v for i, v in enumerate(stats_norm[name]["values"])]


def _seeds(n: int) -> str:
  return f"{n} seed" + ("s" if n != 1 else "")


def verdict_text(c: Comparison, relation: str) -> str:
  seeds = f"{c.n} seed" + ("s" if c.n != 1 else "")
  if c.p is None:  # no data, a tie, one seed, values of opposite signs
    shown = "" if c.estimate is None else f"; {_estimate(c.estimate, relation)}"
    return f"{c.verdict} ({seeds}{shown})"
  what = _estimate(c.estimate, relation)
  interval = f"95% CI [{c.low:.3g}, {c.high:.3g}]" if c.low is not None else "no spread"
  test = "Holm-corrected p" if relation != "similar" else "equivalence p"
  return f"{c.verdict} ({seeds}, paired; {what}, {interval}, {test} = {c.p:.2g})"


def _estimate(value: float, relation: str) -> str:
  return f"ratio {value:.3g}" if relation == "similar" else f"difference {value:.3g}"
