"""Learning-rate sweep: every normalization of Experiment 2 trained at each rate of a grid,
over several seeds, and each measure (fit, flatness, isotropy) reported against the rate.

The reference trains No Norm at 5e-4 and the normalized models at 1e-4, and the paper's
flatness comparison changes with that choice; here every model trains at every rate.

    python experiments/lr_sweep.py --quick --seeds 2                  # a smoke run
    python experiments/lr_sweep.py --seeds 8 --rates 1e-4,2e-4,5e-4   # the reference sizes
    python experiments/lr_sweep.py --replot runs/lr_sweep

Writes runs/lr_sweep/{sweep.md, sweep.json, sweep.png, run.json} and one ordinary run
folder per rate, lr_<rate>/ (figure2, results.npz, summary.json, measures.md, ...), as one
whole run (docs/cli.md: "Run folders and exit statuses"). A model that diverges at a rate is
counted in sweep.md, and the exit status stays 0.
"""

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.LR_SWEEP, __doc__)
