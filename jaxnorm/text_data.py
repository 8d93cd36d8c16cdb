"""AG News as texts and labels, read from the dataset's own files or from the Hugging Face hub.

AG News (Zhang, Zhao and LeCun, "Character-level Convolutional Networks for Text
Classification", NIPS 2015) has 120,000 training and 7,600 test news articles in four classes:
World, Sports, Business, Sci/Tech (labels 0-3). A folder given as `--data DIR` holds one of
its own layouts (`find_agnews_files`):

- the hub's parquet files (https://huggingface.co/datasets/fancyzhx/ag_news, formerly
  `ag_news`): `data/train-*.parquet` and `data/test-*.parquet`, or the same files at the top
  of the folder, or `train/*.parquet` and `test/*.parquet`; columns `text` and `label` (0-3);
- the original CSV files: `train.csv` and `test.csv` (or `ag_news_csv/` holding them, as the
  original archive unpacks), no header, three fields: class index 1-4, title, description.
  They are read as the hub's loading script read them before the parquet conversion: the
  csv module with `quotechar='"'`, `quoting=QUOTE_ALL`, `skipinitialspace=True`,
  `label = int(class) - 1`, `text = " ".join((title, description))`.

A folder that holds more than one layout is refused, not resolved by a precedence rule: which
files were meant cannot be known, and the two may differ. Several files of one split (shards)
are read in name order. Without a folder, `read_agnews_hub` asks the `datasets` library, which
uses its local cache when offline.

Errors: `MissingTextData` (nothing to read: a missing folder, no recognized layout, a hub that
cannot be reached), `MalformedTextData` (a file that does not hold AG News as its layout says,
named with its row), and `TextDataError` (their base, a ValueError; also an ambiguous folder).
Each message is one line that says what to do.
"""

from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

AG_NEWS_CLASSES = ("World", "Sports", "Business", "Sci/Tech")  # labels 0, 1, 2, 3
AG_NEWS_HUB_ID = "fancyzhx/ag_news"
AG_NEWS_URL = f"https://huggingface.co/datasets/{AG_NEWS_HUB_ID}"
TEXT_EXTRA = 'pip install -e ".[text]"'
DOWNLOAD_HINT = (
  f"download the dataset's files ({AG_NEWS_URL}, data/*.parquet) and pass their folder "
  "with --data DIR"
)
SPLITS = ("train", "test")

# (name, train pattern, test pattern) relative to the data folder, in the order they are named.
LAYOUTS = (
  ("parquet", "data/train-*.parquet", "data/test-*.parquet"),
  ("parquet", "train-*.parquet", "test-*.parquet"),
  ("parquet", "train/*.parquet", "test/*.parquet"),
  ("csv", "train.csv", "test.csv"),
  ("csv", "ag_news_csv/train.csv", "ag_news_csv/test.csv"),
)


class TextDataError(ValueError):
  """Text data (AG News or a tokenizer) that cannot be used as given; the message says why."""


class MissingTextData(TextDataError):
  """The data or the tokenizer is not there: the message says what to download and which
  option takes it."""


class MalformedTextData(TextDataError):
  """A file that does not hold what its layout says; the message names the file and row."""


class TextsAndLabels(NamedTuple):
  """One split: N texts and their labels."""

  texts: tuple[str, ...]  # N texts
  labels_N: np.ndarray  # int32 class labels, 0 .. 3


class AgNewsTexts(NamedTuple):
  """Both splits of AG News and where they came from (one line, for a run's record)."""

  train: TextsAndLabels
  test: TextsAndLabels
  source: str


class AgNewsFiles(NamedTuple):
  """One layout found in a data folder: its kind ("parquet" or "csv") and each split's
  files, in the order they are read."""

  root: Path
  kind: str
  train: tuple[Path, ...]
  test: tuple[Path, ...]

  def describe(self) -> str:
    names = ", ".join(p.relative_to(self.root).as_posix() for p in self.train + self.test)
    return f"AG News from {self.root} ({self.kind}: {names})"


