"""Small AG News files in the dataset's own layouts and a hand-built WordPiece vocabulary, for
the tests of the text data (`jaxnorm.text_data`, `jaxnorm.tokens`, `jaxnorm.agnews`). All
sentences are invented; nothing here touches the network."""

from pathlib import Path

# (label 0-3, title, description): every class, and titles with commas and quotes.
TRAIN = (
  (2, "Stocks rise, again", "The market sat on news."),
  (0, 'World "news"', "The cat sat on the mat."),
  (1, "Team winning", "Sports team win, again"),
  (3, "New chip", "The new phone's chip"),
  (0, "Cat world", "zebra news"),
)
TEST = (
  (1, "Sport news", "The team sat."),
  (3, "Phone", "A new chip, a new phone"),
)

# The vocabulary, one entry a line; the id of an entry is its line number from 0. [PAD] is
# not 0 (distilbert-base-uncased has it there), so a test sees whether its id is looked up.
VOCAB = (
  *("the", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]", "cat", "sat", "on", "mat", ","),
  *(".", '"', "stock", "##s", "rise", "team", "win", "##ning", "news", "world", "sport"),
  *("market", "new", "phone", "chip", "'", "again", "a"),
)
ID = {token: i for i, token in enumerate(VOCAB)}
CLS, SEP, PAD, UNK = ID["[CLS]"], ID["[SEP]"], ID["[PAD]"], ID["[UNK]"]


def text_of(example: tuple[int, str, str]) -> str:
  """The text AG News gives an example: title and description joined by a space."""
  return f"{example[1]} {example[2]}"


def quoted(field: str) -> str:
  """A CSV field as the original files write it: in quotes, a quote doubled."""
  return '"' + field.replace('"', '""') + '"'


def write_csv(folder: Path, train=TRAIN, test=TEST) -> Path:
  """train.csv and test.csv in the original layout (class index 1-4, title, description)."""
  folder.mkdir(parents=True, exist_ok=True)
  for name, examples in (("train", train), ("test", test)):
    lines = [",".join((quoted(str(y + 1)), quoted(t), quoted(d))) for y, t, d in examples]
    (folder / f"{name}.csv").write_text("".join(line + "\n" for line in lines), encoding="utf-8")
  return folder


def write_parquet_file(path: Path, texts: list, labels: list) -> Path:
  """One parquet file with the hub's columns: text (string) and label (int64)."""
  import pyarrow as pa
  import pyarrow.parquet as pq

  path.parent.mkdir(parents=True, exist_ok=True)
  table = pa.table({"text": pa.array(texts, pa.string()), "label": pa.array(labels, pa.int64())})
  pq.write_table(table, path)
  return path


def write_parquet(folder: Path, train=TRAIN, test=TEST, place: str = "data/") -> Path:
  """The hub's layout: `<place>train-00000-of-00001.parquet` and the test file alike; with
  place "" at the top of the folder, with "split/" in train/ and test/ folders."""
  for name, examples in (("train", train), ("test", test)):
    where = f"{name}/" if place == "split/" else place
    path = folder / f"{where}{name}-00000-of-00001.parquet"
    write_parquet_file(path, [text_of(e) for e in examples], [e[0] for e in examples])
  return folder


def write_vocab(path: Path, vocab=VOCAB) -> Path:
  """A vocab.txt: one WordPiece entry a line."""
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text("".join(token + "\n" for token in vocab), encoding="utf-8")
  return path


def write_tokenizer_json(path: Path, vocab=VOCAB, post_processor: bool = True) -> Path:
  """A tokenizer.json built piece by piece as distilbert-base-uncased's is: BERT's lower-casing
  normalizer and pre-tokenizer, WordPiece with "##" continuations, and the template
  "[CLS] $A [SEP]" (left out with `post_processor=False`)."""
  from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
  from tokenizers.models import WordPiece

  ids = {token: i for i, token in enumerate(vocab)}
  tokenizer = Tokenizer(WordPiece(ids, unk_token="[UNK]", continuing_subword_prefix="##"))
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  if post_processor:
    special = [(token, ids[token]) for token in ("[CLS]", "[SEP]")]
    tokenizer.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", special_tokens=special
    )
  path.parent.mkdir(parents=True, exist_ok=True)
  tokenizer.save(str(path))
  return path
