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

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.EXP3, __doc__)
