import chex
import jax
import numpy as np
import pytest

from jaxnorm import config, data, model, train

NORMS = ("layernorm", "batchnorm", "none")


def _setup(cfg, norm, key):
  m = model.build(cfg, norm)
  tx = train.optimizer(cfg.learning_rate_for(norm))
  return m, tx, train.init_state(m, tx, cfg, key)


@pytest.mark.parametrize("norm", NORMS)
def test_train_step_compiles_once_and_updates_state(norm, key):
  cfg = config.TINY
  m, tx, state = _setup(cfg, norm, key)
  chex.clear_trace_counter()

  @jax.jit
  @chex.assert_max_traces(n=1)
  def step(state, tokens, labels):
    return train.train_step(m, tx, state, tokens, labels)

  tokens, labels = data.batch(key, cfg)
  new_state, loss = step(state, tokens, labels)
  new_state, loss = step(new_state, *data.batch(jax.random.key(1), cfg))
  chex.assert_shape(loss, ())
  chex.assert_tree_all_finite((new_state.params, new_state.batch_stats, new_state.opt_state))
  assert int(new_state.step) == 2
  changed = jax.tree.map(lambda a, b: not np.array_equal(a, b), state.params, new_state.params)
  assert all(jax.tree.leaves(changed))
  if norm == "batchnorm":
    chex.assert_trees_all_equal_shapes(state.batch_stats, new_state.batch_stats)
    assert not np.allclose(
      state.batch_stats["transformer_block"]["norm1"]["mean"],
      new_state.batch_stats["transformer_block"]["norm1"]["mean"],
    )


def test_train_returns_full_history_and_is_deterministic():
  cfg = config.TINY.replace(steps=25)
  a = train.train(cfg, "batchnorm", jax.random.key(0), chunk_size=10, progress=False)
  b = train.train(cfg, "batchnorm", jax.random.key(0), chunk_size=7, progress=False)
  c = train.train(cfg, "batchnorm", jax.random.key(1), chunk_size=10, progress=False)
  chex.assert_shape(a.losses, (25,))
  assert int(a.state.step) == 25
  # The chunking does not change what is computed.
  np.testing.assert_allclose(a.losses, b.losses, rtol=1e-6)
  chex.assert_trees_all_close(a.state.params, b.state.params, rtol=1e-5, atol=1e-6)
  assert not np.allclose(a.losses, c.losses)
  assert a.first_nonfinite_step is None


@pytest.mark.parametrize("norm", NORMS)
def test_loss_falls_on_a_tiny_task(norm):
  cfg = config.TINY.replace(steps=80, learning_rate=1e-2, learning_rate_overrides=())
  result = train.train(cfg, norm, jax.random.key(0), chunk_size=80, progress=False)
  assert result.losses[-10:].mean() < 0.5 * result.losses[:10].mean()


def test_divergence_is_detected():
  losses = np.array([1.0, 0.5, np.nan, np.inf], np.float32)
  assert train.first_nonfinite(losses) == 2
  assert train.first_nonfinite(np.ones(3)) is None
  cfg = config.TINY.replace(steps=10, learning_rate=1e6, learning_rate_overrides=())
  result = train.train(cfg, "none", jax.random.key(0), progress=False)
  assert result.first_nonfinite_step is not None


def test_eval_loss_leaves_batch_stats_alone(key):
  cfg = config.TINY
  m, _, state = _setup(cfg, "batchnorm", key)
  tokens, labels = data.batch(key, cfg)
  loss = train.eval_loss(m, state.params, state.batch_stats, tokens, labels)
  chex.assert_shape(loss, ())
  np.testing.assert_allclose(loss, np.log(cfg.vocab_size), rtol=0.3)


def test_bad_chunk_size():
  with pytest.raises(ValueError, match="chunk_size"):
    train.train(config.TINY, "none", jax.random.key(0), chunk_size=0)


def test_jitted_init_equals_eager(key):
  cfg = config.TINY
  m, tx, state = _setup(cfg, "batchnorm", key)
  jitted = train.init_state_jit(m, tx, cfg, key)
  chex.assert_trees_all_equal(
    (state.params, state.batch_stats, state.opt_state),
    (jitted.params, jitted.batch_stats, jitted.opt_state),
  )
  np.testing.assert_array_equal(
    jax.random.key_data(state.data_key), jax.random.key_data(jitted.data_key)
  )
