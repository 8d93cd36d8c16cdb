"""Experiment 2: LayerNorm vs BatchNorm vs no normalization (Figure 2 of "Stability and
Expression: The Dual-Mechanism of Normalization in Deep Learning").

Trains the one-block post-norm Transformer on low-rank associative recall with each
normalization, then draws the training loss, a 1D loss-landscape slice along a random
direction and the singular-value spectrum of the block's activations.

    python experiments/exp2.py              # the reference configuration, 3 x 4000 steps
    python experiments/exp2.py --quick      # a smoke run in well under a minute on 2 cores
    python experiments/exp2.py --replot runs/exp2

Writes runs/exp2/{figure2.png, figure2.pdf, results.npz, summary.json, variables_*.msgpack}.
Expected: all three models drive the training loss close to zero (the task copies the
query token, see README); the normalized models' slices rise less than No Norm's and
their spectra are flatter. Runtime and the measured figure: see README.
"""

import sys

from jaxnorm import cli
from jaxnorm.config import PAPER

if __name__ == "__main__":
  sys.exit(
    cli.main(
      sys.argv[1:],
      prog="exp2.py",
      description=__doc__.split("\n\n")[0],
      default=PAPER,
      default_out="runs/exp2",
      name="exp2",
      title="Comparative Analysis of Normalization Techniques",
    )
  )
