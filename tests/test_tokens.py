import sys

import numpy as np
import pytest
from text_files import CLS, ID, PAD, SEP, UNK, VOCAB, write_tokenizer_json, write_vocab

from jaxnorm import tokens
from jaxnorm.text_data import MalformedTextData, MissingTextData


def ready(path, max_length):
  """The tokenizer at `path`, configured for `max_length`, and [PAD]'s id."""
  tokenizer = tokens.load_tokenizer(tokens.find_tokenizer(path))
  return tokenizer, tokens.configure_tokenizer(tokenizer, max_length)


def ids(*pieces: str) -> list[int]:
  return [ID[piece] for piece in pieces]


def test_known_tokens_from_a_hand_built_vocabulary(tmp_path):
  """[CLS] first, lower-cased words and "##" pieces, [UNK] for a word the vocabulary cannot
  spell, [SEP] after the last, then [PAD] (id 5 here, not 0) up to the length."""
  tokenizer, pad_id = ready(write_vocab(tmp_path / "vocab.txt"), max_length=10)
  assert pad_id == PAD == 5
  texts = ["The Cat SAT.", "Stocks rise", "Winning team, zebra", ""]
  tokens_NxL = tokens.tokenize(tokenizer, texts, 10)
  assert tokens_NxL.dtype == np.int32 and tokens_NxL.shape == (4, 10)
  expected = [
    [CLS, *ids("the", "cat", "sat", "."), SEP] + [PAD] * 4,
    [CLS, *ids("stock", "##s", "rise"), SEP] + [PAD] * 5,
    [CLS, *ids("win", "##ning", "team", ","), UNK, SEP] + [PAD] * 3,
    [CLS, SEP] + [PAD] * 8,
  ]
  np.testing.assert_array_equal(tokens_NxL, expected)


def test_truncation_keeps_cls_first_and_sep_last(tmp_path):
  tokenizer, _ = ready(write_vocab(tmp_path / "vocab.txt"), max_length=6)
  tokens_NxL = tokens.tokenize(tokenizer, ["the cat sat on the mat.", "cat sat on the"], 6)
  expected = [
    [CLS, *ids("the", "cat", "sat", "on"), SEP],
    [CLS, *ids("cat", "sat", "on", "the"), SEP],  # exactly the length: nothing cut, no [PAD]
  ]
  np.testing.assert_array_equal(tokens_NxL, expected)


def test_vocab_txt_and_tokenizer_json_give_the_same_tokens(tmp_path):
  texts = ["The Cat SAT.", "Stocks rise, again", "Winning team, zebra", "a new phone's chip"]
  from_vocab, _ = ready(write_vocab(tmp_path / "vocab.txt"), max_length=8)
  from_json, _ = ready(write_tokenizer_json(tmp_path / "tokenizer.json"), max_length=8)
  np.testing.assert_array_equal(
    tokens.tokenize(from_vocab, texts, 8), tokens.tokenize(from_json, texts, 8)
  )


def test_a_folder_gives_its_tokenizer_json_first(tmp_path):
  write_vocab(tmp_path / "vocab.txt")
  assert tokens.find_tokenizer(tmp_path) == tokens.TokenizerSource(
    "vocab.txt", tmp_path / "vocab.txt"
  )
  write_tokenizer_json(tmp_path / "tokenizer.json")
  found = tokens.find_tokenizer(tmp_path)
  assert found == tokens.TokenizerSource("tokenizer.json", tmp_path / "tokenizer.json")
  assert tokens.find_tokenizer(None) == tokens.TokenizerSource(
    "hub", None, "distilbert-base-uncased"
  )


@pytest.mark.parametrize("left_out", ["[PAD]", "[CLS]", "[SEP]"])
def test_a_vocabulary_without_a_special_token_is_refused(tmp_path, left_out):
  path = write_vocab(tmp_path / "vocab.txt", [token for token in VOCAB if token != left_out])
  with pytest.raises(MalformedTextData) as error:
    ready(path, max_length=8)
  assert f"has no {left_out}" in str(error.value) and "\n" not in str(error.value)


