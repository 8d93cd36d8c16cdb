"""The verdict tables of docs/findings.md, from its two run folders: each prediction of
Experiment 2 judged on every measure at the end of training and at each matched loss, and
BatchNorm measured with batch statistics, as a family of its own, against No Norm (lower)
and LayerNorm (similar). Markdown on standard output.

    jaxnorm findings-tables runs/findings_paper runs/findings_equal_lr
    python tools/findings_tables.py runs/findings_paper runs/findings_equal_lr   # the same

Each run's columns are named by its folder; folders of the same name by the shortest end
of their paths that tells them apart (runs/a/x and runs/b/x: a/x and b/x). Exit status 0;
2 with one line on standard error for a folder given twice, a folder that holds no
readable run or runs on which no prediction can be judged; 3 with one line for any other
failure.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path, PurePath

from jaxnorm import exits, options, predictions, results, runfolder, stats
from jaxnorm.norms import label

BATCH_STATS_LOWER = predictions.BATCH_STATS_LOWER
BATCH_STATS_SIMILAR = predictions.BATCH_STATS_SIMILAR


def _states(result):
  """(name, normalization -> stats.stats) at the end and at each matched loss."""
  yield "end", {n: stats.stats(r) for n, r in result.norms.items()}
  for i, level in enumerate(result.spec.matched_losses):
    yield f"loss {level:g}", {n: stats.stats(r.matched[i]) for n, r in result.norms.items()}


def _batch_stats_rows(by_norm):
  """BatchNorm with batch statistics vs No Norm (lower, Holm within the family) and vs
  LayerNorm (similar): (row label, verdict text) pairs."""
  names = [f"{n}_batch_stats" for n in BATCH_STATS_LOWER]
  lower = [
    stats.directional(by_norm["batchnorm"][n]["values"], by_norm["none"][n]["values"], "lower")
    for n in names
  ]
  for name, c in zip(names, stats.corrected(lower, "lower"), strict=True):
    yield f"BatchNorm (batch statistics) lower than No Norm: {name}", c
  if "layernorm" not in by_norm:
    return
  for name in (f"{n}_batch_stats" for n in BATCH_STATS_SIMILAR):
    c = stats.similar(by_norm["batchnorm"][name]["values"], by_norm["layernorm"][name]["values"])
    yield f"BatchNorm (batch statistics) similar to LayerNorm: {name}", c


def _cell(c: stats.Comparison) -> str:
  if c.p is None:
    return c.verdict
  return f"{c.verdict} (estimate {c.estimate:.3g}, p = {c.p:.2g})"


def column_names(folders: Sequence[str]) -> list[str]:
  """Each folder's name (of its absolute path: "." is the current folder's); where names
  repeat, the shortest end of each path that no other path ends with: runs/a/x and
  runs/b/x give a/x and b/x. Raises ValueError for a folder given twice."""
  parts = [Path(f).resolve().parts for f in folders]
  for i, p in enumerate(parts):
    if p in parts[:i]:
      raise ValueError(f"{folders[i]} is given twice (as {folders[parts.index(p)]})")
  names = []
  for i, p in enumerate(parts):
    others = [q for j, q in enumerate(parts) if j != i]
    k = next(k for k in range(1, len(p) + 1) if all(q[-k:] != p[-k:] for q in others))
    names.append(PurePath(*p[-k:]).as_posix())
  return names


def _rows(loaded: dict, predictions) -> tuple[list[str], dict[str, dict[str, str]]]:
  """The columns ("<state>, <run>", each state of every run of `loaded`, also one without
  verdicts) and row label -> column -> verdict."""
  columns, rows = [], {}
  for run, result in loaded.items():
    for state, by_norm in _states(result):
      column = f"{state}, {run}"
      columns.append(column)
      for p in predictions:
        for row in stats.judge(p, by_norm):
          if row["comparison"] is None:
            continue
          name = f"{label(row['subject'])} {p.relation} {label(p.baseline)}: "
          rows.setdefault(name + row["measure"], {})[column] = _cell(row["comparison"])
      if all(
        n in by_norm and f"{BATCH_STATS_LOWER[0]}_batch_stats" in by_norm[n]
        for n in ("batchnorm", "none")
      ):
        for name, c in _batch_stats_rows(by_norm):
          rows.setdefault(name, {})[column] = _cell(c)
  return columns, rows


def main(argv: Sequence[str] | None = None, prog: str = "findings_tables.py") -> int:
  """The tables of the runs `argv` names (None: the process's arguments) under the
  program name `prog`; the exit status."""
  parser = options.Parser(prog=prog, description=__doc__.split("\n\n")[0])
  parser.add_argument("runs", nargs="+", help="run folders (exp2.py --matched-loss ...)")
  args = parser.parse_args(argv)

  def body() -> int:
    try:
      names = column_names(args.runs)
    except ValueError as e:
      parser.error(str(e))
    try:
      loaded = {name: results.load(path) for name, path in zip(names, args.runs, strict=True)}
    except (results.ResultsError, runfolder.RunFolderError) as e:
      parser.error(str(e))
    columns, rows = _rows(loaded, predictions.EXP2.predictions)
    if not rows:
      held = sorted({n for result in loaded.values() for n in result.norms})
      parser.error(
        "no prediction of exp2.py can be judged on these runs (they hold "
        f"{', '.join(map(label, held))}; a verdict needs two of the normalizations "
        "it compares, with measures)"
      )
    print("| comparison | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for name, row in rows.items():
      print(f"| {name} | " + " | ".join(row.get(c, "n/a") for c in columns) + " |")
    return 0

  return exits.run_tool(parser.prog, body)
