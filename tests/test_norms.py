import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import norms


def _x(key, shape=(4, 5, 8)):
  return 3.0 * jax.random.normal(key, shape) + 2.0


def test_registry_entries_share_one_signature(key):
  x = _x(key)
  for spec in norms.REGISTRY.values():
    module = spec.make()
    variables = module.init(key, x, train=False)
    for train in (False, True):
      y, _ = module.apply(variables, x, train=train, mutable=["batch_stats"])
      chex.assert_shape(y, x.shape)
      chex.assert_tree_all_finite(y)


def test_unknown_norm_is_a_clear_error():
  with pytest.raises(ValueError, match="choose from"):
    norms.get("groupnorm")


def test_layernorm_output_has_zero_mean_unit_variance_per_token(key):
  x = _x(key)
  module = norms.LayerNorm()
  y = module.apply(module.init(key, x, train=True), x, train=True)
  np.testing.assert_allclose(y.mean(-1), 0.0, atol=1e-5)
  # Biased variance, eps = 1e-5: var(y) = var(x) / (var(x) + eps).
  var_x = x.var(-1)
  np.testing.assert_allclose(y.var(-1), var_x / (var_x + 1e-5), rtol=1e-5)


def test_layernorm_uses_torch_eps(key):
  x = 1e-3 * jax.random.normal(key, (2, 3, 8))  # variance ~1e-6, comparable to eps
  module = norms.LayerNorm()
  y = module.apply(module.init(key, x, train=False), x, train=False)
  mean = x.mean(-1, keepdims=True)
  expected = (x - mean) / jnp.sqrt(x.var(-1, keepdims=True) + 1e-5)
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


def test_batchnorm_normalizes_each_feature_over_batch_and_sequence(key):
  x = _x(key)
  module = norms.BatchNorm()
  variables = module.init(key, x, train=False)
  y, _ = module.apply(variables, x, train=True, mutable=["batch_stats"])
  np.testing.assert_allclose(y.mean((0, 1)), 0.0, atol=1e-5)
  var_x = x.var((0, 1))
  np.testing.assert_allclose(y.var((0, 1)), var_x / (var_x + 1e-5), rtol=1e-5)


def test_batchnorm_statistics_move_in_training_like_pytorch(key):
  x = _x(key)
  module = norms.BatchNorm()
  variables = module.init(key, x, train=False)
  np.testing.assert_array_equal(variables["batch_stats"]["mean"], 0.0)
  np.testing.assert_array_equal(variables["batch_stats"]["var"], 1.0)
  _, updates = module.apply(variables, x, train=True, mutable=["batch_stats"])
  n = x.shape[0] * x.shape[1]
  expected_mean = 0.1 * x.mean((0, 1))
  expected_var = 0.9 + 0.1 * x.var((0, 1)) * n / (n - 1)  # PyTorch stores unbiased var
  np.testing.assert_allclose(updates["batch_stats"]["mean"], expected_mean, rtol=1e-5)
  np.testing.assert_allclose(updates["batch_stats"]["var"], expected_var, rtol=1e-5)


def test_batchnorm_statistics_stay_fixed_in_evaluation(key):
  x = _x(key)
  module = norms.BatchNorm()
  variables = module.init(key, x, train=False)
  variables = {
    "params": variables["params"],
    "batch_stats": {"mean": jnp.full((8,), 0.5), "var": jnp.full((8,), 4.0)},
  }
  y, updates = module.apply(variables, x, train=False, mutable=["batch_stats"])
  chex.assert_trees_all_equal(updates["batch_stats"], variables["batch_stats"])
  np.testing.assert_allclose(y, (x - 0.5) / jnp.sqrt(4.0 + 1e-5), rtol=1e-6)


def test_identity_is_identity(key):
  x = _x(key)
  module = norms.Identity()
  chex.assert_trees_all_equal(module.apply({}, x, train=True), x)
