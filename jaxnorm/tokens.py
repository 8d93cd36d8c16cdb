"""The WordPiece tokenizer of Experiment 4 and texts turned into fixed-length token arrays.

The paper tokenizes AG News with `distilbert-base-uncased`'s tokenizer (WordPiece, lower-cased,
30,522 entries) to 128 tokens, as `transformers`' `tokenizer(texts, padding="max_length",
truncation=True, max_length=128)` does: `[CLS]` first, `[SEP]` after the last kept token,
then `[PAD]` up to the length; a longer text is cut so that `[CLS] ... [SEP]` fills it.

A tokenizer comes from (`find_tokenizer`, `load_tokenizer`):
- a `tokenizer.json` file (`tokenizers.Tokenizer.from_file`), as the hub stores it;
- a `vocab.txt` file (one WordPiece entry a line; `tokenizers.BertWordPieceTokenizer` with
  `lowercase=True`, which adds `[CLS]` and `[SEP]` as distilbert-base-uncased does);
- a folder holding either (tokenizer.json preferred);
- else the hub: `tokenizers.Tokenizer.from_pretrained("distilbert-base-uncased")`.
The vocabulary must hold `[PAD]`, `[CLS]` and `[SEP]`; padding uses `[PAD]`'s id from it.

Needs the `tokenizers` library (`pip install -e ".[text]"`), imported only when a tokenizer is
loaded; a missing one raises `MissingTextData`, as does a tokenizer that can be neither found
nor downloaded.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from jaxnorm.text_data import TEXT_EXTRA, MalformedTextData, MissingTextData, file_sha256

DEFAULT_TOKENIZER = "distilbert-base-uncased"
TOKENIZER_FILE = "tokenizer.json"
VOCAB_FILE = "vocab.txt"
PAD, CLS, SEP = "[PAD]", "[CLS]", "[SEP]"
CHUNK = 8192  # texts per encode_batch call: the progress bar's step


class TokenizerSource(NamedTuple):
  """Where a tokenizer comes from: a local file (`path`, of `kind` "tokenizer.json" or
  "vocab.txt") or, with `path` None, the hub model `hub_name`."""

  kind: str
  path: Path | None = None
  hub_name: str = DEFAULT_TOKENIZER

  def describe(self) -> str:
    return f"tokenizer {self.path}" if self.path else f"tokenizer {self.hub_name} (hub)"

  def fingerprint(self) -> str:
    """What a token cache is keyed by: a file's kind and content sha256, or the hub model's
    name (a cache hit then needs no network; a tokenizer changed on the hub under the same
    name is not noticed: give it as a file to key the cache by its content)."""
    if self.path is None:
      return f"hub {self.hub_name}"
    return f"{self.kind} {file_sha256(self.path)}"


def find_tokenizer(tokenizer: str | os.PathLike | None = None) -> TokenizerSource:
  """The tokenizer at `tokenizer` (a tokenizer.json or vocab.txt file, or a folder holding
  one), or the hub's distilbert-base-uncased for None. Looks at names only; reads nothing.

  Raises MissingTextData if the path does not exist or a folder holds neither file;
  MalformedTextData for a file that is neither kind.
  """
  if tokenizer is None:
    return TokenizerSource("hub")
  path = Path(tokenizer).expanduser()
  if path.is_dir():
    for name in (TOKENIZER_FILE, VOCAB_FILE):
      if (path / name).is_file():
        return TokenizerSource(name, path / name)
    raise MissingTextData(
      f"no {TOKENIZER_FILE} or {VOCAB_FILE} in --tokenizer {path}; download them from "
      f"https://huggingface.co/{DEFAULT_TOKENIZER} and pass the file or its folder"
    )
  if not path.is_file():
    raise MissingTextData(
      f"tokenizer not found: --tokenizer {path} does not exist; download {TOKENIZER_FILE} or "
      f"{VOCAB_FILE} from https://huggingface.co/{DEFAULT_TOKENIZER} and pass it"
    )
  if path.suffix == ".json":
    return TokenizerSource(TOKENIZER_FILE, path)
  if path.suffix == ".txt":
    return TokenizerSource(VOCAB_FILE, path)
  raise MalformedTextData(
    f"--tokenizer {path}: expected a {TOKENIZER_FILE} (.json) or a {VOCAB_FILE} (.txt) file"
  )


def load_tokenizer(source: TokenizerSource) -> Any:
  """The `tokenizers` tokenizer that `source` names (a `tokenizers.Tokenizer`, or for a
  vocab.txt a `BertWordPieceTokenizer`, which has the same methods), not yet configured.

  Raises MissingTextData if `tokenizers` is not installed or the hub's tokenizer can be
  neither downloaded nor found in its cache; MalformedTextData for a file it cannot read.
  """
  try:
    import tokenizers
  except ImportError:
    raise MissingTextData(
      f"tokenizing AG News needs the tokenizers library: {TEXT_EXTRA}"
    ) from None
  try:
    if source.path is None:
      return tokenizers.Tokenizer.from_pretrained(source.hub_name)
    if source.kind == VOCAB_FILE:
      # The class refuses a vocabulary without [CLS] or [SEP] in its own words: say it in ours.
      entries = [line.rstrip() for line in source.path.read_text(encoding="utf-8").split("\n")]
      require_special_tokens(entries, f"--tokenizer {source.path}: its vocabulary")
      return tokenizers.BertWordPieceTokenizer(str(source.path), lowercase=True)
    return tokenizers.Tokenizer.from_file(str(source.path))
  except MalformedTextData:
    raise
  except Exception as e:  # the library raises plain Exceptions: what went wrong is in the text
    first = (str(e).splitlines() or [""])[0][:200]
    cause = f"({type(e).__name__}: {first})"
    if source.path is None:
      raise MissingTextData(
        f"tokenizer not found: {source.hub_name} could not be loaded from the hub or its "
        f"cache {cause}; download its {TOKENIZER_FILE} (https://huggingface.co/"
        f"{source.hub_name}) and pass it with --tokenizer PATH"
      ) from None
    raise MalformedTextData(f"--tokenizer {source.path} cannot be read {cause}") from None


def configure_tokenizer(tokenizer: Any, max_length: int) -> int:
  """Sets `tokenizer` to truncate and pad every text to exactly `max_length` tokens, padding
  on the right with `[PAD]`; returns `[PAD]`'s id.

  Raises MalformedTextData if the vocabulary lacks `[PAD]`, `[CLS]` or `[SEP]`, or the
  tokenizer does not put `[CLS]` first and `[SEP]` last (a tokenizer.json without BERT's
  post-processor); ValueError if `max_length` < 2 (no room for `[CLS]` and `[SEP]`).
  """
  if max_length < 2:
    raise ValueError(f"max_length must be at least 2 ([CLS] and [SEP]), got {max_length}")
  ids = {token: tokenizer.token_to_id(token) for token in (PAD, CLS, SEP)}
  require_special_tokens([t for t, i in ids.items() if i is not None], "the tokenizer's vocabulary")
  tokenizer.enable_truncation(max_length=max_length)
  tokenizer.enable_padding(direction="right", pad_id=ids[PAD], pad_token=PAD, length=max_length)
  probe = tokenizer.encode("").ids  # nothing but the special tokens and padding
  expected = [ids[CLS], ids[SEP]] + [ids[PAD]] * (max_length - 2)
  if list(probe) != expected:
    raise MalformedTextData(
      f"the tokenizer encodes an empty text as {list(probe)[:4]}..., not [CLS] [SEP] [PAD]...: "
      "it does not add BERT's special tokens"
    )
  return ids[PAD]


def require_special_tokens(vocabulary: list[str], where: str) -> None:
  """Raises MalformedTextData if `vocabulary` (its entries) lacks [PAD], [CLS] or [SEP]."""
  missing = [token for token in (PAD, CLS, SEP) if token not in set(vocabulary)]
  if missing:
    raise MalformedTextData(f"{where} has no {', '.join(missing)}")


def tokenize(
  tokenizer: Any,
  texts: tuple[str, ...] | list[str],
  max_length: int,
  *,
  progress: bool = False,
  desc: str = "tokenizing",
) -> np.ndarray:
  """`texts` as tokens_NxL int32 (L = max_length), by a tokenizer `configure_tokenizer` set
  up for `max_length`, `encode_batch` over chunks of `CHUNK` texts. With `progress`, a bar
  on stderr if it takes over a second (120,000 texts of 40 words: about 7 s on two CPU cores).

  Raises ValueError if the tokenizer gives any other length (it was not configured).
  """
  from tqdm.auto import tqdm

  tokens_NxL = np.empty((len(texts), max_length), dtype=np.int32)
  with tqdm(total=len(texts), desc=desc, unit="text", disable=not progress, delay=1.0) as bar:
    for start in range(0, len(texts), CHUNK):
      encodings = tokenizer.encode_batch(list(texts[start : start + CHUNK]))
      lengths = {len(e.ids) for e in encodings}
      if lengths != {max_length}:
        raise ValueError(f"the tokenizer gave lengths {sorted(lengths)}, not {max_length}")
      tokens_NxL[start : start + len(encodings)] = [e.ids for e in encodings]
      bar.update(len(encodings))
  return tokens_NxL
