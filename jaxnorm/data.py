"""The tasks a model trains on: the synthetic "low-rank associative recall" task of
Experiments 1-3, exactly as the reference builds it, and a text-classification data set
(Experiment 4's AG News: `TextTask`, `TextArrays`), with one way to ask either for a batch
(`batch`, `training_batch`).

The synthetic task.

Per example, `theoretical_rank` (40) distinct keys are drawn without replacement from the
`num_keys` (400) keys. The first drawn key is the query; the other 39 fill positions
0..38; position 39 keeps the value 0 (the reference allocates a zero tensor and never
writes there, so it reads as key 0); the query sits at the last position, 40; the label
is the query.

What this asks of the model: the label is the query token itself, visible at the last
position, and the 39 context keys never contain it. The task is therefore to copy the
last token through the block, not to recall an association from the context.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import jax
import jax.numpy as jnp

from jaxnorm import epochs


class TaskShape(Protocol):
  """What a batch needs to know: a `Task`, or a `jaxnorm.Config` (which has the same names)."""

  num_keys: int
  theoretical_rank: int
  batch_size: int


class Task(NamedTuple):
  """The sizes that fix a batch's shape: hashable, so it is a cheap static jit argument.

  `Config.task` gives the Task of a config; jitted functions take this instead of the
  whole Config, so that changing a seed or a landscape option does not recompile training.
  """

  num_keys: int  # keys 0 .. num_keys - 1 (400)
  theoretical_rank: int  # distinct keys drawn per example (40)
  batch_size: int  # examples per batch (128)

  @property
  def seq_len(self) -> int:
    """Context keys, one padding 0, the query: theoretical_rank + 1 (41)."""
    return self.theoretical_rank + 1


class TextShape(NamedTuple):
  """What a run records of the text data set it trains on (`Config.text`): its name, its
  sizes and the fingerprint of its token arrays (`agnews.TextDataset.fingerprint`), so a
  saved run says which data made it and processes of one run check they hold the same."""

  name: str  # "agnews"
  vocab_size: int  # the tokenizer's vocabulary (30,522 for distilbert-base-uncased)
  seq_len: int  # tokens per example (128)
  num_train: int  # training examples used (120,000; fewer for a subset)
  num_test: int  # test examples used (7,600)
  num_classes: int  # 4
  fingerprint: str  # hex digest of the token arrays' source and selection


def text_config_error(
  text: TextShape, num_classes: int | None, batch_size: int, steps: int, mixes_batch: bool
) -> tuple[str, object, str] | None:
  """Why a config cannot train on `text`, as (field, value, what is allowed), or None:
  sizes below 1, a readout of another size than the data's classes, steps that are not
  whole epochs (the running training accuracy is per epoch), or a norm that mixes the rows
  of a batch (`mixes_batch`) where an epoch's last batch is padded (`jaxnorm.epochs`)."""
  for name in ("vocab_size", "seq_len", "num_train", "num_test", "num_classes"):
    if getattr(text, name) < 1:
      return "text", text, f"its {name} must be an integer >= 1"
  if num_classes is not None and num_classes != text.num_classes:
    return "num_classes", num_classes, f"must be None or the data's {text.num_classes} classes"
  per_epoch = -(-text.num_train // batch_size)  # ceil(N / B)
  if steps % per_epoch:
    return (
      "steps",
      steps,
      (
        f"must be whole epochs: a multiple of {per_epoch} (ceil({text.num_train} examples / "
        f"batch {batch_size}))"
      ),
    )
  if mixes_batch and text.num_train % batch_size:
    return (
      "norms",
      "batchnorm",
      (
        f"a batch-statistics norm would normalize the last batch of each epoch "
        f"({text.num_train} examples in batches of {batch_size}) together with the rows "
        "that pad it to the batch size: choose a batch size that divides the examples, or "
        "another norm"
      ),
    )
  return None


class TextTask(NamedTuple):
  """The sizes of a text-classification data set held on the device (`TextArrays`):
  hashable, a static jit argument like `Task`. `Config.task` gives it for a config whose
  `text` is set. Training takes its batches in epochs (`jaxnorm.epochs`)."""

  num_train: int  # N, training examples
  num_test: int  # test examples
  seq_len: int  # L, tokens per example
  batch_size: int  # B, examples per batch

  @property
  def plan(self) -> epochs.EpochPlan:
    """How the N training examples are cut into batches of B."""
    return epochs.EpochPlan(self.num_train, self.batch_size)


class TextArrays(NamedTuple):
  """A text data set's token rows and labels, on the device: an argument of the compiled
  programs, never a static one. Shapes as its `TextTask` says."""

  train_tokens: jax.Array  # (N, L) int32 token ids
  train_labels: jax.Array  # (N,) int32 classes
  test_tokens: jax.Array  # (N_test, L) int32
  test_labels: jax.Array  # (N_test,) int32


def text_arrays_shape(task: TextTask, sharding=None) -> TextArrays:
  """The `jax.ShapeDtypeStruct`s of `task`'s arrays (for ahead-of-time compilation)."""

  def struct(*shape):
    return jax.ShapeDtypeStruct(shape, jnp.int32, sharding=sharding)

  return TextArrays(
    struct(task.num_train, task.seq_len),
    struct(task.num_train),
    struct(task.num_test, task.seq_len),
    struct(task.num_test),
  )


def check_text_arrays(task: TextTask, arrays: TextArrays) -> None:
  """Raises ValueError unless `arrays` have the shapes `task` says and integer dtypes."""
  expected = text_arrays_shape(task)
  for name, want, got in zip(TextArrays._fields, expected, arrays, strict=True):
    if tuple(got.shape) != want.shape or not jnp.issubdtype(got.dtype, jnp.integer):
      raise ValueError(
        f"TextArrays.{name} is {got.dtype}{list(got.shape)}: the task {task} needs integers "
        f"of shape {list(want.shape)}"
      )


def batch(
  key: jax.Array,
  cfg: TaskShape | TextTask,
  batch_size: int | None = None,
  arrays: TextArrays | None = None,
) -> tuple[jax.Array, jax.Array]:
  """One batch: (tokens_BxL int32, labels_B int32), B = cfg.batch_size by default.

  For a `TextTask` (which needs its `arrays`), the first B training examples of the order
  `jax.random.permutation(key, N)`: the first batch of a shuffled pass, as the reference
  takes its analysis batch. For the synthetic task, as follows.

  The distinct keys come from the top-k of i.i.d. uniforms over all keys, which is a
  uniformly random ordered draw without replacement, done on the device for the whole
  batch at once.
  """
  b = cfg.batch_size if batch_size is None else batch_size
  if isinstance(cfg, TextTask):
    if arrays is None:
      raise ValueError("a text task's batch needs its arrays (data.TextArrays)")
    indices_B = jax.random.permutation(key, cfg.num_train)[: min(b, cfg.num_train)]
    return arrays.train_tokens[indices_B], arrays.train_labels[indices_B]
  scores_BxK = jax.random.uniform(key, (b, cfg.num_keys), jnp.float32)  # float32 under x64 too
  _, drawn_BxR = jax.lax.top_k(scores_BxK, cfg.theoretical_rank)
  # The barrier changes no value. Without it XLA folds the slices below into the sort
  # that top_k lowers to, which then no longer matches its TopK kernel: on CPU the batch
  # would come from a full sort of every row, about 4x slower.
  drawn_BxR = jax.lax.optimization_barrier(drawn_BxR.astype(jnp.int32))
  query_B = drawn_BxR[:, 0]
  padding_Bx1 = jnp.zeros((b, 1), jnp.int32)
  tokens_BxL = jnp.concatenate([drawn_BxR[:, 1:], padding_Bx1, query_B[:, None]], axis=1)
  return tokens_BxL, query_B


def batch_at(data_key: jax.Array, step: int | jax.Array, cfg: TaskShape):
  """Batch number `step` (0-based) of a training run whose batches come from `data_key`:
  `batch(fold_in(data_key, step), cfg)`. Training draws every batch this way, so batch t
  depends only on the run's data key and t, never on how the steps are chunked.
  `jaxnorm.train.training_batch` gives it from a run's training key."""
  return batch(jax.random.fold_in(data_key, step), cfg)


def training_batch(
  data_key: jax.Array,
  step: int | jax.Array,
  task: TaskShape | TextTask,
  arrays: TextArrays | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """What training step `step` trains on: (tokens_BxL, labels_B, weights_B or None).

  The synthetic task: `batch_at`, no weights (every row counts). A `TextTask`: batch
  `step` of the epochs over its training arrays (`epochs.batch_at`), with weights 0 on the
  rows that pad an epoch's last batch to B.
  """
  if isinstance(task, TextTask):
    if arrays is None:
      raise ValueError("a text task's batch needs its arrays (data.TextArrays)")
    return epochs.batch_at(data_key, step, task.plan, arrays.train_tokens, arrays.train_labels)
  return (*batch_at(data_key, step, task), None)
