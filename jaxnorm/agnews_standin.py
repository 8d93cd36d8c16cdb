"""Writes a stand-in for AG News where the real data cannot be had: files in the dataset's
original CSV layout (train.csv, test.csv: class 1-4, title, description) with invented texts,
and a WordPiece vocabulary of distilbert-base-uncased's size (30,522 entries, [PAD] = 0,
[UNK] = 100, [CLS] = 101, [SEP] = 102, [MASK] = 103 as in BERT's), so that a run on it has
Experiment 4's shapes, padding and cost. It is NOT AG News: each text is random words with
a few words of its class mixed in, so the models can learn it, and nothing measured on it is
a finding about real text.

    jaxnorm agnews-standin --out /tmp/agnews_standin    # 120,000 + 7,600 examples
    jaxnorm exp4 --data /tmp/agnews_standin --tokenizer /tmp/agnews_standin/vocab.txt --quick

(`python tools/agnews_standin.py` is the same as `jaxnorm agnews-standin`.)
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

VOCAB_SIZE = 30522
# BERT's special tokens at BERT's ids; every other entry is an invented word.
SPECIAL = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
TOPIC_WORDS = 200  # words per class that mark its texts
SHARED_WORDS = 20000  # words every class uses


def vocabulary() -> list[str]:
  """30,522 entries: the special tokens at their ids, invented lower-case words elsewhere."""
  words = [SPECIAL.get(i, f"w{i}") for i in range(VOCAB_SIZE)]
  return [w if w.startswith("[") else _letters(i) for i, w in enumerate(words)]


def _letters(i: int) -> str:
  """An invented word for id i, letters only (so BERT's pre-tokenizer keeps it whole)."""
  out = ""
  while True:
    out = chr(ord("a") + i % 26) + out
    i //= 26
    if not i:
      return "q" + out


def texts(count: int, rng: np.random.Generator, words: list[str]) -> list[tuple[int, str, str]]:
  """`count` examples (label 0-3, title, description): 20-60 words of the shared pool with
  one in ten drawn from the label's own topic words."""
  ordinary = [w for w in words if not w.startswith("[")]
  shared, topics = ordinary[:SHARED_WORDS], ordinary[SHARED_WORDS:]
  out = []
  for _ in range(count):
    label = int(rng.integers(4))
    topic = topics[label * TOPIC_WORDS : (label + 1) * TOPIC_WORDS]
    n = int(rng.integers(20, 61))
    picks = [
      topic[rng.integers(len(topic))] if rng.random() < 0.1 else shared[rng.integers(len(shared))]
      for _ in range(n)
    ]
    cut = int(rng.integers(4, 11))
    out.append((label, " ".join(picks[:cut]), " ".join(picks[cut:])))
  return out


def write_csv(path: Path, examples: list[tuple[int, str, str]]) -> None:
  """The original layout: every field quoted, the class index 1-4 first."""
  lines = [f'"{y + 1}","{title}","{description}"\n' for y, title, description in examples]
  path.write_text("".join(lines), encoding="utf-8")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
  """Writes the files `argv` asks for (None: the process's arguments) under the program
  name `prog` (None: the process's); the exit status."""
  p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="the folder to write (created)")
  p.add_argument("--train", type=int, default=120000, help="training examples")
  p.add_argument("--test", type=int, default=7600, help="test examples")
  p.add_argument("--seed", type=int, default=0, help="seed of the invented texts")
  args = p.parse_args(argv)
  if args.train < 1 or args.test < 1:
    p.error("--train and --test must be >= 1")
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  words = vocabulary()
  rng = np.random.default_rng(args.seed)
  write_csv(out / "train.csv", texts(args.train, rng, words))
  write_csv(out / "test.csv", texts(args.test, rng, words))
  (out / "vocab.txt").write_text("".join(w + "\n" for w in words), encoding="utf-8")
  print(f"wrote {out}/train.csv ({args.train}), test.csv ({args.test}), vocab.txt ({len(words)})")
  return 0
