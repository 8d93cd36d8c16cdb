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

import jax
import jax.numpy as jnp

from jaxnorm.config import Config


def batch(
  key: jax.Array, cfg: Config, batch_size: int | None = None
) -> tuple[jax.Array, jax.Array]:
  """One batch: (tokens_BxL int32, labels_B int32), B = cfg.batch_size by default.

  The distinct keys come from the top-k of i.i.d. uniforms over all keys, which is a
  uniformly random ordered draw without replacement, done on the device for the whole
  batch at once.
  """
  b = cfg.batch_size if batch_size is None else batch_size
  scores_BxK = jax.random.uniform(key, (b, cfg.num_keys))
  _, drawn_BxR = jax.lax.top_k(scores_BxK, cfg.theoretical_rank)
  # The barrier changes no value. Without it XLA folds the slices below into the sort
  # that top_k lowers to, which then no longer matches its TopK kernel: on CPU the batch
  # would come from a full sort of every row, about 4x slower.
  drawn_BxR = jax.lax.optimization_barrier(drawn_BxR.astype(jnp.int32))
  query_B = drawn_BxR[:, 0]
  padding_Bx1 = jnp.zeros((b, 1), jnp.int32)
  tokens_BxL = jnp.concatenate([drawn_BxR[:, 1:], padding_Bx1, query_B[:, None]], axis=1)
  return tokens_BxL, query_B
