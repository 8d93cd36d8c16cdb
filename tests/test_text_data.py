import shutil
import sys
import types

import numpy as np
import pytest
from text_files import TEST, TRAIN, text_of, write_csv, write_parquet, write_parquet_file

from jaxnorm import text_data
from jaxnorm.text_data import MalformedTextData, MissingTextData, TextDataError


def read(folder):
  return text_data.read_agnews_files(text_data.find_agnews_files(folder))


def assert_one_line(error: pytest.ExceptionInfo, *parts: str):
  message = str(error.value)
  assert "\n" not in message, message
  for part in parts:
    assert part in message, message


def test_csv_and_parquet_give_the_texts_and_labels_of_the_examples(tmp_path):
  from_csv = read(write_csv(tmp_path / "csv"))
  from_parquet = read(write_parquet(tmp_path / "parquet"))
  for texts in (from_csv, from_parquet):
    for split, examples in ((texts.train, TRAIN), (texts.test, TEST)):
      assert split.texts == tuple(text_of(e) for e in examples)
      np.testing.assert_array_equal(split.labels_N, [e[0] for e in examples])
      assert split.labels_N.dtype == np.int32
  assert set(from_csv.train.labels_N) == {0, 1, 2, 3}
  assert "csv: train.csv, test.csv" in from_csv.source
  assert "parquet: data/train-00000-of-00001.parquet" in from_parquet.source


@pytest.mark.parametrize("place", ["data/", "", "split/"])
def test_each_parquet_place_is_found(tmp_path, place):
  texts = read(write_parquet(tmp_path, place=place))
  assert texts.train.texts == tuple(text_of(e) for e in TRAIN)


def test_the_original_archive_folder_is_found(tmp_path):
  write_csv(tmp_path / "ag_news_csv")
  assert read(tmp_path).test.texts == tuple(text_of(e) for e in TEST)


def test_shards_are_read_in_name_order(tmp_path):
  texts = [text_of(e) for e in TRAIN]
  labels = [e[0] for e in TRAIN]
  write_parquet_file(tmp_path / "data/train-00001-of-00002.parquet", texts[3:], labels[3:])
  write_parquet_file(tmp_path / "data/train-00000-of-00002.parquet", texts[:3], labels[:3])
  write_parquet_file(tmp_path / "data/test-00000-of-00001.parquet", ["x"], [1])
  assert read(tmp_path).train.texts == tuple(texts)


def test_csv_quoting_is_read_as_the_hub_script_read_it(tmp_path):
  """Known answers: doubled quotes are one quote, commas inside quotes stay, a space after a
  separator is skipped (skipinitialspace), a backslash is kept, a quoted newline stays."""
  (tmp_path / "train.csv").write_text(
    '"3","Wall St., again","He said ""hi"", then left"\n'
    '"1", "spaced", "out"\n'
    '"4","back\\slash","two\nlines"\n'
    '"2","",""\n',
    encoding="utf-8",
  )
  (tmp_path / "test.csv").write_text('"1","a","b"\n', encoding="utf-8")
  texts = read(tmp_path)
  assert texts.train.texts == (
    'Wall St., again He said "hi", then left',
    "spaced out",
    "back\\slash two\nlines",
    " ",
  )
  np.testing.assert_array_equal(texts.train.labels_N, [2, 0, 3, 1])


@pytest.mark.parametrize(
  "row, expected",
  [
    ('"2","only two"', "2 fields, expected 3"),
    ('"2","a","b","c"', "4 fields"),
    ('"two","a","b"', "class index 'two' is not 1-4"),
    ('"0","a","b"', "class index '0' is not 1-4"),
    ('"5","a","b"', "class index '5' is not 1-4"),
    ("", "0 fields"),
  ],
)
def test_a_malformed_csv_row_is_named_by_file_and_row(tmp_path, row, expected):
  """The bad row is the third; the first spans two lines, so it ends on line 4."""
  write_csv(tmp_path)
  (tmp_path / "train.csv").write_text(f'"1","a","two\nlines"\n"2","b","c"\n{row}\n"3","d","e"\n')
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path)
  assert_one_line(error, f"{tmp_path / 'train.csv'}, row 3 (line 4)", expected)


def test_csv_that_is_not_utf8_is_named(tmp_path):
  write_csv(tmp_path)
  (tmp_path / "test.csv").write_bytes(b'"1","caf\xe9","b"\n')
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path)
  assert_one_line(error, str(tmp_path / "test.csv"), "not UTF-8")


@pytest.mark.parametrize(
  "texts, labels, expected",
  [
    (["a", "b", "c"], [0, 4, 1], "row 2: label 4 is not 0-3"),
    (["a", "b", "c"], [0, 1, -1], "row 3: label -1 is not 0-3"),
    (["a", None, "c"], [0, 1, 2], "row 2: text is None"),
    (["a", "b", "c"], [0, None, 2], "row 2: label None is not an integer"),
  ],
)
def test_a_bad_parquet_row_is_named_by_file_and_row(tmp_path, texts, labels, expected):
  write_parquet(tmp_path)
  path = write_parquet_file(tmp_path / "data/test-00000-of-00001.parquet", texts, labels)
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path)
  assert_one_line(error, f"{path}, {expected}")


def test_a_parquet_file_without_the_columns_or_not_parquet_is_named(tmp_path):
  import pyarrow as pa
  import pyarrow.parquet as pq

  write_parquet(tmp_path)
  path = tmp_path / "data/train-00000-of-00001.parquet"
  pq.write_table(pa.table({"sentence": ["a"], "label": [1]}), path)
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path)
  assert_one_line(error, str(path), "columns text and label")
  path.write_text("not parquet")
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path)
  assert_one_line(error, str(path), "not a parquet file")


