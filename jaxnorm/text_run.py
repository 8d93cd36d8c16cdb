"""A text data set on the command line (Experiment 4, `experiments/exp4.py`): the options
that choose AG News's files, the tokenizer, the length, the epochs and a subset, and what
they make of a run: its config (`Config.text`, steps = epochs x batches per epoch) and its
token arrays (`data.TextArrays`), loaded before any training starts.

    spec, arrays, source = text_run.prepare(args, spec)   # raises ValueError, one line
    result = pipeline.run(spec, arrays=arrays)
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
from typing import NamedTuple

import numpy as np

from jaxnorm import agnews, data, epochs
from jaxnorm.spec import ExperimentSpec

# The reference trains 15 epochs on every example.
DEFAULT_EPOCHS = 15
# Subsets are drawn in one fixed order (this seed), whatever the run's seed: every seed
# and every model of a run, and runs of different seeds, train on the same examples.
SUBSET_SEED = 0


class Quick(NamedTuple):
  """What --quick trains on: a subset of the examples, fewer epochs."""

  train_examples: int
  test_examples: int
  epochs: int


# 2,560 training examples (10 batches of 256), 3 epochs, 1,024 test examples.
QUICK = Quick(train_examples=2560, test_examples=1024, epochs=3)


def _at_least_one(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def add_options(parser: argparse.ArgumentParser) -> None:
  """The text data set's options, in a group of their own."""
  g = parser.add_argument_group(
    "text data",
    "AG News (docs/exp4_data.md): the dataset's own files, or the Hugging Face hub through "
    "the `datasets` library (pip install -e '.[text]'); tokenized once, then read from a cache",
  )
  g.add_argument(
    "--data",
    metavar="DIR",
    help="a folder with AG News's files (its parquet or CSV layout); default: the hub's "
    "fancyzhx/ag_news through `datasets` (its cache, or a download)",
  )
  g.add_argument(
    "--tokenizer",
    metavar="PATH",
    help="a tokenizer.json or vocab.txt (or a folder with one); default: the hub's "
    "distilbert-base-uncased",
  )
  g.add_argument(
    "--max-length",
    type=_at_least_one,
    default=argparse.SUPPRESS,
    help="tokens per example (default: 128)",
  )
  g.add_argument(
    "--epochs",
    type=_at_least_one,
    default=argparse.SUPPRESS,
    help=f"passes over the training examples (default: {DEFAULT_EPOCHS}; --quick: {QUICK.epochs})",
  )
  g.add_argument(
    "--train-examples",
    type=_at_least_one,
    default=argparse.SUPPRESS,
    metavar="N",
    help=f"train on N examples drawn at random, the same for every seed (default: all; "
    f"--quick: {QUICK.train_examples})",
  )
  g.add_argument(
    "--test-examples",
    type=_at_least_one,
    default=argparse.SUPPRESS,
    metavar="N",
    help=f"evaluate on N test examples drawn alike (default: all; --quick: {QUICK.test_examples})",
  )


def subset(split: agnews.TextSplit, count: int | None, what: str) -> agnews.TextSplit:
  """The first `count` examples of the split in the fixed order `SUBSET_SEED` draws, kept
  in their original order; the whole split for None. ValueError if it has fewer."""
  total = len(split.labels_N)
  if count is None or count == total:
    return split
  if count > total:
    raise ValueError(f"--{what}-examples {count}: the data has only {total} {what} examples")
  rows = np.sort(np.random.default_rng(SUBSET_SEED).permutation(total)[:count])
  return agnews.TextSplit(split.tokens_NxL[rows], split.labels_N[rows])


def prepare(
  args: argparse.Namespace, spec: ExperimentSpec, progress: bool = True
) -> tuple[ExperimentSpec, data.TextArrays, str]:
  """Loads the data the options name (`agnews.load_agnews`), takes its subsets, and
  returns `spec` on it (`Config.text`, and steps for the epochs), its arrays, and one line
  that says where the data and the tokenizer came from and which subsets were taken (what
  a run records of them beside `Config.text`'s fingerprint).

  Raises ValueError with one line for options that make no run (--steps: epochs count
  here) and `text_data.TextDataError` (a ValueError) for data that is missing or
  malformed, before any training."""
  if args.steps is not None:
    raise ValueError("--steps does not apply to a text data set: training counts --epochs")
  quick = args.quick
  epochs_given = getattr(args, "epochs", QUICK.epochs if quick else DEFAULT_EPOCHS)
  max_length = getattr(args, "max_length", 128)
  dataset = agnews.load_agnews(args.data, args.tokenizer, max_length, progress=progress)
  counts = {}
  for what, quick_count in (("train", QUICK.train_examples), ("test", QUICK.test_examples)):
    given = getattr(args, f"{what}_examples", None)
    available = len(getattr(dataset, what).labels_N)
    # --quick takes at most what the data holds; a count given is checked (`subset`).
    counts[what] = given if given is not None else (min(quick_count, available) if quick else None)
  train = subset(dataset.train, counts["train"], "train")
  test = subset(dataset.test, counts["test"], "test")
  selection = f"{dataset.fingerprint}:train={len(train.labels_N)}:test={len(test.labels_N)}"
  text = data.TextShape(
    name="agnews",
    vocab_size=dataset.vocab_size,
    seq_len=max_length,
    num_train=len(train.labels_N),
    num_test=len(test.labels_N),
    num_classes=dataset.num_classes,
    fingerprint=hashlib.sha256(selection.encode()).hexdigest()[:16],
  )
  cfg = spec.config
  per_epoch = epochs.EpochPlan(text.num_train, cfg.batch_size).steps_per_epoch
  cfg = cfg.replace(text=text, steps=epochs_given * per_epoch)
  arrays = data.TextArrays(train.tokens_NxL, train.labels_N, test.tokens_NxL, test.labels_N)
  # The loader's source without where its cache file lies (it differs between machines).
  where = dataset.source.split("; tokens ")[0]
  source = f"{where}; {text.num_train} training and {text.num_test} test examples"
  return dataclasses.replace(spec, config=cfg), arrays, source
