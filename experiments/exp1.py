"""Experiment 1: LayerNorm vs no normalization (Figure 1 of "Stability and Expression: The
Dual-Mechanism of Normalization in Deep Learning").

The same task, model and training as Experiment 2 with two models; the landscape slice has
50 points and, as in that notebook, the weights are restored between points. Its
notebook's exact hyper-parameters are not in this repository: jaxnorm uses Experiment 2's
(including No Norm's learning rate of 5e-4).

    python experiments/exp1.py            # 2 x 4000 steps
    python experiments/exp1.py --quick    # a smoke run

Writes runs/exp1/{figure2.png, figure2.pdf, results.npz, summary.json, measures.md,
run.json, ...}.
Expected, per the paper: LayerNorm's minimum is flatter and its spectrum flatter.
"""

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.EXP1, __doc__)
