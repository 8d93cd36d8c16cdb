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
  variables = module.init(key, x, train=False)
  # torch.nn.LayerNorm's weight and bias, directly under the norm's own name.
  chex.assert_trees_all_equal(
    variables["params"], {"scale": jnp.ones((8,)), "bias": jnp.zeros((8,))}
  )
  y = module.apply(variables, x, train=False)
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


def test_rmsnorm_output_has_unit_rms_per_token(key):
  x = _x(key)
  module = norms.RMSNorm()
  variables = module.init(key, x, train=True)
  chex.assert_trees_all_equal(variables["params"], {"scale": jnp.ones((8,))})
  y = module.apply(variables, x, train=True)
  chex.assert_shape(y, x.shape)
  ms_x = jnp.mean(jnp.square(x), -1)
  eps = float(jnp.finfo(jnp.float32).eps)  # torch.nn.RMSNorm's default eps=None
  np.testing.assert_allclose(jnp.mean(jnp.square(y), -1), ms_x / (ms_x + eps), rtol=1e-5)
  # No centering: the mean is not removed.
  assert np.abs(np.asarray(y.mean(-1))).max() > 0.1


def test_rmsnorm_applies_its_scale(key):
  x = _x(key)
  module = norms.RMSNorm()
  scale = jnp.arange(1.0, 9.0)
  y = module.apply({"params": {"scale": scale}}, x, train=False)
  rms = jnp.sqrt(jnp.mean(jnp.square(x), -1, keepdims=True) + 1.1920929e-07)
  expected = x / rms * scale[None, None, :]
  np.testing.assert_allclose(y, expected, rtol=1e-6)


def test_l2_norm_puts_every_token_on_the_unit_sphere(key):
  x = _x(key)
  module = norms.L2Norm()
  variables = module.init(key, x, train=True)
  assert not jax.tree.leaves(variables)  # no parameters
  for train in (False, True):
    y = module.apply(variables, x, train=train)
    chex.assert_shape(y, x.shape)
    np.testing.assert_allclose(jnp.linalg.norm(y, axis=-1), 1.0, rtol=1e-6)
    # Direction is kept: y is a positive multiple of x.
    np.testing.assert_allclose(y * jnp.linalg.norm(x, axis=-1, keepdims=True), x, rtol=1e-5)
  assert norms.get("l2").label == "Manual L2 Norm"


def test_l2_norm_clamps_tiny_tokens_and_has_finite_gradient_at_zero():
  module = norms.L2Norm()
  tiny = jnp.zeros((1, 2, 4)).at[0, 0, 0].set(1e-12)  # one tiny token, one zero token
  y = module.apply({}, tiny, train=False)
  np.testing.assert_allclose(y[0, 0], [1e-3, 0, 0, 0], rtol=1e-5)  # x / 1e-9
  np.testing.assert_array_equal(y[0, 1], 0.0)
  grad = jax.grad(lambda x: module.apply({}, x, train=False).sum())(tiny)
  chex.assert_tree_all_finite(grad)


@pytest.mark.parametrize("name", ["rmsnorm", "l2"])
def test_new_norms_are_per_token_and_match_pytorch(name, key):
  torch = pytest.importorskip("torch")
  spec = norms.get(name)
  assert spec.per_token_in_eval and spec.per_token_in_train and not spec.needs_batch
  x = _x(key)
  module = spec.make()
  y = module.apply(module.init(key, x, train=False), x, train=False)
  x_t = torch.from_numpy(np.array(x))
  if name == "rmsnorm":
    expected = torch.nn.RMSNorm(8)(x_t).detach().numpy()
  else:
    expected = torch.nn.functional.normalize(x_t, p=2.0, dim=-1, eps=1e-9).numpy()
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
  # Per token: changing one token changes no other token's output.
  x2 = x.at[0, 0].multiply(-2.0)
  y2 = module.apply(module.init(key, x, train=False), x2, train=True)
  np.testing.assert_allclose(y2[:, 1:], y[:, 1:], rtol=1e-6)
  np.testing.assert_allclose(y2[1:], y[1:], rtol=1e-6)


@pytest.mark.hostile
def test_variables_are_float32_unless_asked_whatever_the_x64_flag(key):
  """Under a global x64 every variable is still float32, and a float64 input (the analysis
  casts up) moves BatchNorm's statistics without changing their dtype."""
  with jax.enable_x64(True):
    x = _x(key).astype(jnp.float64)
    for name, spec in norms.REGISTRY.items():
      variables = spec.make().init(key, x.astype(jnp.float32), train=False)
      assert {leaf.dtype for leaf in jax.tree.leaves(variables)} <= {jnp.dtype("float32")}, name
    bn = norms.BatchNorm()
    variables = bn.init(key, x, train=False)
    _, updates = bn.apply(variables, x, train=True, mutable=["batch_stats"])
    assert all(v.dtype == jnp.float32 for v in jax.tree.leaves(updates))
    np.testing.assert_allclose(updates["batch_stats"]["mean"], 0.1 * x.mean((0, 1)), rtol=1e-6)
    asked = norms.BatchNorm(param_dtype=jnp.float64).init(key, x, train=False)
    assert {leaf.dtype for leaf in jax.tree.leaves(asked)} == {jnp.dtype("float64")}
