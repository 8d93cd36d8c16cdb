"""Experiment 2: LayerNorm vs BatchNorm vs no normalization (Figure 2 of "Stability and
Expression: The Dual-Mechanism of Normalization in Deep Learning").

Trains the one-block post-norm Transformer on low-rank associative recall with each
normalization, then draws the training loss, a 1D loss-landscape slice along a random
direction and the singular-value spectrum of the block's activations, and measures
flatness (Hessian, adaptive sharpness, filter-normalized slice) and isotropy (effective
rank and kin).

    python experiments/exp2.py                 # the reference configuration, 3 x 4000 steps
    python experiments/exp2.py --quick         # a smoke run
    python experiments/exp2.py --seeds 8       # 8 seeds at once, mean ± CI
    python experiments/exp2.py --replot runs/exp2

Writes runs/exp2/{figure2.png, figure2.pdf, results.npz, summary.json, measures.md,
variables_*.msgpack, run.json}, as one whole run (README: "Run folders and exit statuses").
Runtime and the measured figure: README.md.
"""

import sys

if __name__ == "__main__":  # first: stops and errors while importing end quietly
  import _quiet  # noqa: F401

from jaxnorm import cli, report  # noqa: E402
from jaxnorm.config import PAPER  # noqa: E402

PREDICTIONS = [
  report.flatter(
    ("layernorm", "batchnorm"),
    "none",
    "LayerNorm and BatchNorm converge to flatter minima than No Norm",
  ),
  report.more_isotropic(
    ("layernorm", "batchnorm"),
    "none",
    "LayerNorm and BatchNorm keep more isotropic representations than No Norm",
  ),
  report.Prediction(
    "LayerNorm and BatchNorm behave nearly identically",
    ("batchnorm",),
    "layernorm",
    "similar",
    ("final_loss", *report.LOWER_IS_FLATTER, *report.HIGHER_IS_ISOTROPIC),
  ),
]

if __name__ == "__main__":
  cli.exit_process(
    cli.main(
      sys.argv[1:],
      prog="exp2.py",
      description=__doc__.split("\n\n")[0],
      default=PAPER,
      default_out="runs/exp2",
      name="exp2",
      title="Comparative Analysis of Normalization Techniques",
      predictions=PREDICTIONS,
    )
  )