def test_a_tokenizer_json_without_pad_is_refused(tmp_path):
  vocab = [token for token in VOCAB if token != "[PAD]"]
  with pytest.raises(MalformedTextData, match=r"has no \[PAD\]"):
    ready(write_tokenizer_json(tmp_path / "tokenizer.json", vocab), max_length=8)


def test_a_tokenizer_without_cls_and_sep_around_the_text_is_refused(tmp_path):
  path = write_tokenizer_json(tmp_path / "tokenizer.json", post_processor=False)
  with pytest.raises(MalformedTextData, match="does not add BERT's special tokens"):
    ready(path, max_length=8)


def test_a_missing_tokenizer_says_what_to_download(tmp_path):
  with pytest.raises(MissingTextData) as error:
    tokens.find_tokenizer(tmp_path / "vocab.txt")
  assert "--tokenizer" in str(error.value) and "does not exist" in str(error.value)
  with pytest.raises(MissingTextData) as error:
    tokens.find_tokenizer(tmp_path)
  assert "no tokenizer.json or vocab.txt" in str(error.value)
  (tmp_path / "model.bin").write_bytes(b"\0")
  with pytest.raises(MalformedTextData, match="expected a tokenizer.json"):
    tokens.find_tokenizer(tmp_path / "model.bin")
  (tmp_path / "broken.json").write_text("{not json")
  with pytest.raises(MalformedTextData, match="broken.json cannot be read"):
    tokens.load_tokenizer(tokens.find_tokenizer(tmp_path / "broken.json"))


def test_the_hub_tokenizer_unreachable_says_what_to_download_in_one_line(monkeypatch):
  import tokenizers

  class Offline:
    @staticmethod
    def from_pretrained(name):
      raise Exception(f"request error: {name}\nerror sending request")

  monkeypatch.setattr(tokenizers, "Tokenizer", Offline)
  with pytest.raises(MissingTextData) as error:
    tokens.load_tokenizer(tokens.find_tokenizer(None))
  message = str(error.value)
  assert "\n" not in message
  assert "request error: distilbert-base-uncased" in message
  assert "https://huggingface.co/distilbert-base-uncased" in message
  assert "--tokenizer PATH" in message


def test_without_the_tokenizers_library_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.setitem(sys.modules, "tokenizers", None)
  with pytest.raises(MissingTextData, match=r'pip install -e "\.\[text\]"'):
    tokens.load_tokenizer(tokens.find_tokenizer(write_vocab(tmp_path / "vocab.txt")))


def test_chunks_give_what_one_batch_gives(tmp_path, monkeypatch):
  tokenizer, _ = ready(write_vocab(tmp_path / "vocab.txt"), max_length=7)
  texts = [" ".join(["cat"] * (i % 6)) for i in range(11)]
  whole = tokens.tokenize(tokenizer, texts, 7)
  monkeypatch.setattr(tokens, "CHUNK", 3)
  np.testing.assert_array_equal(tokens.tokenize(tokenizer, texts, 7), whole)
  np.testing.assert_array_equal(
    (whole == ID["cat"]).sum(axis=1), [min(i % 6, 5) for i in range(11)]
  )


def test_a_length_without_room_for_cls_and_sep_is_refused(tmp_path):
  with pytest.raises(ValueError, match="at least 2"):
    ready(write_vocab(tmp_path / "vocab.txt"), max_length=1)


def test_an_unconfigured_tokenizer_is_caught(tmp_path):
  tokenizer = tokens.load_tokenizer(tokens.find_tokenizer(write_vocab(tmp_path / "vocab.txt")))
  with pytest.raises(ValueError, match="not 8"):
    tokens.tokenize(tokenizer, ["the cat", "the"], 8)
