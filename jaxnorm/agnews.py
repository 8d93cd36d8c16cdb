"""AG News as token arrays for Experiment 4, tokenized once and then read from an on-disk cache.

    from jaxnorm import agnews
    data = agnews.load_agnews("~/data/ag_news")   # or None: the hub through `datasets`
    data.train.tokens_NxL.shape                    # (120000, 128) int32
    data.test.labels_N                             # (7600,) int32, 0 .. 3

`load_agnews` reads the texts (`jaxnorm.text_data`), tokenizes them (`jaxnorm.tokens`) and
stores the token arrays in `<cache>/agnews-<key>.npz`, so that a second run reads them at once.

The key is the sha256 of: the cache format (`CACHE_FORMAT`), the data (each file's name in its
folder, size and content sha256; for data from the hub, the sha256 of its texts and labels,
which `datasets` has to load anyway: its own fingerprints depend on its version and cache
folder), the tokenizer (its file's content sha256, or its hub name) and `max_length`. A cache
file is trusted only as far as it is checked: one that cannot be read (never with pickles),
holds another key, or arrays of other names, shapes, types or ranges is rebuilt. It is
written atomically (a temporary file in the same folder, then `os.replace`), so a run that is
stopped leaves the old file or the new one, never half of one. A cache that cannot be written
costs a warning, not the run.

The cache folder: `cache_dir` if given, else `$JAXNORM_TOKEN_CACHE_DIR`, else
`$XDG_CACHE_HOME/jaxnorm/tokens`, else `~/.cache/jaxnorm/tokens` (beside the compilation
cache's `jaxnorm/xla`, `jaxnorm.runtime`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np

from jaxnorm import text_data, tokens
from jaxnorm.text_data import AG_NEWS_CLASSES

CACHE_FORMAT = 1  # raised whenever what a cache file holds, or how it is made, changes
TOKEN_CACHE_ENV = "JAXNORM_TOKEN_CACHE_DIR"
_ARRAYS = ("key", "train_tokens", "train_labels", "test_tokens", "test_labels", "vocab_size")
_ARRAYS += ("pad_id",)


class TextSplit(NamedTuple):
  """One split as arrays: token ids (padded and truncated to L) and class labels."""

  tokens_NxL: np.ndarray  # int32 token ids, 0 .. vocab_size - 1
  labels_N: np.ndarray  # int32 class labels, 0 .. num_classes - 1


class TextDataset(NamedTuple):
  """AG News tokenized: both splits, what a model needs to know of the vocabulary and the
  classes, where it came from (one line) and its cache key (`fingerprint`, sha256 hex)."""

  train: TextSplit
  test: TextSplit
  vocab_size: int  # 30,522 for distilbert-base-uncased
  pad_id: int  # [PAD]'s id (0 for distilbert-base-uncased); padding is not masked
  source: str
  fingerprint: str
  num_classes: int = len(AG_NEWS_CLASSES)
  class_names: tuple[str, ...] = AG_NEWS_CLASSES

  @property
  def max_length(self) -> int:
    return self.train.tokens_NxL.shape[1]


def default_token_cache_dir() -> Path:
  """$JAXNORM_TOKEN_CACHE_DIR, else $XDG_CACHE_HOME/jaxnorm/tokens, else
  ~/.cache/jaxnorm/tokens."""
  if os.environ.get(TOKEN_CACHE_ENV):
    return Path(os.environ[TOKEN_CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
  return Path(base).expanduser() / "jaxnorm" / "tokens"


def cache_key(data_fingerprint: str, tokenizer_fingerprint: str, max_length: int) -> str:
  """sha256 (hex) of the cache format, the data's and the tokenizer's fingerprints and the
  length: a cache file holds the tokens of exactly these."""
  text = f"jaxnorm agnews tokens {CACHE_FORMAT}\n{data_fingerprint}\n"
  text += f"{tokenizer_fingerprint}\nmax_length {max_length}\n"
  return hashlib.sha256(text.encode()).hexdigest()


def load_agnews(
  data_dir: str | os.PathLike | None = None,
  tokenizer: str | os.PathLike | None = None,
  max_length: int = 128,
  cache_dir: str | os.PathLike | None = None,
  progress: bool = True,
) -> TextDataset:
  """AG News tokenized to `max_length` tokens a text, from the cache or tokenized and cached.

  data_dir: a folder in one of AG News's layouts (`jaxnorm.text_data`), or None for the hub.
  tokenizer: a tokenizer.json, vocab.txt or folder (`jaxnorm.tokens`), or None for the hub's
    distilbert-base-uncased.
  cache_dir: where token arrays are kept (module docstring for the default).
  progress: a progress bar on stderr while tokenizing, if it takes over a second.

  Raises MissingTextData (one line: what to download or install, and which option takes it)
  if the data or tokenizer is not there; MalformedTextData (file and row) for data that is not
  AG News or an unusable tokenizer; TextDataError for a folder with two layouts; ValueError
  for `max_length` < 2.
  """
  if max_length < 2:
    raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
  tokenizer_source = tokens.find_tokenizer(tokenizer)
  if data_dir is None:
    texts = text_data.read_agnews_hub()
    data_fingerprint, data_source = text_data.texts_fingerprint(texts), texts.source
  else:
    files = text_data.find_agnews_files(data_dir)
    texts = None  # read only if the cache does not hold the tokens
    data_fingerprint, data_source = text_data.files_fingerprint(files), files.describe()
  key = cache_key(data_fingerprint, tokenizer_source.fingerprint(), max_length)
  folder = Path(cache_dir).expanduser() if cache_dir is not None else default_token_cache_dir()
  path = folder / f"agnews-{key}.npz"
  source = f"{data_source}; {tokenizer_source.describe()}; max_length {max_length}"

  cached = read_cache(path, key, max_length)
  if cached is not None:
    return cached._replace(source=f"{source}; tokens read from {path}")
  if texts is None:
    texts = text_data.read_agnews_files(files)
  wordpiece = tokens.load_tokenizer(tokenizer_source)
  pad_id = tokens.configure_tokenizer(wordpiece, max_length)
  splits = [
    TextSplit(
      tokens.tokenize(
        wordpiece, part.texts, max_length, progress=progress, desc=f"tokenizing {name}"
      ),
      part.labels_N,
    )
    for name, part in zip(text_data.SPLITS, (texts.train, texts.test), strict=True)
  ]
  vocab_size = wordpiece.get_vocab_size(with_added_tokens=True)
  dataset = TextDataset(*splits, vocab_size, pad_id, source, key)
  written = write_cache(path, dataset)
  return dataset._replace(
    source=f"{source}; tokens {'cached in' if written else 'not cached'} {path}"
  )


def read_cache(path: Path, key: str, max_length: int) -> TextDataset | None:
  """The dataset cached in `path` if it holds exactly what `key` names, else None (missing,
  unreadable, another key, or arrays that are not what `write_cache` writes)."""
  try:  # np.load leaves a file it opened itself open when it is not a whole zip file
    with open(path, "rb") as f, np.load(f, allow_pickle=False) as npz:
      if sorted(npz.files) != sorted(_ARRAYS) or str(npz["key"]) != key:
        return None
      arrays = {name: npz[name] for name in _ARRAYS}
  except Exception:  # any file that does not read as ours is rebuilt, whatever broke it
    return None
  vocab_size, pad_id = arrays["vocab_size"], arrays["pad_id"]
  if vocab_size.shape or pad_id.shape or not vocab_size.dtype == pad_id.dtype == np.int64:
    return None
  vocab_size, pad_id = int(vocab_size), int(pad_id)
  if not 0 <= pad_id < vocab_size:
    return None
  splits = []
  for name in text_data.SPLITS:
    tokens_NxL, labels_N = arrays[f"{name}_tokens"], arrays[f"{name}_labels"]
    if not (
      tokens_NxL.dtype == labels_N.dtype == np.int32
      and tokens_NxL.ndim == 2
      and tokens_NxL.shape[1] == max_length
      and labels_N.shape == tokens_NxL.shape[:1]
      and labels_N.size > 0
      and 0 <= tokens_NxL.min()
      and tokens_NxL.max() < vocab_size
      and 0 <= labels_N.min()
      and labels_N.max() < len(AG_NEWS_CLASSES)
    ):
      return None
    splits.append(TextSplit(tokens_NxL, labels_N))
  return TextDataset(*splits, vocab_size, pad_id, "", key)


def write_cache(path: Path, dataset: TextDataset) -> bool:
  """Writes `dataset`'s arrays and key to `path` atomically; returns whether it did. A folder
  or file that cannot be written gives a RuntimeWarning and False; nothing half-written stays."""
  arrays = {
    "key": np.array(dataset.fingerprint),
    "train_tokens": dataset.train.tokens_NxL,
    "train_labels": dataset.train.labels_N,
    "test_tokens": dataset.test.tokens_NxL,
    "test_labels": dataset.test.labels_N,
    "vocab_size": np.array(dataset.vocab_size, dtype=np.int64),
    "pad_id": np.array(dataset.pad_id, dtype=np.int64),
  }
  temporary = None
  try:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".tmp", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(temporary, path)
    return True
  except OSError as e:
    warnings.warn(f"token cache not written to {path}: {e}", RuntimeWarning, stacklevel=3)
    return False
  finally:
    if temporary is not None and os.path.exists(temporary):
      with contextlib.suppress(OSError):
        os.unlink(temporary)