def find_agnews_files(data_dir: str | os.PathLike) -> AgNewsFiles:
  """The AG News files in `data_dir`, in one of the layouts above (`LAYOUTS`).

  Raises MissingTextData if the folder does not exist or holds no layout, or holds one split
  of a layout but not the other; TextDataError if it holds more than one layout.
  """
  root = Path(data_dir).expanduser()
  if not root.is_dir():
    what = "is not a folder" if root.exists() else "does not exist"
    raise MissingTextData(f"AG News not found: --data {root} {what}; {DOWNLOAD_HINT}")
  found = []
  for kind, train_pattern, test_pattern in LAYOUTS:
    train, test = sorted(root.glob(train_pattern)), sorted(root.glob(test_pattern))
    train, test = [p for p in train if p.is_file()], [p for p in test if p.is_file()]
    if train or test:
      found.append((kind, train_pattern, test_pattern, tuple(train), tuple(test)))
  if not found:
    expected = "; ".join(f"{train} and {test}" for _, train, test in LAYOUTS)
    raise MissingTextData(
      f"AG News not found in {root}: expected one of {expected} "
      f"(the hub's parquet files from {AG_NEWS_URL}, or the original train.csv and test.csv)"
    )
  if len(found) > 1:
    names = ", ".join(f"{train} and {test}" for _, train, test, _, _ in found)
    raise TextDataError(f"{root} holds more than one AG News layout ({names}); keep one of them")
  kind, train_pattern, test_pattern, train, test = found[0]
  for pattern, files in ((train_pattern, train), (test_pattern, test)):
    if not files:
      present = train_pattern if train else test_pattern
      raise MissingTextData(f"AG News in {root} is incomplete: it has {present} but no {pattern}")
  return AgNewsFiles(root, kind, train, test)


def read_agnews_files(files: AgNewsFiles) -> AgNewsTexts:
  """Both splits' texts and labels from the files `find_agnews_files` found.

  Raises MalformedTextData (file and row) for a row that is not AG News, MissingTextData if
  parquet files need pyarrow and it is not installed.
  """
  read = read_parquet_split if files.kind == "parquet" else read_csv_split
  train, test = (read(paths) for paths in (files.train, files.test))
  return AgNewsTexts(train, test, files.describe())


def read_csv_split(paths: tuple[Path, ...]) -> TextsAndLabels:
  """A split from the original CSV files (one, in practice), as the hub's loading script
  read it (module docstring). Rows are numbered from 1, as the lines of a file without
  header; `line` is where the row ends (a quoted field may span lines).

  Raises MalformedTextData for a row without exactly three fields, a class index that is not
  an integer in 1-4, text that is not UTF-8, or a file the csv module cannot parse.
  """
  texts: list[str] = []
  labels: list[int] = []
  for path in paths:
    # As the loading script: no newline="" (universal newlines), UTF-8.
    with open(path, encoding="utf-8") as f:
      reader = csv.reader(
        f, quotechar='"', delimiter=",", quoting=csv.QUOTE_ALL, skipinitialspace=True
      )
      row_number = 0
      try:
        for row_number, row in enumerate(reader, start=1):
          where = f"{path}, row {row_number} (line {reader.line_num})"
          if len(row) != 3:
            raise MalformedTextData(
              f"{where}: {len(row)} fields, expected 3 (class index 1-4, title, description)"
            )
          class_index, title, description = row
          try:
            label = int(class_index) - 1
          except ValueError:
            label = None
          if label is None or not 0 <= label < len(AG_NEWS_CLASSES):
            raise MalformedTextData(f"{where}: class index {class_index[:40]!r} is not 1-4")
          texts.append(" ".join((title, description)))
          labels.append(label)
      except UnicodeDecodeError as e:
        raise MalformedTextData(
          f"{path}, after row {row_number}: not UTF-8 text ({e.reason})"
        ) from None
      except csv.Error as e:
        raise MalformedTextData(f"{path}, row {row_number + 1}: {e}") from None
  return checked_split(texts, labels, ", ".join(str(p) for p in paths))


def read_parquet_split(paths: tuple[Path, ...]) -> TextsAndLabels:
  """A split from the hub's parquet files, in the order given; columns `text` (strings) and
  `label` (integers 0-3). Rows are numbered from 1 within each file.

  Raises MalformedTextData for a file pyarrow cannot read, a missing column, a null or
  out-of-range value; MissingTextData if pyarrow is not installed.
  """
  try:
    import pyarrow as pa
    import pyarrow.parquet as pq
  except ImportError:
    raise MissingTextData(
      f"reading AG News's parquet files needs pyarrow: {TEXT_EXTRA}, or pass a folder "
      "holding the original train.csv and test.csv with --data DIR"
    ) from None
  texts: list = []
  labels: list = []
  for path in paths:
    try:
      table = pq.read_table(path, columns=["text", "label"])
    except (pa.ArrowException, OSError, ValueError) as e:
      first = (str(e).splitlines() or [""])[0][:200]
      raise MalformedTextData(
        f"{path}: not a parquet file with columns text and label ({type(e).__name__}: {first})"
      ) from None
    text_type, label_type = table.schema.field("text").type, table.schema.field("label").type
    if not (pa.types.is_string(text_type) or pa.types.is_large_string(text_type)):
      raise MalformedTextData(f"{path}: column text holds {text_type}, not strings")
    if not pa.types.is_integer(label_type):
      raise MalformedTextData(f"{path}: column label holds {label_type}, not integers")
    file_texts = table.column("text").to_pylist()
    file_labels = table.column("label").to_pylist()
    checked_split(file_texts, file_labels, str(path))
    texts += file_texts
    labels += file_labels
  return checked_split(texts, labels, ", ".join(str(p) for p in paths))