def test_an_empty_split_is_refused(tmp_path):
  write_csv(tmp_path / "csv", test=())
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path / "csv")
  assert_one_line(error, "test.csv", "no examples")
  write_parquet(tmp_path / "parquet", train=())
  with pytest.raises(MalformedTextData) as error:
    read(tmp_path / "parquet")
  assert_one_line(error, "train-00000-of-00001.parquet", "no examples")


def test_a_missing_or_empty_folder_says_what_to_download(tmp_path):
  for folder, what in ((tmp_path / "nowhere", "does not exist"), (tmp_path, "expected one of")):
    with pytest.raises(MissingTextData) as error:
      text_data.find_agnews_files(folder)
    assert_one_line(error, str(folder), what, text_data.AG_NEWS_URL)
  (tmp_path / "README.md").write_text("no data here")
  with pytest.raises(MissingTextData) as error:
    text_data.find_agnews_files(tmp_path / "README.md")
  assert_one_line(error, "is not a folder", "--data DIR")


def test_a_layout_with_one_split_only_is_incomplete(tmp_path):
  write_csv(tmp_path)
  (tmp_path / "test.csv").unlink()
  with pytest.raises(MissingTextData) as error:
    text_data.find_agnews_files(tmp_path)
  assert_one_line(error, "has train.csv but no test.csv")


def test_a_folder_with_two_layouts_is_refused(tmp_path):
  write_parquet(write_csv(tmp_path))
  with pytest.raises(TextDataError) as error:
    text_data.find_agnews_files(tmp_path)
  assert not isinstance(error.value, MissingTextData | MalformedTextData)
  assert_one_line(error, "more than one AG News layout", "data/train-*.parquet", "train.csv")


def hub(monkeypatch, load_dataset):
  """`datasets` replaced by a module whose load_dataset is `load_dataset`."""
  fake = types.ModuleType("datasets")
  fake.load_dataset = load_dataset
  monkeypatch.setitem(sys.modules, "datasets", fake)


def hub_splits(train=TRAIN, test=TEST):
  columns = lambda examples: {
    "text": [text_of(e) for e in examples],
    "label": [e[0] for e in examples],
  }
  return {"train": columns(train), "test": columns(test)}


def test_the_hub_gives_both_splits(monkeypatch):
  asked = []
  hub(monkeypatch, lambda name: asked.append(name) or hub_splits())
  texts = text_data.read_agnews_hub()
  assert asked == ["fancyzhx/ag_news"]
  assert texts.train.texts == tuple(text_of(e) for e in TRAIN)
  np.testing.assert_array_equal(texts.test.labels_N, [e[0] for e in TEST])


def test_the_hub_unreachable_says_what_to_download_in_one_line(monkeypatch):
  def offline(name):
    raise ConnectionError("Couldn't reach 'fancyzhx/ag_news' on the Hub\n(LocalEntryNotFoundError)")

  hub(monkeypatch, offline)
  with pytest.raises(MissingTextData) as error:
    text_data.read_agnews_hub()
  assert_one_line(error, "ConnectionError: Couldn't reach", text_data.AG_NEWS_URL, "--data DIR")


def test_without_the_datasets_library_says_what_to_install(monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` raises ImportError
  with pytest.raises(MissingTextData) as error:
    text_data.read_agnews_hub()
  assert_one_line(error, 'pip install -e ".[text]"', "--data DIR")


def test_a_bad_label_from_the_hub_is_named(monkeypatch):
  splits = hub_splits()
  splits["test"]["label"][1] = 7
  hub(monkeypatch, lambda name: splits)
  with pytest.raises(MalformedTextData) as error:
    text_data.read_agnews_hub()
  assert_one_line(error, "split test, row 2: label 7 is not 0-3")


def test_a_missing_split_or_column_from_the_hub_is_named(monkeypatch):
  splits = hub_splits()
  hub(monkeypatch, lambda name: {"train": splits["train"]})
  with pytest.raises(MalformedTextData) as error:
    text_data.read_agnews_hub()
  assert_one_line(error, "split test: no such split")
  del splits["train"]["label"]
  hub(monkeypatch, lambda name: splits)
  with pytest.raises(MalformedTextData) as error:
    text_data.read_agnews_hub()
  assert_one_line(error, "split train: no such split, or no text and label (KeyError('label'))")


def test_the_files_fingerprint_follows_every_byte_and_name_but_not_the_folder(tmp_path):
  fingerprint = lambda folder: text_data.files_fingerprint(text_data.find_agnews_files(folder))
  before = fingerprint(write_csv(tmp_path / "a"))
  shutil.copytree(tmp_path / "a", tmp_path / "b")
  assert fingerprint(tmp_path / "b") == before  # moved: the same data
  path = tmp_path / "b/test.csv"
  path.write_text(path.read_text().replace("team", "meat"))  # the same size
  assert fingerprint(tmp_path / "b") != before
  write_parquet(tmp_path / "c")
  renamed = fingerprint(tmp_path / "c")
  shards = tmp_path / "c/data"
  (shards / "test-00000-of-00001.parquet").rename(shards / "test-00000-of-00002.parquet")
  assert fingerprint(tmp_path / "c") != renamed


def test_the_texts_fingerprint_tells_where_one_text_ends():
  labels = np.zeros(2, np.int32)
  texts = lambda *t: text_data.AgNewsTexts(
    text_data.TextsAndLabels(t, labels), text_data.TextsAndLabels(("x",), labels[:1]), ""
  )
  assert text_data.texts_fingerprint(texts("ab", "c")) != text_data.texts_fingerprint(
    texts("a", "bc")
  )
  assert text_data.texts_fingerprint(texts("a", "b")) == text_data.texts_fingerprint(
    texts("a", "b")
  )
