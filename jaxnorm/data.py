"""The synthetic "low-rank associative recall" task, exactly as the reference builds it.

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


def batch(
  key: jax.Array, cfg: TaskShape, batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """One batch: (tokens_BxL int32, labels_B int32), B = cfg.batch_size by default.

  The distinct keys come from the top-k of i.i.d. uniforms over all keys, which is a
  uniformly random ordered draw without replacement, done on the device for the whole
  batch at once.
  """
  b = cfg.batch_size if batch_size is None else batch_size
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
