"""Two saved runs of the same models and seeds, measure by measure: the mean of each and
their largest relative difference over seeds, as a markdown table on standard output.

    python experiments/exp2.py --out runs/f32
    python experiments/exp2.py --out runs/f64 --analysis-dtype float64
    python experiments/compare_runs.py runs/f32 runs/f64 --labels float32,float64

Exit status 0; 2 with one line on standard error for a folder that holds no readable run,
runs with no normalization in common or runs of different seeds; 3 with one line for any
other failure. The report lists what only one of the runs has (normalizations, measures).
"""

import argparse
import sys

if __name__ == "__main__":  # first: stops and errors while importing end quietly
  import _quiet  # noqa: F401

from jaxnorm import report, results, runfolder  # noqa: E402

EXIT_USAGE = 2  # the input cannot be compared: one line on standard error
EXIT_FAILED = 3  # anything else went wrong: one line on standard error
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, no usage dump, no traceback
    self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def main(argv) -> int:
  parser = _Parser(prog="compare_runs.py", description=__doc__.split("\n\n")[0])
  parser.add_argument("run_a", help="a run folder (exp2.py --out)")
  parser.add_argument("run_b", help="another run folder of the same models and seeds")
  parser.add_argument("--labels", default="A,B", metavar="A,B", help="the two columns' names")
  args = parser.parse_args(argv)
  labels = args.labels.split(",")
  if len(labels) != 2 or not all(labels):
    parser.error(f"--labels needs two names separated by a comma, got {args.labels!r}")
  try:
    try:
      a, b = results.load(args.run_a), results.load(args.run_b)
    except (results.ResultsError, runfolder.RunFolderError) as e:
      parser.error(str(e))
    try:
      text = report.comparison(a, b, *labels)
    except ValueError as e:
      parser.error(str(e))
  except KeyboardInterrupt:
    print(f"{parser.prog}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED
  except Exception as e:  # a bug or an unforeseen input: still one line, never a traceback
    print(f"{parser.prog}: failed: {type(e).__name__}: {' '.join(str(e).split())}", file=sys.stderr)
    return EXIT_FAILED
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main(sys.argv[1:]))