def read_agnews_hub() -> AgNewsTexts:
  """Both splits from the hub through `datasets.load_dataset` (its local cache when offline).

  Raises MissingTextData, one line saying what to install or download, if the library is
  not installed or the dataset can be neither downloaded nor found in its cache;
  MalformedTextData if what it returns is not AG News.
  """
  try:
    import datasets
  except ImportError:
    raise MissingTextData(
      "AG News not found: no --data DIR was given and the datasets library that fetches it "
      f"from the hub is not installed; {TEXT_EXTRA}, or {DOWNLOAD_HINT}"
    ) from None
  try:
    loaded = datasets.load_dataset(AG_NEWS_HUB_ID)
  except Exception as e:  # no network and no cache, or anything else the hub does
    first = (str(e).splitlines() or [""])[0][:200]
    raise MissingTextData(
      f"AG News not found: {AG_NEWS_HUB_ID} could not be loaded from the hub or its local "
      f"cache ({type(e).__name__}: {first}); {DOWNLOAD_HINT}"
    ) from None
  splits = []
  for split in SPLITS:
    where = f"the hub's {AG_NEWS_HUB_ID}, split {split}"
    try:
      texts, labels = list(loaded[split]["text"]), list(loaded[split]["label"])
    except (KeyError, TypeError) as e:
      raise MalformedTextData(f"{where}: no such split, or no text and label ({e!r})") from None
    splits.append(checked_split(texts, labels, where))
  return AgNewsTexts(*splits, f"AG News from the hub ({AG_NEWS_HUB_ID}, via datasets)")


def checked_split(texts: list, labels: list, where: str) -> TextsAndLabels:
  """`texts` and `labels` as a split, checked: as many of each, at least one, every text a
  string, every label an integer 0-3 (row numbers from 1). Raises MalformedTextData."""
  if len(texts) != len(labels):
    raise MalformedTextData(f"{where}: {len(texts)} texts but {len(labels)} labels")
  if not texts:
    raise MalformedTextData(f"{where}: no examples (an empty split)")
  for row, (text, label) in enumerate(zip(texts, labels, strict=True), start=1):
    if not isinstance(text, str):
      raise MalformedTextData(f"{where}, row {row}: text is {text!r:.40}, not a string")
    if isinstance(label, bool) or not isinstance(label, int | np.integer):
      raise MalformedTextData(f"{where}, row {row}: label {label!r:.40} is not an integer")
    if not 0 <= label < len(AG_NEWS_CLASSES):
      raise MalformedTextData(f"{where}, row {row}: label {label} is not 0-3")
  return TextsAndLabels(tuple(texts), np.asarray(labels, dtype=np.int32))


def files_fingerprint(files: AgNewsFiles) -> str:
  """sha256 (hex) over the layout and each file's name relative to the folder, size and
  content sha256: it changes when any byte of the data does, and not when the folder moves."""
  digest = hashlib.sha256(f"agnews-files {files.kind}\n".encode())
  for split, paths in zip(SPLITS, (files.train, files.test), strict=True):
    for path in paths:
      name = path.relative_to(files.root).as_posix()
      digest.update(f"{split} {name} {path.stat().st_size} {file_sha256(path)}\n".encode())
  return digest.hexdigest()


def texts_fingerprint(texts: AgNewsTexts) -> str:
  """sha256 (hex) over both splits' texts and labels themselves: the key of data that came
  from the hub, where no file of ours stands behind it. Each text is length-prefixed, so no
  two different lists of texts give the same bytes."""
  digest = hashlib.sha256(b"agnews-texts\n")
  for split, part in zip(SPLITS, (texts.train, texts.test), strict=True):
    digest.update(f"{split} {len(part.texts)}\n".encode())
    for text in part.texts:
      encoded = text.encode("utf-8", "surrogatepass")
      digest.update(len(encoded).to_bytes(8, "little") + encoded)
    digest.update(part.labels_N.astype("<i4").tobytes())
  return digest.hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
  """The sha256 (hex) of a file's content, read in 1 MiB blocks."""
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while block := f.read(1 << 20):
      digest.update(block)
  return digest.hexdigest()
