import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from text_files import CLS, ID, PAD, SEP, TEST, TRAIN, VOCAB, text_of, write_csv, write_vocab

from jaxnorm import agnews, text_data, tokens
from jaxnorm.text_data import MissingTextData


@pytest.fixture
def files(tmp_path):
  """AG News's CSV layout, a vocab.txt and an empty cache folder."""
  data = write_csv(tmp_path / "data")
  vocab = write_vocab(tmp_path / "vocab.txt")
  return types.SimpleNamespace(data=data, vocab=vocab, cache=tmp_path / "cache")


@pytest.fixture
def calls(monkeypatch):
  """How often the texts were read and tokenized since the test began."""
  counts = {"read": 0, "tokenize": 0}

  def counted(name, function):
    def wrapper(*args, **kwargs):
      counts[name] += 1
      return function(*args, **kwargs)

    return wrapper

  monkeypatch.setattr(tokens, "tokenize", counted("tokenize", tokens.tokenize))
  read = text_data.read_agnews_files
  monkeypatch.setattr(text_data, "read_agnews_files", counted("read", read))
  return counts


def load(files, **kwargs):
  kwargs = {"max_length": 8, "cache_dir": files.cache, "progress": False, **kwargs}
  return agnews.load_agnews(files.data, kwargs.pop("tokenizer", files.vocab), **kwargs)


def cache_files(folder: Path) -> list[str]:
  return sorted(p.name for p in folder.iterdir())


def test_the_dataset_holds_both_splits_as_token_arrays(files):
  data = load(files)
  assert data.train.tokens_NxL.shape == (len(TRAIN), 8) and data.max_length == 8
  assert data.test.tokens_NxL.shape == (len(TEST), 8)
  for split in (data.train, data.test):
    assert split.tokens_NxL.dtype == split.labels_N.dtype == np.int32
  np.testing.assert_array_equal(data.train.labels_N, [e[0] for e in TRAIN])
  # "Sport news The team sat." -> sport news the team sat . between [CLS] and [SEP]
  expected = [CLS, *(ID[w] for w in ("sport", "news", "the", "team", "sat", ".")), SEP]
  np.testing.assert_array_equal(data.test.tokens_NxL[0], expected)
  assert (data.vocab_size, data.pad_id, data.num_classes) == (len(VOCAB), PAD, 4)
  assert data.class_names == ("World", "Sports", "Business", "Sci/Tech")
  assert cache_files(files.cache) == [f"agnews-{data.fingerprint}.npz"]
  assert str(files.data) in data.source and "cached in" in data.source


def test_a_second_load_reads_the_cache_without_reading_or_tokenizing(files, calls):
  first = load(files)
  assert calls == {"read": 1, "tokenize": 2}
  path = files.cache / f"agnews-{first.fingerprint}.npz"
  stamp = path.stat().st_mtime_ns
  second = load(files)
  assert calls == {"read": 1, "tokenize": 2}  # nothing read or tokenized again
  assert path.stat().st_mtime_ns == stamp
  assert "tokens read from" in second.source
  for a, b in ((first.train, second.train), (first.test, second.test)):
    np.testing.assert_array_equal(a.tokens_NxL, b.tokens_NxL)
    np.testing.assert_array_equal(a.labels_N, b.labels_N)
  assert first._replace(source="", train=None, test=None) == second._replace(
    source="", train=None, test=None
  )


def change_a_word_keeping_the_size(files):
  path = files.data / "test.csv"
  text = path.read_text()
  path.write_text(text.replace("team", "meat", 1))  # "meat" is not in the vocabulary
  assert len(path.read_text()) == len(text)


def change_the_vocabulary(files):
  write_vocab(files.vocab, [*VOCAB, "zebra"])


