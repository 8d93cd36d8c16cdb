"""What a run prints and writes as text: the terminal table, `measures.md` with the
verdict on each of the paper's predictions, sweep.md and the comparison of two runs. Pure
functions of a `result.ExperimentResult` (or `SweepResult`) that format; the numbers and
verdicts are `stats`'.

A prediction compares normalizations on named measures. Each comparison is judged on the
per-seed values, paired by seed (`stats.judge`): a paired t-test for "lower" / "higher"
with Holm's correction over the prediction's comparisons, an equivalence test on the ratio
for "similar"; one seed gives an untested reading. Every verdict says how many seeds it rests
on. Measures the table calls not comparable across normalizations (the Hessian's λ_max and
trace, which reparametrizations change: Dinh et al. 2017) are listed but not judged, and
verdicts are listed by kind of measure, never tallied into votes: the measures of one kind
are correlated.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from jaxnorm import analysis, layer_report, measures, predictions, stats
from jaxnorm import families as families_lib
from jaxnorm.norms import label
from jaxnorm.predictions import Prediction
from jaxnorm.result import ExperimentResult, SweepResult
from jaxnorm.stats import cell


def _value(stats_norm: dict, name: str) -> tuple[float | None, float | None, float | None]:
  """(mean, ci low, ci high) of a measure from `stats.stats`; the CI is None for one
  seed, everything is None for a measure that was not taken."""
  v = stats_norm.get(name)
  if v is None:
    return None, None, None
  return v["mean"], v["ci95"][0], v["ci95"][1]


def markdown(result: ExperimentResult) -> str:
  """measures.md: the table of every shown measure per normalization and the verdicts on
  the spec's predictions of the whole model; the measures and verdicts layer by layer
  (`layer_report.section`); then the table and verdicts at each matched training loss."""
  seeds = result.spec.num_seeds
  lines = [
    f"# Measures: {result.spec.name}",
    "",
    f"{seeds} seed(s); cells are the value"
    + (" (mean ± 95% CI half-width over seeds)" if seeds > 1 else " (one seed: no interval)")
    + "; MC se: the Monte Carlo standard error of an estimator.",
    "",
    measured_line(result.spec.measures),
    "",
  ]
  if "data" in result.environment:  # a text data set: where it and its tokenizer came from
    lines += [f"Data: {result.environment['data']}.", ""]
  rates = {norm: f"{r.learning_rate:g}" for norm, r in result.norms.items()}
  by_norm = {norm: stats.stats(r) for norm, r in result.norms.items()}
  ran = () if result.spec.measures is None else result.spec.measures.families
  predicted = predictions.whole_model(result.spec.predictions)
  lines += _table_and_verdicts(by_norm, {"learning rate": rates}, predicted, seeds, ran)
  lines += layer_report.section(result)
  for i, level in enumerate(result.spec.matched_losses):
    at = {norm: r.matched[i] for norm, r in result.norms.items()}
    reached = {
      norm: ", ".join(str(int(x)) if x >= 0 else "never" for x in m.step) for norm, m in at.items()
    }
    lines += [
      f"## At matched training loss {level:g}",
      "",
      "Each model where its mean training loss over a chunk first fell to "
      f"{level:g} (the state at the end of that chunk); a seed that never got there "
      "contributes no value.",
      "",
    ]
    extra = {"learning rate": rates, "steps trained (per seed)": reached}
    matched_stats = {norm: stats.stats(m) for norm, m in at.items()}
    lines += _table_and_verdicts(matched_stats, extra, predicted, seeds, ran)
  lines.append(
    "How verdicts are reached: per-seed values paired by seed (every normalization trains "
    "from the same seeds); lower/higher: paired t-test, p-values Holm-corrected within a "
    f"prediction, 'supported' / 'opposite' at p < {stats.ALPHA}, else 'undecided'; "
    f"similar: equivalence within a factor {stats.SIMILAR_RATIO} (two one-sided tests), "
    "'different' when the interval lies outside it; "
    "one seed: an untested reading. Hessian λ_max and trace are not judged: reparametrizations "
    "that leave the function unchanged change them (Dinh et al. 2017). Adaptive sharpness and "
    "the filter-normalized slice are invariant to rescaling the weights that feed LayerNorm, "
    "not for BatchNorm measured in evaluation mode (frozen statistics make it a fixed affine "
    "map). 'MC se': the Monte Carlo standard error of an estimate (mean over seeds). "
    "'not converged': the Lanczos residual of λ_max stayed above its tolerance "
    "(MeasureConfig.lanczos_tol, relative to the largest |Ritz value|) after every restart; "
    "such a value is a lower bound that may belong to another eigenvalue of a cluster, and "
    "its seed gives no value to a verdict."
  )
  return "\n".join(lines) + "\n"


KIND_TITLES = {"fit": "Fit", "flatness": "Flatness", "isotropy": "Isotropy"}


def _table_and_verdicts(
  by_norm: dict[str, dict],
  extra_rows: dict[str, dict[str, str]],
  predictions,
  seeds: int,
  ran: tuple[str, ...] = (),
) -> list[str]:
  """The measures table (after `extra_rows`: label -> norm -> text) and, per prediction,
  the verdicts listed by kind of measure; measures absent from `by_norm` are left out, and
  a prediction's measures from families not in `ran` are named as not measured."""
  lines = [
    "| measure | " + " | ".join(label(n) for n in by_norm) + " |",
    "|---|" + "---|" * len(by_norm),
  ]
  for row_label, texts in extra_rows.items():
    lines.append(f"| {row_label} | " + " | ".join(texts[n] for n in by_norm) + " |")
  present = set().union(*(set(s) for s in by_norm.values()))
  for m in measures.MEASURES:
    if m.shown and m.name in present:
      cells = (
        cell(*_value(by_norm[n], m.name))
        + _mc_se(by_norm[n], m.name)
        + unconverged_mark(by_norm[n], m.name)
        for n in by_norm
      )
      lines.append(f"| {m.label} | " + " | ".join(cells) + " |")
  lines.append("")
  if predictions:
    lines += ["### The paper's predictions", ""]
  for p in predictions:
    rows = [r for r in stats.judge(p, by_norm) if r["measure"] in present]
    missing = [
      name
      for name in p.on
      if name not in present and families_lib.family_of(name) and _judged(name)
    ]
    if not rows and not missing:
      continue
    lines += [f"**{p.text}** ({_relation_text(p)}; {seeds} seed(s))", ""]
    for kind, title in KIND_TITLES.items():
      kind_rows = [r for r in rows if measures.BY_NAME[r["measure"]].kind == kind]
      if not kind_rows:
        continue
      lines.append(f"- {title}:")
      for r in kind_rows:
        lines.append(
          f"  - {label(r['subject'])} vs {label(p.baseline)}, {measures.label(r['measure'])}:"
          f" {r['verdict']}"
        )
    if missing:
      order = families_lib.FAMILIES.index
      lacking = sorted({families_lib.family_of(n) for n in missing}, key=order)
      names = ", ".join(lacking[:-1]) + (" and " if len(lacking) > 1 else "") + lacking[-1]
      option = _measures_option({*ran, *lacking})
      lines.append(
        f"- Not measured: {len(missing)} of its measures, from the {names} "
        f"famil{'ies' if len(lacking) > 1 else 'y'} (`--measures {option}` measures them)"
      )
    lines.append("")
  return lines


