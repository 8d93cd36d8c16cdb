"""Experiment 3: is the constraint alone enough? LayerNorm, BatchNorm, No Norm and a
parameter-free "Manual L2 Norm" (each token divided by its L2 norm, clamped below at 1e-9),
trained at the default 1e-4 (Figure 3 of "Stability and Expression: The Dual-Mechanism of
Normalization in Deep Learning").

    python experiments/exp3.py            # 4 x 4000 steps
    python experiments/exp3.py --quick    # a smoke run

Writes runs/exp3/{figure2.png, figure2.pdf, results.npz, summary.json, measures.md,
run.json, ...}.
Expected, per the paper: the L2 model trains stably but learns worse than LayerNorm.
"""

import sys

if __name__ == "__main__":  # first: stops and errors while importing end quietly
  import _quiet  # noqa: F401

from jaxnorm import cli, report  # noqa: E402
from jaxnorm.config import EXP3  # noqa: E402

PREDICTIONS = [
  report.flatter(
    ("layernorm", "batchnorm", "l2"),
    "none",
    "Normalized models converge to flatter minima than No Norm",
  ),
  report.more_isotropic(
    ("layernorm", "batchnorm", "l2"),
    "none",
    "Normalized models keep more isotropic representations than No Norm",
  ),
  report.Prediction(
    "The L2 constraint alone learns worse than LayerNorm",
    ("l2",),
    "layernorm",
    "higher",
    ("final_loss",),
  ),
]

if __name__ == "__main__":
  cli.exit_process(
    cli.main(
      sys.argv[1:],
      prog="exp3.py",
      description=__doc__.split("\n\n")[0],
      default=EXP3,
      default_out="runs/exp3",
      name="exp3",
      title="The Constraint Alone: Manual L2 Normalization",
      predictions=PREDICTIONS,
    )
  )