@pytest.mark.parametrize(
  "change, kwargs",
  [
    (change_a_word_keeping_the_size, {}),
    (change_the_vocabulary, {}),
    (lambda files: None, {"max_length": 9}),
  ],
  ids=["data file, same size", "tokenizer file", "max_length"],
)
def test_the_cache_is_rebuilt_when_what_it_was_made_from_changes(files, calls, change, kwargs):
  before = load(files)
  change(files)
  after = load(files, **kwargs)
  assert calls == {"read": 2, "tokenize": 4}
  assert after.fingerprint != before.fingerprint
  assert len(cache_files(files.cache)) == 2


def test_a_changed_data_file_gives_its_new_tokens(files):
  before = load(files)
  change_a_word_keeping_the_size(files)
  after = load(files)
  team = list(before.test.tokens_NxL[0]).index(ID["team"])
  assert after.test.tokens_NxL[0, team] == ID["[UNK]"]


def test_a_changed_vocabulary_gives_its_new_tokens(files):
  before = load(files)
  change_the_vocabulary(files)
  after = load(files)
  zebra = len(VOCAB)  # the new entry's id
  assert zebra not in before.train.tokens_NxL and zebra in after.train.tokens_NxL


class Unpickled:
  """An object that, unpickled, makes the folder `marker`: a cache must never unpickle."""

  def __init__(self, marker: Path):
    self.marker = marker

  def __reduce__(self):
    return os.mkdir, (str(self.marker),)


def broken_caches(path: Path, good: agnews.TextDataset):
  """Ways a cache file may be wrong: each is a function that spoils `path`."""
  with np.load(path) as npz:
    arrays = dict(npz)

  def save(**changes):
    with open(path, "wb") as f:
      np.savez(f, **{**arrays, **changes})

  yield "garbage", lambda: path.write_bytes(b"not a zip file at all")
  yield "truncated", lambda: path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  yield "other key", lambda: save(key=np.array("0" * 64))
  yield "other length", lambda: save(train_tokens=good.train.tokens_NxL[:, :4])
  yield "other dtype", lambda: save(train_tokens=good.train.tokens_NxL.astype(np.int64))
  yield "id out of range", lambda: save(test_tokens=good.test.tokens_NxL + len(VOCAB))
  yield "label out of range", lambda: save(test_labels=good.test.labels_N + 4)
  yield "fewer labels", lambda: save(train_labels=good.train.labels_N[1:])
  yield "pickled", lambda: save(pad_id=np.array(Unpickled(path.parent / "unpickled"), dtype=object))
  yield "an array more", lambda: save(extra=np.zeros(1))


def test_a_broken_cache_file_is_rebuilt_never_trusted(files, calls):
  good = load(files)
  path = files.cache / f"agnews-{good.fingerprint}.npz"
  expected_calls = dict(calls)
  for name, spoil in list(broken_caches(path, good)):
    spoil()
    rebuilt = load(files)
    expected_calls = {
      "read": expected_calls["read"] + 1,
      "tokenize": expected_calls["tokenize"] + 2,
    }
    assert calls == expected_calls, name
    assert "cached in" in rebuilt.source, name
    np.testing.assert_array_equal(rebuilt.train.tokens_NxL, good.train.tokens_NxL, err_msg=name)
    np.testing.assert_array_equal(rebuilt.test.labels_N, good.test.labels_N, err_msg=name)
    assert "tokens read from" in load(files).source, name  # and the rebuilt file is read
  assert not (files.cache / "unpickled").exists()


def test_the_cache_is_written_whole_or_not_at_all(files, monkeypatch):
  load(files)
  assert len(cache_files(files.cache)) == 1  # no temporary file left behind

  def fails_halfway(f, **arrays):
    f.write(b"PK half a zip")
    raise KeyboardInterrupt

  monkeypatch.setattr(agnews.np, "savez", fails_halfway)
  with pytest.raises(KeyboardInterrupt):
    load(files, max_length=9)
  assert len(cache_files(files.cache)) == 1  # neither a new file nor a temporary one