def _judged(name: str) -> bool:
  return name not in measures.BY_NAME or measures.BY_NAME[name].comparable


def _measures_option(families) -> str:
  """`--measures`' value for `families` (any order): its level if one has exactly these,
  else the list."""
  chosen = tuple(f for f in families_lib.FAMILIES if f in families)
  level = next((n for n, held in families_lib.LEVELS.items() if held == chosen), None)
  return level or ",".join(chosen)


def measured_line(measure_config: families_lib.MeasureConfig | None) -> str:
  """What the run measured beyond the reference's slice and spectrum, and how to measure
  the rest, e.g. "Measured: isotropy, slices, sharpness (`--measures standard`); not
  measured: hessian, batch_stats (`--measures all`; docs/measures.md)"."""
  families = () if measure_config is None else measure_config.families
  given = _measures_option(families) if families else "none"
  rest = [f for f in families_lib.FAMILIES if f not in families]
  what = ", ".join(families) or "the reference's slice and spectrum only"
  text = f"Measured: {what} (`--measures {given}`)"
  if rest:
    text += f"; not measured: {', '.join(rest)} (`--measures all`; docs/measures.md)"
  return text + "."


def unconverged_mark(stats_norm: dict, name: str) -> str:
  """ " **not converged** (...)" after the value of an estimate that did not converge on
  some seed (`not_converged`): on how many seeds, and its largest relative residual; ""
  when every seed converged (or nothing says). `stats_norm`: measure -> `stats.across_seeds`
  of one model (one rate of a sweep, one matched-loss level), as every table has them."""
  bad = stats.not_converged(stats_norm, name)
  if not bad:
    return ""
  total = len(stats_norm[name]["values"])
  notes = [] if total == 1 else [f"{len(bad)} of {total} seeds"]
  residual = stats_norm.get(measures.CONVERGENCE[name][1])
  worst = [residual["values"][i] for i in bad] if residual else []
  worst = [r for r in worst if r is not None]
  if worst:
    notes.append(f"relative residual {'up to ' if len(worst) > 1 else ''}{max(worst):.2g}")
  return " **not converged**" + (f" ({', '.join(notes)})" if notes else "")


