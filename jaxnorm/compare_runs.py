"""Two saved runs of the same models and seeds, measure by measure: the mean of each and
their largest relative difference over seeds, as a markdown table on standard output.

    python experiments/exp2.py --out runs/f32
    python experiments/exp2.py --out runs/f64 --analysis-dtype float64
    jaxnorm compare runs/f32 runs/f64 --labels float32,float64
    python tools/compare_runs.py runs/f32 runs/f64 --labels float32,float64   # the same

Exit status 0; 2 with one line on standard error for a folder that holds no readable run,
runs with no normalization in common or runs of different seeds; 3 with one line for any
other failure. The report lists what only one of the runs has (normalizations, measures).
"""

from __future__ import annotations

from collections.abc import Sequence

from jaxnorm import exits, options, report, results, runfolder


def main(argv: Sequence[str] | None = None, prog: str = "compare_runs.py") -> int:
  """Compares the runs `argv` names (None: the process's arguments) under the program
  name `prog`; the exit status."""
  parser = options.Parser(prog=prog, description=__doc__.split("\n\n")[0])
  parser.add_argument("run_a", help="a run folder (exp2.py --out)")
  parser.add_argument("run_b", help="another run folder of the same models and seeds")
  parser.add_argument("--labels", default="A,B", metavar="A,B", help="the two columns' names")
  args = parser.parse_args(argv)
  labels = args.labels.split(",")
  if len(labels) != 2 or not all(labels):
    parser.error(f"--labels needs two names separated by a comma, got {args.labels!r}")

  def body() -> int:
    try:
      a, b = results.load(args.run_a), results.load(args.run_b)
    except (results.ResultsError, runfolder.RunFolderError) as e:
      parser.error(str(e))
    try:
      text = report.comparison(a, b, *labels)
    except ValueError as e:
      parser.error(str(e))
    print(text)
    return 0

  return exits.run_tool(parser.prog, body)
