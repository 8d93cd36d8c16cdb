import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import config, data


def test_shapes_and_dtypes(key):
  cfg = config.PAPER
  tokens, labels = data.batch(key, cfg)
  chex.assert_shape(tokens, (128, 41))
  chex.assert_shape(labels, (128,))
  assert tokens.dtype == labels.dtype == jnp.int32


def test_task_invariants_on_many_batches():
  cfg = config.PAPER
  keys = jax.random.split(jax.random.key(1), 20)
  tokens, labels = jax.vmap(lambda k: data.batch(k, cfg))(keys)
  tokens = np.asarray(tokens).reshape(-1, cfg.seq_len)
  labels = np.asarray(labels).reshape(-1)
  context, pad, query = tokens[:, :39], tokens[:, 39], tokens[:, 40]
  np.testing.assert_array_equal(labels, query)  # the label is the last token
  np.testing.assert_array_equal(pad, 0)  # position 39 keeps the reference's 0
  drawn = np.concatenate([context, query[:, None]], axis=1)
  assert all(len(set(row)) == cfg.theoretical_rank for row in drawn)  # distinct keys
  assert not np.any(context == query[:, None])  # the query never appears in the context
  assert drawn.min() >= 0 and drawn.max() < cfg.num_keys  # never the two spare tokens
  # Every key shows up in the context.
  assert np.bincount(context.ravel(), minlength=cfg.num_keys).min() > 0


def test_queries_are_uniform_over_keys():
  cfg = config.TINY  # 36 keys
  _, labels = data.batch(jax.random.key(2), cfg, batch_size=36 * 500)
  counts = np.bincount(np.asarray(labels), minlength=cfg.num_keys)
  expected = 500
  chi2 = ((counts - expected) ** 2 / expected).sum()
  assert chi2 < 80  # 35 degrees of freedom: p ~ 1e-5


def test_deterministic_in_the_key():
  cfg = config.TINY
  a = data.batch(jax.random.key(3), cfg)
  b = data.batch(jax.random.key(3), cfg)
  c = data.batch(jax.random.key(4), cfg)
  chex.assert_trees_all_equal(a, b)
  assert not np.array_equal(a[0], c[0])


def test_jittable():
  cfg = config.TINY
  tokens, _ = jax.jit(data.batch, static_argnums=(1, 2))(jax.random.key(0), cfg, 5)
  chex.assert_shape(tokens, (5, cfg.seq_len))


def test_draw_is_the_stable_descending_order_of_the_uniforms(key):
  """The batch is exactly the top-k of the uniforms, ties to the lower key (as a stable
  sort), whichever kernel XLA picks for it."""
  cfg = config.PAPER
  tokens, labels = data.batch(key, cfg)
  scores = np.asarray(jax.random.uniform(key, (cfg.batch_size, cfg.num_keys)))
  drawn = np.argsort(-scores, axis=1, kind="stable")[:, : cfg.theoretical_rank]
  np.testing.assert_array_equal(labels, drawn[:, 0])
  np.testing.assert_array_equal(tokens[:, : cfg.theoretical_rank - 1], drawn[:, 1:])


# A text task's batches: rows of its training arrays. Row i of these arrays is recognizable:
# its tokens are i, i + 1, ... and its label i mod 4.
TEXT_TASK = data.TextTask(num_train=10, num_test=3, seq_len=5, batch_size=4)


def _text_arrays(task: data.TextTask) -> data.TextArrays:
  rows = np.arange(task.num_train, dtype=np.int32)[:, None] + np.arange(task.seq_len)
  test = np.zeros((task.num_test, task.seq_len), np.int32)
  labels = np.arange(task.num_train, dtype=np.int32) % 4
  return data.TextArrays(rows, labels, test, np.zeros(task.num_test, np.int32))


def _row_indices(tokens_BxL, labels_B, arrays) -> np.ndarray:
  """Which training rows a batch holds; fails unless each is a row with its own label."""
  tokens_BxL, labels_B = np.asarray(tokens_BxL), np.asarray(labels_B)
  rows_B = tokens_BxL[:, 0]
  np.testing.assert_array_equal(tokens_BxL, np.asarray(arrays.train_tokens)[rows_B])
  np.testing.assert_array_equal(labels_B, np.asarray(arrays.train_labels)[rows_B])
  return rows_B


def test_a_text_batch_is_the_first_rows_of_a_shuffled_pass():
  arrays = _text_arrays(TEXT_TASK)
  key = jax.random.key(7)
  rows = _row_indices(*data.batch(key, TEXT_TASK, arrays=arrays), arrays)
  assert len(rows) == TEXT_TASK.batch_size == len(set(rows.tolist()))  # no example twice
  order = np.asarray(jax.random.permutation(key, TEXT_TASK.num_train))
  np.testing.assert_array_equal(rows, order[: TEXT_TASK.batch_size])
  other = _row_indices(*data.batch(jax.random.key(8), TEXT_TASK, arrays=arrays), arrays)
  assert not np.array_equal(rows, other)
  # a batch larger than the data set is every example once
  whole = _row_indices(*data.batch(key, TEXT_TASK, batch_size=25, arrays=arrays), arrays)
  assert sorted(whole.tolist()) == list(range(TEXT_TASK.num_train))
  with pytest.raises(ValueError, match="arrays"):
    data.batch(key, TEXT_TASK)


def test_text_training_batches_weigh_zero_only_the_padding_of_an_epochs_last_batch():
  """10 examples in batches of 4: 3 steps an epoch, the third with 2 real rows."""
  arrays, key = _text_arrays(TEXT_TASK), jax.random.key(3)
  steps, last = TEXT_TASK.plan.steps_per_epoch, TEXT_TASK.plan.last_batch_size
  assert (steps, last) == (3, 2)
  for epoch in range(2):
    real = []
    for i in range(steps):
      tokens_BxL, labels_B, weights_B = data.training_batch(
        key, epoch * steps + i, TEXT_TASK, arrays
      )
      rows = _row_indices(tokens_BxL, labels_B, arrays)
      expected = [1.0] * TEXT_TASK.batch_size if i < steps - 1 else [1.0] * last + [0.0] * 2
      np.testing.assert_array_equal(weights_B, expected)
      real += rows[np.asarray(weights_B) == 1].tolist()
    assert sorted(real) == list(range(TEXT_TASK.num_train))  # each example once an epoch
  with pytest.raises(ValueError, match="arrays"):
    data.training_batch(key, 0, TEXT_TASK)
  # the synthetic task's batches have no weights: every row counts
  assert data.training_batch(key, 0, config.TINY.task)[2] is None