def not_converged_lines(stats_by_norm: dict[str, dict]) -> list[str]:
  """One line per normalization and estimate that did not converge on some seed, e.g.
  "BatchNorm, Hessian λ_max: not converged (relative residual 0.056)"; one per
  convergence flag (λ_max, not again λ_max / loss). `stats_by_norm`: norm -> `stats.stats`."""
  lines, flags = [], set()
  for name, (flag, _) in measures.CONVERGENCE.items():
    if flag in flags:
      continue
    flags.add(flag)
    for norm, stats_norm in stats_by_norm.items():
      if name in stats_norm and (mark := unconverged_mark(stats_norm, name)):
        lines.append(f"{label(norm)}, {measures.label(name)}:{mark.replace('**', '')}")
  return lines


def _mc_se(stats_norm: dict, name: str) -> str:
  """ " (MC se x)" for a Monte Carlo estimate whose standard error was measured, " (sd over
  directions x)" for a slice rise averaged over random directions (means over seeds)."""
  out = ""
  for suffix, text in (("_stderr", "MC se"), ("_std", "sd over directions")):
    spread = stats_norm.get(f"{name}{suffix}")
    if spread is not None and spread["mean"] is not None:
      out += f" ({text} {spread['mean']:.2g})"
  return out


def _relation_text(p: Prediction) -> str:
  return {
    "lower": f"lower than {label(p.baseline)}",
    "higher": f"higher than {label(p.baseline)}",
    "similar": f"within a factor {stats.SIMILAR_RATIO} of {label(p.baseline)}",
  }[p.relation]


TABLE_COLUMNS = ("final_loss", "landscape_max_rise", "spectrum_top_bottom_ratio")
# On a text data set the accuracies replace the slice's rise.
TEXT_TABLE_COLUMNS = ("final_loss", "train_accuracy", "test_accuracy", "spectrum_top_bottom_ratio")


def terminal_table(result: ExperimentResult) -> str:
  """Per normalization: learning rate, final loss, slice rise (on a text data set: the
  last epoch's training accuracy and the test accuracy), spectrum ratio, training time.
  With several seeds each cell is the mean ± the half-width of its 95% confidence
  interval. Under the table, one line per estimate that did not converge
  (`not_converged_lines`), also at a matched training loss."""
  headers = {
    "final_loss": "final loss",
    "landscape_max_rise": "landscape rise",
    "train_accuracy": "train acc.",
    "test_accuracy": "test acc.",
  }
  columns = TABLE_COLUMNS if result.spec.config.text is None else TEXT_TABLE_COLUMNS
  width = 22 if result.spec.num_seeds > 1 else 15
  header = f"{'normalization':<16}{'lr':>8}" + "".join(
    f"{headers.get(name, measures.label(name)):>{width}}" for name in columns
  )
  header += f"{'train s':>10}"
  rows = [header, "-" * len(header)]
  all_stats = {norm: stats.stats(r) for norm, r in result.norms.items()}
  for norm, r in result.norms.items():
    of_norm = all_stats[norm]
    cells = "".join(f"{cell(*_value(of_norm, name), empty='nan'):>{width}}" for name in columns)
    rows.append(f"{label(norm):<16}{r.learning_rate:>8.2g}{cells}{r.seconds['train']:>10.1f}")
  unconverged = not_converged_lines(all_stats)
  for i, level in enumerate(result.spec.matched_losses):
    at = {norm: stats.stats(r.matched[i]) for norm, r in result.norms.items()}
    unconverged += [f"{line} (at matched loss {level:g})" for line in not_converged_lines(at)]
  if unconverged:
    rows += ["", "Estimates that did not converge (marked in measures.md, left out of verdicts):"]
    rows += [f"  {line}" for line in unconverged]
  return "\n".join(rows)


