import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import config, data, landscape, loss, model, norms, train

NORMS = sorted(norms.REGISTRY)

_init_state = jax.jit(train.init_state, static_argnums=(0, 1))
_train_steps = jax.jit(train.train_steps, static_argnums=(0, 1, 3, 4))


@functools.partial(jax.jit, static_argnums=(0, 7))
def _model_slice(
  m, params, batch_stats, d, tokens, labels, offsets, chunk_size=landscape.DEFAULT_CHUNK
):
  """Evaluation-mode loss of `m` on one batch along `d`, one compiled call."""
  loss_fn = loss.eval_loss_fn(m, batch_stats, tokens, labels)
  return landscape.loss_slice(loss_fn, params, d, offsets, chunk_size)


class _Trained(dict):
  """norm -> (model, state after `cfg.steps` steps), each trained when first asked for: a
  worker trains only the models of the tests it runs."""

  def __init__(self, cfg):
    super().__init__()
    self.cfg = cfg

  def __missing__(self, norm):
    m = model.build(self.cfg, norm)
    state = _init_state(m, self.cfg.task, jax.random.key(0), self.cfg.learning_rate_for(norm))
    state, _ = _train_steps(m, self.cfg.task, state, self.cfg.steps, True)
    self[norm] = (m, state)
    return self[norm]


@pytest.fixture(scope="module")
def trained():
  cfg = config.TINY.replace(steps=20)
  return cfg, _Trained(cfg)


def test_direction_has_unit_global_norm_and_param_structure(key):
  params = {"a": jnp.ones((3, 4)), "b": {"c": jnp.zeros((5,))}}
  d = landscape.random_direction(key, params)
  chex.assert_trees_all_equal_shapes(d, params)
  np.testing.assert_allclose(optax.tree.norm(d), 1.0, rtol=1e-6)
  assert not np.allclose(d["a"], d["a"][0, 0])  # Gaussian, not constant


def test_reference_alphas():
  a = landscape.alphas(40, 0.5)
  np.testing.assert_allclose(a, np.linspace(-0.5, 0.5, 40), rtol=1e-6)
  np.testing.assert_allclose(landscape.offsets(a, cumulative=True), np.cumsum(a), atol=1e-6)
  chex.assert_trees_all_equal(landscape.offsets(a), a)


@pytest.mark.parametrize("norm", NORMS)
def test_slice_at_zero_is_the_trained_eval_loss(trained, norm, key):
  cfg, models = trained
  m, state = models[norm]
  tokens, labels = data.batch(key, cfg)
  d = landscape.random_direction(jax.random.key(5), state.params)
  values = _model_slice(
    m, state.params, state.batch_stats, d, tokens, labels, jnp.array([0.0, 0.1])
  )
  base = loss.eval_loss(m, state.params, state.batch_stats, tokens, labels)
  np.testing.assert_allclose(values[0], base, rtol=1e-6)
  assert values[1] != values[0]


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 16])
def test_vmapped_slice_equals_a_python_loop(trained, chunk_size, key):
  cfg, models = trained
  m, state = models["batchnorm"]
  tokens, labels = data.batch(key, cfg)
  d = landscape.random_direction(jax.random.key(5), state.params)
  offs = landscape.alphas(7, 0.5)
  values = _model_slice(m, state.params, state.batch_stats, d, tokens, labels, offs, chunk_size)
  loop = [
    loss.eval_loss(
      m,
      jax.tree.map(lambda p, u, t=t: p + t * u, state.params, d),
      state.batch_stats,
      tokens,
      labels,
    )
    for t in offs
  ]
  np.testing.assert_allclose(values, np.array(loop), rtol=1e-5, atol=1e-6)


def test_cumulative_option_equals_evaluation_at_cumsum(trained, key):
  cfg, models = trained
  m, state = models["layernorm"]
  tokens, labels = data.batch(key, cfg)
  d = landscape.random_direction(jax.random.key(5), state.params)
  a = landscape.alphas(7, 0.5)
  cumulative = _model_slice(
    m, state.params, state.batch_stats, d, tokens, labels, landscape.offsets(a, cumulative=True)
  )
  at_cumsum = _model_slice(
    m, state.params, state.batch_stats, d, tokens, labels, jnp.asarray(np.cumsum(np.asarray(a)))
  )
  np.testing.assert_allclose(cumulative, at_cumsum, rtol=1e-5)
  # ... and it is the reference's loop: add alpha * d each time, never restore.
  params, loop = state.params, []
  for t in np.asarray(a):
    params = jax.tree.map(lambda p, u, t=t: p + t * u, params, d)
    loop.append(loss.eval_loss(m, params, state.batch_stats, tokens, labels))
  np.testing.assert_allclose(cumulative, np.array(loop), rtol=1e-4, atol=1e-5)


def test_slice_leaves_batch_stats_untouched(trained, key):
  cfg, models = trained
  m, state = models["batchnorm"]
  before = jax.tree.map(np.array, state.batch_stats)
  tokens, labels = data.batch(key, cfg)
  d = landscape.random_direction(key, state.params)
  _model_slice(m, state.params, state.batch_stats, d, tokens, labels, landscape.alphas(5, 0.5))
  chex.assert_trees_all_equal(before, jax.tree.map(np.array, state.batch_stats))


def test_loss_slice_on_a_parabola():
  """L(w) = |w|^2 along a unit direction from w = 0 is t^2."""
  d = {"w": jnp.array([0.6, 0.8])}
  t = jnp.linspace(-2, 2, 9)
  values = landscape.loss_slice(lambda p: jnp.sum(p["w"] ** 2), {"w": jnp.zeros(2)}, d, t, 4)
  np.testing.assert_allclose(values, t**2, rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [None, 1, 3, 4, 7, 10])
def test_chunked_map_equals_vmap_on_a_pytree(chunk_size):
  xs = {"a": jnp.arange(7.0), "b": jnp.arange(14.0).reshape(7, 2)}
  f = lambda x: {"s": 2.0 * x["a"], "t": jnp.sum(x["b"]) + x["a"]}
  chex.assert_trees_all_close(landscape.chunked_map(f, xs, chunk_size), jax.vmap(f)(xs))
