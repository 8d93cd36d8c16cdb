"""Learning-rate sweep: every normalization of Experiment 2 trained at each rate of a grid,
over several seeds, and each measure (fit, flatness, isotropy) reported against the rate.

The reference trains No Norm at 5e-4 and the normalized models at 1e-4, and the paper's
flatness comparison changes with that choice; here every model trains at every rate.

    python experiments/lr_sweep.py --quick --seeds 2                  # a smoke run
    python experiments/lr_sweep.py --seeds 8 --rates 1e-4,2e-4,5e-4   # the reference sizes
    python experiments/lr_sweep.py --replot runs/lr_sweep

Writes runs/lr_sweep/{sweep.md, sweep.json, sweep.png, run.json} and one ordinary run
folder per rate, lr_<rate>/ (figure2, results.npz, summary.json, measures.md, ...), as one
whole run (README: "Run folders and exit statuses"). A model that diverges at a rate is
counted in sweep.md, and the exit status stays 0.
"""

import sys

if __name__ == "__main__":  # first: stops and errors while importing end quietly
  import _quiet  # noqa: F401

from jaxnorm import cli  # noqa: E402
from jaxnorm.config import PAPER  # noqa: E402

if __name__ == "__main__":
  cli.exit_process(
    cli.sweep_main(
      sys.argv[1:],
      prog="lr_sweep.py",
      description=__doc__.split("\n\n")[0],
      default=PAPER,
      default_out="runs/lr_sweep",
      name="lr_sweep",
      rates=(1e-4, 2e-4, 5e-4),
    )
  )