def comparison(a: ExperimentResult, b: ExperimentResult, label_a: str, label_b: str) -> str:
  """Markdown: every measure of two runs of the same models and seeds side by side, with
  the largest relative difference over seeds, max_s |b_s - a_s| / max(|a_s|, |b_s|).

  Meant for runs that should agree (two analysis precisions, two backends): it shows which
  numbers the difference reaches, over the seeds where both values are finite; the seeds
  where only one is (a model diverged in one run) are named. Only what both runs have is
  compared; the normalizations (and per normalization the measures) that only one run has
  are listed as left out. Raises ValueError for two equal labels, runs with no
  normalization in common or runs of different seeds. An estimate that did not converge on
  some seed is marked (`unconverged_mark`).
  """
  if label_a == label_b:
    raise ValueError(f"the two runs need different labels, got {label_a!r} twice")
  common = [n for n in a.norms if n in b.norms]
  if not common:
    raise ValueError(
      f"the runs have no normalization in common ({label_a}: {_labels(a.norms)}; "
      f"{label_b}: {_labels(b.norms)})"
    )
  lines = [f"# {label_a} vs {label_b}", ""]
  lines += _left_out("Normalizations", a.norms, b.norms, label_a, label_b, label)
  for norm in common:
    ra, rb = a.norms[norm], b.norms[norm]
    if not np.array_equal(ra.seeds, rb.seeds):
      raise ValueError(f"{norm}: seeds {ra.seeds.tolist()} and {rb.seeds.tolist()} differ")
    va, vb = analysis.per_seed(ra), analysis.per_seed(rb)
    sa, sb = stats.stats(ra), stats.stats(rb)
    lines += [
      f"## {label(norm)} ({len(ra.seeds)} seed{'s' if len(ra.seeds) > 1 else ''})",
      "",
      *_left_out("Measures", va, vb, label_a, label_b, str),
      f"| measure | {label_a} | {label_b} | max relative difference |",
      "| --- | --- | --- | --- |",
    ]
    for name in (n for n in va if n in vb):
      x, y = va[name], vb[name]
      both = np.isfinite(x) & np.isfinite(y)
      scale = np.maximum(np.abs(x), np.abs(y))
      with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(scale > 0, np.abs(y - x) / scale, 0.0)
      worst = f"{np.max(rel[both]):.2g}" if both.any() else "n/a"
      one = np.isfinite(x) != np.isfinite(y)  # e.g. a seed that diverged in one run only
      if one.any():
        worst += f" (seeds {ra.seeds[one].tolist()}: finite in one run only)"
      mark_a, mark_b = (unconverged_mark(st, name) if name in st else "" for st in (sa, sb))
      lines.append(f"| {name} | {_mean(x)}{mark_a} | {_mean(y)}{mark_b} | {worst} |")
    lines.append("")
  return "\n".join(lines)


def _mean(x: np.ndarray) -> str:
  """The mean over the seeds whose value is finite (not a diverged seed's); n/a if none."""
  finite = x[np.isfinite(x)]
  return f"{np.mean(finite):.6g}" if finite.size else "n/a"


def _labels(names) -> str:
  return ", ".join(label(n) for n in names) or "none"


def _left_out(what: str, a, b, label_a: str, label_b: str, name_of) -> list[str]:
  """A line naming the keys of `a` and of `b` that the other lacks (shown by `name_of`),
  then a blank line; nothing when both have the same keys."""
  only = [(lab, [k for k in x if k not in y]) for lab, x, y in ((label_a, a, b), (label_b, b, a))]
  parts = [f"{lab}: {', '.join(name_of(k) for k in keys)}" for lab, keys in only if keys]
  if not parts:
    return []
  return [f"{what} in one run only, left out: " + "; ".join(parts) + ".", ""]


def sweep_markdown(sweep: SweepResult, names: Sequence[str] | None = None) -> str:
  """sweep.md: the seeds that diverged, then per measure (those of `names`, default every
  shown one) a table of normalizations x rates (mean ± 95% CI half-width with several
  seeds; an estimate that did not converge on some seed marked, `unconverged_mark`)."""
  by_rate, seeds = stats.by_rate(sweep), sweep.runs[0].spec.num_seeds
  head = "| | " + " | ".join(f"lr {r:g}" for r in sweep.rates) + " |"
  rule = "|---|" + "---|" * len(sweep.rates)
  lines = [
    f"# Learning-rate sweep: {sweep.runs[0].spec.name}",
    "",
    f"Every model at each rate; {seeds} seed(s) per cell"
    + (", mean ± 95% CI half-width" if seeds > 1 else "")
    + ". A diverged seed contributes no value (n says how many did).",
    "",
    measured_line(sweep.runs[0].spec.measures),
    "",
    "## Diverged seeds",
    "",
    head,
    rule,
  ]
  for norm, counts in stats.diverged_by_rate(sweep).items():
    lines.append(f"| {label(norm)} | " + " | ".join(f"{c}/{seeds}" for c in counts) + " |")
  for m in measures.shown(next(iter(by_rate.values()))):
    if names is not None and m.name not in names:
      continue
    lines += ["", f"## {m.label}" + (f" ({m.unit})" if m.unit else ""), "", head, rule]
    for norm, by_name in by_rate.items():
      cells = []
      for i, s in enumerate(by_name[m.name]):
        low, high = s["ci95"]
        text = cell(s["mean"], low, high) + (f" (n={s['n']})" if seeds > 1 else "")
        at_rate = {name: values[i] for name, values in by_name.items()}
        cells.append(text + unconverged_mark(at_rate, m.name))
      lines.append(f"| {label(norm)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"
