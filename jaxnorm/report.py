"""What a run prints and writes as text: the terminal table and `measures.md` with the
verdict on each of the paper's predictions. Pure functions of a `pipeline.ExperimentResult`.

A prediction compares normalizations on named measures. Each comparison is judged from
the measures across seeds (`summary.stats`): with one seed, by the point values ("1 seed":
no error bar); with several, by the 95% confidence intervals of the means: "supported" when
they are disjoint in the predicted direction, "contradicted" when disjoint the other way,
else "inconclusive". A "similar" prediction holds on a measure when the two means are
within a factor of 2.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from jaxnorm import measures, norms, summary

if TYPE_CHECKING:
  from jaxnorm.pipeline import ExperimentResult

SIMILAR_FACTOR = 2.0
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


def _value(stats_norm: dict, name: str) -> tuple[float | None, float | None, float | None]:
  """(mean, ci low, ci high) of a measure from `summary.stats`; the CI is None for one
  seed, everything is None for a measure that was not taken."""
  v = stats_norm.get(name)
  if v is None:
    return None, None, None
  return v["mean"], v["ci95"][0], v["ci95"][1]


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
  """One verdict per (subject, measure) pair; `norms` maps a normalization to its
  `summary.stats`."""
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


def cell(mean, low, high, empty: str = "n/a") -> str:
  if mean is None:
    return empty
  return f"{mean:.4g}" if low is None else f"{mean:.4g} ± {(high - low) / 2:.2g}"


def label(norm: str) -> str:
  """The normalization's label from the registry, or its name if it is not registered."""
  spec = norms.REGISTRY.get(norm)
  return spec.label if spec else norm


def markdown(result: ExperimentResult) -> str:
  """measures.md: the table of every shown measure per normalization, then the verdicts
  on the spec's predictions."""
  stats = {norm: summary.stats(r) for norm, r in result.norms.items()}
  seeds = result.spec.num_seeds
  lines = [
    f"# Measures: {result.spec.name}",
    "",
    f"{seeds} seed(s); cells are the value"
    + (" (mean ± 95% CI half-width)" if seeds > 1 else "")
    + ".",
    "",
    "| measure | " + " | ".join(label(n) for n in stats) + " |",
    "|---|" + "---|" * len(stats),
    "| learning rate | " + " | ".join(f"{r.learning_rate:g}" for r in result.norms.values()) + " |",
  ]
  for m in measures.MEASURES:
    if m.shown:
      lines.append(
        f"| {m.label} | " + " | ".join(cell(*_value(stats[n], m.name)) for n in stats) + " |"
      )
  lines += ["", "## The paper's predictions", ""]
  for p in result.spec.predictions:
    rows = judge(p, stats)
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
        f"- {label(r['subject'])} vs {label(p.baseline)}, {measures.label(r['measure'])}:"
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


TABLE_COLUMNS = ("final_loss", "landscape_max_rise", "spectrum_top_bottom_ratio")


def terminal_table(result: ExperimentResult) -> str:
  """Per normalization: learning rate, final loss, slice rise, spectrum ratio, training
  time. With
  several seeds each cell is the mean ± the half-width of its 95% confidence interval."""
  headers = {"final_loss": "final loss", "landscape_max_rise": "landscape rise"}
  width = 22 if result.spec.num_seeds > 1 else 15
  header = f"{'normalization':<16}{'lr':>8}" + "".join(
    f"{headers.get(name, measures.label(name)):>{width}}" for name in TABLE_COLUMNS
  )
  header += f"{'train s':>10}"
  rows = [header, "-" * len(header)]
  for norm, r in result.norms.items():
    stats = summary.stats(r)
    cells = "".join(f"{cell(*_value(stats, name), empty='nan'):>{width}}" for name in TABLE_COLUMNS)
    rows.append(f"{label(norm):<16}{r.learning_rate:>8.2g}{cells}{r.seconds['train']:>10.1f}")
  return "\n".join(rows)
