"""The verdict tables of docs/findings.md, from its two run folders: each prediction of
Experiment 2 judged on every measure at the end of training and at each matched loss, and
BatchNorm measured with batch statistics, as a family of its own, against No Norm (lower)
and LayerNorm (similar). Markdown on standard output.

    python experiments/findings_tables.py runs/findings_paper runs/findings_equal_lr
"""

import argparse
import importlib.util
import sys
from pathlib import Path

from jaxnorm import report, results, summary, verdicts

BATCH_STATS_LOWER = ("landscape_rise_directions", "filter_rise_directions", "adaptive_sharpness")
BATCH_STATS_SIMILAR = (*BATCH_STATS_LOWER, "hessian_trace")


def _predictions():
  path = Path(__file__).with_name("exp2.py")
  spec = importlib.util.spec_from_file_location("exp2", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.PREDICTIONS


def _states(result):
  """(name, normalization -> summary.stats) at the end and at each matched loss."""
  yield "end", {n: summary.stats(r) for n, r in result.norms.items()}
  for i, level in enumerate(result.spec.matched_losses):
    yield f"loss {level:g}", {n: summary.stats(r.matched[i]) for n, r in result.norms.items()}


def _batch_stats_rows(stats):
  """BatchNorm with batch statistics vs No Norm (lower, Holm within the family) and vs
  LayerNorm (similar): (row label, verdict text) pairs."""
  names = [f"{n}_batch_stats" for n in BATCH_STATS_LOWER]
  lower = [
    verdicts.directional(stats["batchnorm"][n]["values"], stats["none"][n]["values"], "lower")
    for n in names
  ]
  for name, c in zip(names, verdicts.corrected(lower, "lower"), strict=True):
    yield f"BatchNorm (batch statistics) lower than No Norm: {name}", c
  if "layernorm" not in stats:
    return
  for name in (f"{n}_batch_stats" for n in BATCH_STATS_SIMILAR):
    c = verdicts.similar(stats["batchnorm"][name]["values"], stats["layernorm"][name]["values"])
    yield f"BatchNorm (batch statistics) similar to LayerNorm: {name}", c


def _cell(c: verdicts.Comparison) -> str:
  if c.p is None:
    return c.verdict
  return f"{c.verdict} (estimate {c.estimate:.3g}, p = {c.p:.2g})"


def main(argv) -> int:
  parser = argparse.ArgumentParser(prog="findings_tables.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", nargs="+", help="run folders (exp2.py --matched-loss ...)")
  args = parser.parse_args(argv)
  try:
    loaded = {Path(path).name: results.load(path) for path in args.runs}
  except results.ResultsError as e:
    parser.error(str(e))
  rows: dict[str, dict[str, str]] = {}
  for run, result in loaded.items():
    for state, stats in _states(result):
      column = f"{state}, {run}"
      for p in _predictions():
        for row in report.judge(p, stats):
          if row["comparison"] is None:
            continue
          label = f"{report.label(row['subject'])} {p.relation} {report.label(p.baseline)}: "
          rows.setdefault(label + row["measure"], {})[column] = _cell(row["comparison"])
      if all(f"{BATCH_STATS_LOWER[0]}_batch_stats" in stats[n] for n in ("batchnorm", "none")):
        for label, c in _batch_stats_rows(stats):
          rows.setdefault(label, {})[column] = _cell(c)
  columns = list(dict.fromkeys(c for row in rows.values() for c in row))
  print("| comparison | " + " | ".join(columns) + " |")
  print("|---|" + "---|" * len(columns))
  for label, row in rows.items():
    print(f"| {label} | " + " | ".join(row.get(c, "n/a") for c in columns) + " |")
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
