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
variables_*.msgpack, run.json}, as one whole run (docs/cli.md: "Run folders and exit statuses").
Runtime and the measured figure: README.md.
"""

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.EXP2, __doc__)
