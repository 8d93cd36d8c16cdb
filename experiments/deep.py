"""Deep models, layer by layer: the paper's Experiment 4 encoder (6 post-norm blocks, 4 heads,
no positional encoding) with LayerNorm, the parameter-free "Manual L2 Norm" and no
normalization, trained on the synthetic task of Experiment 2, Adam at 2e-4 (the paper's rate
for its deep models), and dissected at every depth: the singular-value spectrum and the
isotropy measures of the embedding output (layer 0) and of each block's output (layers 1-6),
and with `--measures all` the Hessian restricted to each block.

    python experiments/deep.py                # 3 models x 1000 steps, batch 64
    python experiments/deep.py --seeds 4      # the depth prediction needs seeds
    python experiments/deep.py --quick        # a smoke run: 200 steps
    python experiments/deep.py --preset tiny --blocks 3 --norms layernorm,l2,none --steps 20
                                              # tiny: --preset replaces the whole model (1 block)
    python experiments/deep.py --norm-placement pre --blocks 12

Writes runs/deep/{figure2.*, layers.* (spectra at layers 1, 3, 6, the paper's Figure 4
layout), isotropy_depth.* (each isotropy measure against depth), results.npz, summary.json,
measures.md (per-layer tables and the depth verdicts), run.json, ...}.
Runtime: see the README's "Deep models" section (measured on a 2-core CPU).
The paper predicts that without normalization the representations collapse progressively with
depth (a falling effective rank from layer to layer), which LayerNorm and L2 prevent;
`measures.md` judges it per layer, paired by seed.
"""

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.DEEP, __doc__)
