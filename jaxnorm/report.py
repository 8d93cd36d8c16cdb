"""The measures table and the verdict on each of the paper's predictions, as Markdown.

A prediction compares normalizations on named measures. Each comparison is judged from
summary.json's numbers: with one seed, by the point values ("1 seed": no error bar); with
several, by the 95% confidence intervals of the means: "supported" when they are disjoint in
the predicted direction, "contradicted" when disjoint the other way, else "inconclusive".
A "similar" prediction holds on a measure when the two means are within a factor of 2.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from jaxnorm import measures

SIMILAR_FACTOR = 2.0

LABELS = {
  "final_loss": "final training loss",
  "landscape_max_rise": "slice rise, global-norm direction",
  "filter_landscape_max_rise": "slice rise, filter-normalized direction",
  "adaptive_sharpness": "adaptive average sharpness",
  "hessian_top_eigenvalue": "Hessian λ_max",
  "hessian_trace": "Hessian trace",
  "effective_rank": "effective rank",
  "stable_rank": "stable rank",
  "participation_ratio": "participation ratio",
  "condition_number": "condition number",
  "centered_effective_rank": "effective rank, centered",
}
LOWER_IS_FLATTER = measures.FLATNESS
HIGHER_IS_ISOTROPIC = measures.ISOTROPY


@dataclasses.dataclass(frozen=True)
class Prediction:
  """`subjects` are `relation` than `baseline` on each of `on`.

  relation: "lower", "higher" or "similar".
  """

  text: str
  subjects: tuple[str, ...]
  baseline: str
  relation: str
  on: tuple[str, ...]


def flatter(subjects, baseline, text) -> Prediction:
  return Prediction(text, tuple(subjects), baseline, "lower", LOWER_IS_FLATTER)


def more_isotropic(subjects, baseline, text) -> Prediction:
  return Prediction(text, tuple(subjects), baseline, "higher", HIGHER_IS_ISOTROPIC)


def _value(summary_norm: dict, name: str) -> tuple[float | None, float | None, float | None]:
  """(mean, ci low, ci high) of a measure; the CI is None for one seed."""
  v = summary_norm.get(name, summary_norm.get("measures", {}).get(name))
  if isinstance(v, dict):
    return v["mean"], v["ci95"][0], v["ci95"][1]
  return v, None, None


def _judge(a, b, relation: str) -> str:
  (ma, la, ha), (mb, lb, hb) = a, b
  if ma is None or mb is None:
    return "no data"
  if relation == "similar":
    ok = min(abs(ma), abs(mb)) * SIMILAR_FACTOR >= max(abs(ma), abs(mb))
    return ("supported" if ok else "not supported") + (" (1 seed)" if la is None else "")
  sign = 1 if relation == "higher" else -1
  if la is None or lb is None:
    return ("supported" if sign * (ma - mb) > 0 else "not supported") + " (1 seed)"
  if sign > 0 and la > hb or sign < 0 and ha < lb:
    return "supported"
  if sign > 0 and ha < lb or sign < 0 and la > hb:
    return "contradicted"
  return "inconclusive"


def judge(prediction: Prediction, norms: dict[str, dict]) -> list[dict[str, Any]]:
  """One verdict per (subject, measure) pair present in the summary."""
  rows = []
  for subject in prediction.subjects:
    if subject not in norms or prediction.baseline not in norms:
      continue
    for name in prediction.on:
      rows.append(
        {
          "subject": subject,
          "measure": name,
          "verdict": _judge(
            _value(norms[subject], name),
            _value(norms[prediction.baseline], name),
            prediction.relation,
          ),
        }
      )
  return rows


def _cell(mean, low, high) -> str:
  if mean is None:
    return "n/a"
  return f"{mean:.4g}" if low is None else f"{mean:.4g} ± {(high - low) / 2:.2g}"


def markdown(summary: dict, predictions: list[Prediction], labels: dict[str, str]) -> str:
  """measures.md: the table of every measure per normalization, then the verdicts."""
  norms = summary["norms"]
  names = [
    "final_loss",
    "landscape_max_rise",
    *[m for m in LABELS if m not in ("final_loss", "landscape_max_rise")],
  ]
  seeds = summary.get("seeds", 1)
  lines = [
    f"# Measures: {summary.get('experiment', '')}",
    "",
    f"{seeds} seed(s); cells are the value"
    + (" (mean ± 95% CI half-width)" if seeds > 1 else "")
    + ".",
    "",
    "| measure | " + " | ".join(labels.get(n, n) for n in norms) + " |",
    "|---|" + "---|" * len(norms),
  ]
  for name in names:
    lines.append(
      f"| {LABELS.get(name, name)} | "
      + " | ".join(_cell(*_value(norms[n], name)) for n in norms)
      + " |"
    )
  lines += ["", "## The paper's predictions", ""]
  for p in predictions:
    rows = judge(p, norms)
    if not rows:
      continue
    tally = {}
    for r in rows:
      key = r["verdict"].split(" (")[0]
      tally[key] = tally.get(key, 0) + 1
    lines.append(
      f"**{p.text}** — "
      + ", ".join(f"{k}: {v}" for k, v in tally.items())
      + f" of {len(rows)} comparisons."
    )
    lines.append("")
    for r in rows:
      lines.append(
        f"- {labels.get(r['subject'], r['subject'])} vs "
        f"{labels.get(p.baseline, p.baseline)}, {LABELS.get(r['measure'], r['measure'])}:"
        f" {r['verdict']}"
      )
    lines.append("")
  lines.append(
    "Verdicts: with several seeds, 95% confidence intervals of the means must be "
    "disjoint; 'similar' means within a factor of 2. Hessian λ_max and trace are "
    "not invariant to the rescalings that normalization layers allow (Dinh et al. "
    "2017); the adaptive sharpness and the filter-normalized slice are."
  )
  return "\n".join(lines) + "\n"
