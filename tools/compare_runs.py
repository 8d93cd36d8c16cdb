"""Two saved runs of the same models and seeds, measure by measure: the same as
`jaxnorm compare` (its code and manual: jaxnorm/compare_runs.py).

    python tools/compare_runs.py runs/f32 runs/f64 --labels float32,float64
"""

import sys

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import compare_runs

  sys.exit(compare_runs.main(sys.argv[1:]))
