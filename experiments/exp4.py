"""Experiment 4 of the paper: three 6-block Transformers (LayerNorm, the parameter-free
"Manual L2 Norm", no normalization) trained on the AG News news-topic benchmark and dissected
layer by layer: the singular-value spectra of the block outputs at layers 1, 3 and 6 with
each model's training accuracy (Figure 4), every layer's isotropy, the test split's accuracy
and loss, and the paper's predictions judged per layer.

    pip install -e ".[text]"
    python experiments/exp4.py --data DIR       # AG News's files (parquet or CSV layout)
    python experiments/exp4.py                  # the same from the Hugging Face hub
    python experiments/exp4.py --data DIR --quick   # 2,560 examples, 3 epochs: a CPU run
    python experiments/exp4.py --data DIR --tokenizer vocab.txt --epochs 2 --seeds 4

The reference configuration is the default: distilbert-base-uncased tokens, 128 a text,
padding not masked, 6 post-norm blocks, D = 128, 4 heads, read out at [CLS] into 4 classes,
Adam at 2e-4, batch 256, 15 epochs of 469 steps. --quick trains 3 epochs on 2,560 training
examples drawn at random (the same for every seed) and evaluates on 1,024 test examples.
Writes runs/exp4/{layers.* (Figure 4), isotropy_depth.*, figure2.*, measures.md (per-layer
tables, accuracies and the verdicts), results.npz, summary.json, run.json, ...}.
Runtime and what ran where: docs/exp4.md.
"""

if __name__ == "__main__":
  import jaxnorm.quiet  # noqa: F401  first: stops and errors while importing end quietly
  from jaxnorm import cli, predictions

  cli.run_script(predictions.EXP4, __doc__)