def test_a_cache_that_cannot_be_written_costs_a_warning_not_the_run(files):
  files.cache.write_text("a file where the folder should be")
  with pytest.warns(RuntimeWarning, match="token cache not written"):
    data = load(files)
  assert data.train.tokens_NxL.shape == (len(TRAIN), 8) and "not cached" in data.source


def test_the_cache_folder_is_the_argument_then_the_environment_then_xdg(files, monkeypatch):
  monkeypatch.setenv(agnews.TOKEN_CACHE_ENV, str(files.cache / "env"))
  assert agnews.default_token_cache_dir() == files.cache / "env"
  monkeypatch.delenv(agnews.TOKEN_CACHE_ENV)
  monkeypatch.setenv("XDG_CACHE_HOME", str(files.cache / "xdg"))
  assert agnews.default_token_cache_dir() == files.cache / "xdg/jaxnorm/tokens"
  monkeypatch.delenv("XDG_CACHE_HOME")
  monkeypatch.setenv("HOME", str(files.cache / "home"))
  assert agnews.default_token_cache_dir() == files.cache / "home/.cache/jaxnorm/tokens"
  monkeypatch.setenv(agnews.TOKEN_CACHE_ENV, str(files.cache / "env"))
  load(files, cache_dir=None)
  assert len(cache_files(files.cache / "env")) == 1
  load(files, cache_dir=files.cache / "given")
  assert len(cache_files(files.cache / "given")) == 1


def hub(monkeypatch, train=TRAIN):
  columns = lambda examples: {
    "text": [text_of(e) for e in examples],
    "label": [e[0] for e in examples],
  }
  fake = types.ModuleType("datasets")
  fake.load_dataset = lambda name: {"train": columns(train), "test": columns(TEST)}
  monkeypatch.setitem(sys.modules, "datasets", fake)


def test_hub_data_is_cached_by_its_content(files, calls, monkeypatch):
  hub(monkeypatch)
  from_hub = agnews.load_agnews(None, files.vocab, 8, files.cache, progress=False)
  from_files = load(files)
  np.testing.assert_array_equal(from_hub.train.tokens_NxL, from_files.train.tokens_NxL)
  assert calls["tokenize"] == 4 and "from the hub" in from_hub.source
  again = agnews.load_agnews(None, files.vocab, 8, files.cache, progress=False)
  assert calls["tokenize"] == 4 and again.fingerprint == from_hub.fingerprint
  hub(monkeypatch, train=((0, "Cat world", "zebra"),) + TRAIN[1:])
  changed = agnews.load_agnews(None, files.vocab, 8, files.cache, progress=False)
  assert calls["tokenize"] == 6 and changed.fingerprint != from_hub.fingerprint


def test_no_data_and_no_hub_is_one_line_saying_what_to_download(files, monkeypatch):
  monkeypatch.setitem(sys.modules, "datasets", None)
  with pytest.raises(MissingTextData) as error:
    agnews.load_agnews(None, files.vocab, cache_dir=files.cache)
  assert "\n" not in str(error.value) and "--data DIR" in str(error.value)
  with pytest.raises(MissingTextData, match="does not exist"):
    agnews.load_agnews(files.data / "missing", files.vocab, cache_dir=files.cache)
  assert not files.cache.exists()


def test_the_hub_tokenizer_is_keyed_by_name_and_not_loaded_on_a_cache_hit(files, monkeypatch):
  import tokenizers

  from_file = tokens.load_tokenizer(tokens.find_tokenizer(files.vocab))
  loads = []

  class Hub:
    @staticmethod
    def from_pretrained(name):
      loads.append(name)
      return from_file

  monkeypatch.setattr(tokenizers, "Tokenizer", Hub)
  first = agnews.load_agnews(files.data, None, 8, files.cache, progress=False)
  second = agnews.load_agnews(files.data, None, 8, files.cache, progress=False)
  assert loads == ["distilbert-base-uncased"]
  assert first.fingerprint == second.fingerprint and "(hub)" in second.source
  assert os.path.basename(files.vocab) not in second.source
