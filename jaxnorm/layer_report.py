"""measures.md's section on depth: every normalization's measures at every layer
(`NormResult.layer_measures`; layer 0 the embedding output, layer l block l's output) as
tables of layer x normalization, and the verdicts on the predictions about depth
(`predictions.DepthPrediction`), judged layer by layer. Pure functions that format; the
numbers and tests are `stats`'.

A `DepthPrediction` makes two claims, each judged on per-seed values paired by seed with
`stats`' tests (a paired t-test; one seed gives an untested reading):

  * the trend: the baseline's (e.g. No Norm's) value of each measure at layer l + 1
    against the same seed's value at layer l, for each step l = 0 .. N - 1, and over the
    whole depth (layer N against layer 0, with more than one block);
  * the contrast: at each block's output l = 1 .. N, each subject against the baseline.

The p-values of one claim (every step and measure; every subject, layer and measure) are
Holm-corrected together. "Progressively" is read as at every step: per measure the report
says at which steps the trend is supported, at which it is opposite (the claim refuted
there) and at which the seeds cannot tell (undecided, or untested with one seed).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxnorm import measures, predictions, stats
from jaxnorm.norms import label
from jaxnorm.result import ExperimentResult, NormResult

BLOCK_PREFIX = "block_"  # per-block measures, (S, N): "block_hessian_trace", ...
NO_LAYER_DATA = (
  "Layer by layer: no data (the run was saved before jaxnorm measured every layer, or "
  "its models were not analyzed)."
)


def layered(result: ExperimentResult) -> dict[str, NormResult]:
  """The normalizations of `result` that hold layer-wise data (`layer_spectra`, or some
  `layer_measures`; both None in folders written before the dissection existed)."""
  return {n: r for n, r in result.norms.items() if r.layer_spectra is not None or r.layer_measures}


def num_blocks(r: NormResult) -> int:
  """N, from the layer-wise arrays of `r` (N + 1 layers)."""
  if r.layer_spectra is not None:
    return r.layer_spectra.shape[1] - 1
  for name, v in (r.layer_measures or {}).items():
    return v.shape[1] if name.startswith(BLOCK_PREFIX) else v.shape[1] - 1
  raise ValueError(f"{r.norm} holds no layer-wise data")


def layer_measure(r: NormResult, name: str) -> np.ndarray | None:
  """(S, N + 1) values of isotropy measure `name` at every layer (or (S, N) for a
  per-block measure "block_..."), as float64; None when `r` lacks it."""
  values = (r.layer_measures or {}).get(name)
  return None if values is None else np.asarray(values, dtype=np.float64)


def isotropy_shown(norms: dict[str, NormResult]) -> list[measures.Measure]:
  """The isotropy measures that tables show (`measures.shown`) and some model of `norms`
  has at every layer, in table order."""
  present = set().union(*(set(r.layer_measures or {}) for r in norms.values()))
  return [m for m in measures.shown(present) if m.kind == "isotropy"]


def blocks_shown(norms: dict[str, NormResult]) -> list[tuple[str, measures.Measure]]:
  """(name, measure) of the per-block measures some model of `norms` has, whose scalar
  measure ("block_" removed) is a shown flatness measure: the blocks' Hessian λ_max and
  trace. Their diagnostics (residuals, flags, standard errors) annotate them."""
  present = set().union(*(set(r.layer_measures or {}) for r in norms.values()))
  return [
    (BLOCK_PREFIX + m.name, m)
    for m in measures.MEASURES
    if m.shown and m.kind == "flatness" and BLOCK_PREFIX + m.name in present
  ]


def at_layer(r: NormResult, index: int) -> dict[str, dict[str, Any]]:
  """`stats.across_seeds` of every layer-wise array of `r` at position `index` of its
  layer axis (layer `index` for isotropy, block `index + 1` for "block_" names), for the
  arrays that reach it."""
  return {
    name: stats.across_seeds(np.asarray(v, dtype=np.float64)[:, index])
    for name, v in (r.layer_measures or {}).items()
    if index < np.shape(v)[1]
  }


def _unconverged(at: dict[str, dict[str, Any]], name: str) -> str:
  """ " **not converged** (k of S seeds)" after a per-block λ_max whose Lanczos did not
  converge on some seed (its flag, `measures.CONVERGENCE` with "block_" in front, is not
  1); "" otherwise."""
  flag, _ = measures.CONVERGENCE.get(name.removeprefix(BLOCK_PREFIX), (None, None))
  if flag is None or BLOCK_PREFIX + flag not in at:
    return ""
  flags = at[BLOCK_PREFIX + flag]["values"]
  bad = sum(1 for f in flags if f is not None and f != 1.0)
  return f" **not converged** ({bad} of {len(flags)} seeds)" if bad else ""


def _table(norms, name: str, rows: list[tuple[str, int]], axis: str = "layer") -> list[str]:
  """A markdown table of `name`: one row per (row label, index on the layer axis), one
  column per normalization (first column headed `axis`), cells `stats.cell`."""
  lines = [
    f"| {axis} | " + " | ".join(label(n) for n in norms) + " |",
    "|---|" + "---|" * len(norms),
  ]
  for row_label, index in rows:
    cells = []
    for r in norms.values():
      at = at_layer(r, index)
      value = at.get(name)
      text = "n/a" if value is None else stats.cell(value["mean"], *value["ci95"])
      spread = at.get(f"{name}_stderr")
      if value is not None and spread is not None and spread["mean"] is not None:
        text += f" (MC se {spread['mean']:.2g})"
      cells.append(text + _unconverged(at, name))
    lines.append(f"| {row_label} | " + " | ".join(cells) + " |")
  return lines + [""]


def layer_rows(depth: int) -> list[tuple[str, int]]:
  """(row label, index) of layers 0 .. N: "0 (embedding)", "1", ..."""
  return [("0 (embedding)", 0)] + [(str(i), i) for i in range(1, depth + 1)]


def block_rows(depth: int) -> list[tuple[str, int]]:
  """(row label, index) of blocks 1 .. N: "1", ... at index 0 .. N - 1."""
  return [(str(i + 1), i) for i in range(depth)]


def _judged(rows: list[dict], relation: str) -> list[dict]:
  """`rows` with their comparisons Holm-corrected together and their verdict texts."""
  fixed = stats.corrected([r["comparison"] for r in rows], relation)
  return [
    {**r, "comparison": c, "verdict": stats.verdict_text(c, relation)}
    for r, c in zip(rows, fixed, strict=True)
  ]


def judge_depth(p: predictions.DepthPrediction, norms: dict[str, NormResult]) -> list[dict]:
  """The verdicts of `p` on the layer-wise measures of `norms`, one row per comparison:
  {"claim": "trend" or "contrast", "measure", "norm" (the baseline for the trend, the
  subject for the contrast), "layer" (l), "from" (the trend's earlier layer, l - 1, or 0
  for the whole depth; None for the contrast), "comparison" (a `stats.Comparison`),
  "verdict" (text, with the seed count)}. Each claim's comparisons are Holm-corrected
  together. Measures of `p.on` the baseline lacks are left out (`not_measured`)."""
  base = norms.get(p.baseline)
  if base is None:
    return []
  trend, contrast = [], []
  for name in p.on:
    b = layer_measure(base, name)
    if b is None:
      continue
    depth = b.shape[1] - 1
    steps = [(layer - 1, layer) for layer in range(1, depth + 1)]
    steps += [(0, depth)] if depth > 1 else []
    for start, layer in steps:
      c = stats.directional(b[:, layer], b[:, start], p.trend)
      trend.append(
        {"claim": "trend", "measure": name, "norm": p.baseline, "layer": layer, "from": start}
        | {"comparison": c}
      )
    for subject in p.subjects:
      a = layer_measure(norms[subject], name) if subject in norms else None
      if a is None:
        continue
      for layer in range(1, depth + 1):
        c = stats.directional(a[:, layer], b[:, layer], p.relation)
        contrast.append(
          {"claim": "contrast", "measure": name, "norm": subject, "layer": layer, "from": None}
          | {"comparison": c}
        )
  return _judged(trend, p.trend) + _judged(contrast, p.relation)


def not_measured(p: predictions.DepthPrediction, norms: dict[str, NormResult]) -> list[str]:
  """The measures of `p.on` that the baseline has at no layer."""
  base = norms.get(p.baseline)
  return [n for n in p.on if base is None or layer_measure(base, n) is None]


def _is_step(row: dict) -> bool:
  """A trend row of one step, l - 1 to l (not the whole depth, not a contrast)."""
  return row["claim"] == "trend" and row["from"] == row["layer"] - 1


def trend_summary(rows: list[dict]) -> str:
  """What the trend rows of one measure say together: "supported at every step (6 of 6)",
  or where it is supported, opposite (refuted at that step), undecided, ..., e.g.
  "supported at 3→4; opposite at 0→1; undecided at 1→2, 2→3"; then the whole depth's
  verdict word, e.g. "; from layer 0 to 6: supported"."""
  steps = [r for r in rows if _is_step(r)]
  where: dict[str, list[str]] = {}
  for r in steps:
    where.setdefault(r["comparison"].verdict, []).append(f"{r['from']}→{r['layer']}")
  order = {word: i for i, word in enumerate(("supported", "opposite", "undecided", "tie"))}
  words = sorted(where, key=lambda word: order.get(word, len(order)))
  if words == ["supported"]:
    text = f"supported at every step ({len(steps)} of {len(steps)})"
  else:
    text = "; ".join(f"{word} at {', '.join(where[word])}" for word in words)
  for r in rows:
    if r["claim"] == "trend" and not _is_step(r):
      text += f"; from layer {r['from']} to {r['layer']}: {r['comparison'].verdict}"
  return text


def _relation_text(p: predictions.DepthPrediction) -> str:
  subjects = ", ".join(label(s) for s in p.subjects)
  base = label(p.baseline)
  return (
    f"{base}'s value at layer l + 1 {p.trend} than at layer l, at every step; "
    f"{subjects} {p.relation} than {base} at every block's output"
  )


def verdict_lines(p: predictions.DepthPrediction, norms: dict[str, NormResult]) -> list[str]:
  """measures.md's verdicts on `p`: per measure a table of layer x claim (the baseline's
  step into the layer, each subject against the baseline at it), the whole depth, and a
  line that says at which steps the trend holds."""
  seeds = max(len(r.seeds) for r in norms.values())
  lines = [f"**{p.text}** ({_relation_text(p)}; {seeds} seed(s))", ""]
  rows = judge_depth(p, norms)
  base = label(p.baseline)
  for name in dict.fromkeys(r["measure"] for r in rows):
    of = [r for r in rows if r["measure"] == name]
    trend = {r["layer"]: r for r in of if _is_step(r)}
    subjects = list(dict.fromkeys(r["norm"] for r in of if r["claim"] == "contrast"))
    contrast = {(r["norm"], r["layer"]): r for r in of if r["claim"] == "contrast"}
    columns = [f"{base}: layer l against l − 1"]
    columns += [f"{label(s)} vs {base} at layer l" for s in subjects]
    lines += [
      f"- {measures.label(name)}, {base} {p.trend} at each next layer: {trend_summary(of)}.",
      "",
      "| layer l | " + " | ".join(columns) + " |",
      "|---|" + "---|" * len(columns),
    ]
    for layer in sorted({r["layer"] for r in of}):
      cells = [trend[layer]["verdict"] if layer in trend else ""]
      cells += [contrast[(s, layer)]["verdict"] if (s, layer) in contrast else "" for s in subjects]
      lines.append(f"| {layer} | " + " | ".join(cells) + " |")
    for r in (r for r in of if r["claim"] == "trend" and not _is_step(r)):
      cells = [r["verdict"]] + [""] * len(subjects)
      lines.append(f"| whole depth, {r['layer']} against 0 | " + " | ".join(cells) + " |")
    lines.append("")
  missing = not_measured(p, norms)
  if missing:
    names = ", ".join(measures.label(n) for n in missing)
    lines += [f"- Not measured at every layer: {names} (the isotropy family measures them)", ""]
  return lines


def section(result: ExperimentResult) -> list[str]:
  """measures.md's lines on depth: each shown isotropy measure's table of layer x
  normalization, the per-block Hessian's (when measured), then the verdicts on the
  spec's `DepthPrediction`s; one line saying there is no data for a run without any."""
  norms = layered(result)
  if not norms:
    return [NO_LAYER_DATA, ""]
  depth = max(num_blocks(r) for r in norms.values())
  lines = [
    "## Layer by layer",
    "",
    f"{depth} block(s). Layer 0 is the embedding output, layer l the output of block l "
    "(pre-norm: the residual stream, before the final norm); cells: the mean over seeds "
    "± the half-width of its 95% CI (one seed: no interval). Figures: layers.png (the "
    "spectra at the first, middle and last block) and, with the isotropy family, "
    "isotropy_depth.png.",
    "",
  ]
  shown = isotropy_shown(norms)
  for m in shown:
    lines += [f"### {m.label}" + (f" ({m.unit})" if m.unit else ""), ""]
    lines += _table(norms, m.name, layer_rows(depth))
  for name, m in blocks_shown(norms):
    lines += [f"### {m.label} of each block's parameters" + (f" ({m.unit})" if m.unit else "")]
    lines += [
      "",
      "The diagonal block of the Hessian for one block's parameters, the rest fixed; "
      "not judged across normalizations (Dinh et al. 2017).",
      "",
    ]
    lines += _table(norms, name, block_rows(depth), axis="block")
  if not shown:
    lines += ["No isotropy measure at every layer (the isotropy family did not run).", ""]
  depth_predictions = predictions.by_layer(result.spec.predictions)
  if depth_predictions:
    lines += ["### The paper's predictions, layer by layer", ""]
    for p in depth_predictions:
      lines += verdict_lines(p, norms)
    lines += [
      "Paired by seed, as above; the comparisons of one claim (the trend: every step and "
      "measure; the contrast: every model, layer and measure) are Holm-corrected together. "
      "'opposite' at a step refutes the trend at that step; 'undecided': these seeds "
      "cannot tell.",
      "",
    ]
  return lines
