import chex
import jax
import numpy as np

from jaxnorm import config, data, model, spectrum, train


def test_singular_values_equal_numpy_and_are_sorted(key):
  x = jax.random.normal(key, (50, 12)) @ jax.random.normal(jax.random.key(1), (12, 12))
  s = spectrum.singular_values(x)
  np.testing.assert_allclose(s, np.linalg.svd(np.asarray(x), compute_uv=False), rtol=1e-4)
  assert np.all(np.diff(np.asarray(s)) <= 0)


def test_known_spectrum():
  x = np.zeros((6, 3), np.float32)
  x[0, 0], x[1, 1], x[2, 2] = 3.0, -2.0, 0.5
  np.testing.assert_allclose(spectrum.singular_values(x), [3.0, 2.0, 0.5], rtol=1e-6)


def test_activation_spectrum_of_the_block_output(key):
  cfg = config.TINY
  m = model.build(cfg, "batchnorm")
  state = train.init_state(m, cfg.task, key, 1e-3)
  tokens, _ = data.batch(jax.random.key(3), cfg)
  acts = spectrum.block_activations(m, state.params, state.batch_stats, tokens)
  chex.assert_shape(acts, (cfg.batch_size * cfg.seq_len, cfg.embed_dim))
  feats = m.apply(
    {"params": state.params, "batch_stats": state.batch_stats},
    tokens,
    train=False,
    method=model.Transformer.features,
  )
  np.testing.assert_allclose(
    acts, np.asarray(feats).reshape(-1, cfg.embed_dim), rtol=1e-5, atol=1e-6
  )
  s = spectrum.activation_spectrum(m, state.params, state.batch_stats, tokens)
  chex.assert_shape(s, (cfg.embed_dim,))
  np.testing.assert_allclose(s, np.linalg.svd(np.asarray(acts), compute_uv=False), rtol=1e-4)
