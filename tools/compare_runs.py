"""Two saved runs of the same models and seeds, measure by measure: the mean of each and
their largest relative difference over seeds, as a markdown table on standard output.

    python experiments/exp2.py --out runs/f32
    python experiments/exp2.py --out runs/f64 --analysis-dtype float64
    python tools/compare_runs.py runs/f32 runs/f64 --labels float32,float64

Exit status 0; 2 with one line on standard error for a folder that holds no readable run,
runs with no normalization in common or runs of different seeds; 3 with one line for any
other failure. The report lists what only one of the runs has (normalizations, measures).
"""

import sys

if __name__ == "__main__":  # first: stops and errors while importing end quietly
  import jaxnorm.quiet  # noqa: F401

from jaxnorm import exits, options, report, results, runfolder  # noqa: E402


def main(argv) -> int:
  parser = options.Parser(prog="compare_runs.py", description=__doc__.split("\n\n")[0])
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


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
