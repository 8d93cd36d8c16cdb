import chex
import jax
import jax.numpy as jnp
import numpy as np

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
