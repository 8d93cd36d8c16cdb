"""agnews_standin (tools/agnews_standin.py, `jaxnorm agnews-standin`): the stand-in files
load through jaxnorm's own AG News path with Experiment 4's vocabulary size, special-token
ids and padding, every class present."""

import numpy as np
import pytest

pytest.importorskip("tokenizers", reason="the text data needs tokenizers: pip install -e '.[text]'")

from jaxnorm import agnews, agnews_standin  # noqa: E402


def test_standin_has_experiment_4s_vocabulary_and_layout(tmp_path):
  out = tmp_path / "standin"
  assert agnews_standin.main(["--out", str(out), "--train", "40", "--test", "12"]) == 0
  words = (out / "vocab.txt").read_text().splitlines()
  assert len(words) == len(set(words)) == 30522
  assert [words[i] for i in (0, 100, 101, 102, 103)] == [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
  ]
  data = agnews.load_agnews(
    out, out / "vocab.txt", 32, cache_dir=tmp_path / "cache", progress=False
  )
  tokens = data.train.tokens_NxL
  assert tokens.shape == (40, 32) and data.test.tokens_NxL.shape == (12, 32)
  assert data.vocab_size == 30522 and data.pad_id == 0
  assert np.all(tokens[:, 0] == 101)  # [CLS] first
  assert not np.any(tokens == 100)  # every invented word is in the vocabulary: no [UNK]
  assert set(np.unique(data.train.labels_N)) == {0, 1, 2, 3}
