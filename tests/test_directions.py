import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxnorm import config, curvature, data, directions, landscape, loss, model

# Known answers at float32 tolerances, on any device (conftest.full_precision).
pytestmark = pytest.mark.usefixtures("full_precision")


@functools.partial(jax.jit, static_argnums=(0,))
def _init(m, key, tokens):
  """Fresh variables of `m`: {'params'} and, for BatchNorm, {'batch_stats'}."""
  return m.init(key, tokens, train=False)


@functools.partial(jax.jit, static_argnums=(0, 9))
def _model_surface(
  m, params, bs, d1, d2, tokens, labels, alphas, betas, chunk_size=landscape.DEFAULT_CHUNK
):
  """Evaluation-mode loss of `m` on one batch over the 2D grid, one compiled call."""
  loss_fn = loss.eval_loss_fn(m, bs, tokens, labels)
  return directions.loss_surface(loss_fn, params, d1, d2, alphas, betas, chunk_size)


@functools.partial(jax.jit, static_argnums=(0,))
def _model_slice(m, params, bs, d, tokens, labels, offsets):
  return landscape.loss_slice(loss.eval_loss_fn(m, bs, tokens, labels), params, d, offsets)


def _toy_params(key):
  """A Dense layer, an embedding table and a norm scale, with non-uniform filter norms."""
  k1, k2, k3, k4 = jax.random.split(key, 4)
  return {
    "dense": {
      "kernel": jax.random.normal(k1, (3, 5)) * jnp.arange(1.0, 6.0)[None, :],
      "bias": jax.random.normal(k2, (5,)),
    },
    "embed": {"embedding": jax.random.normal(k3, (7, 4)) * jnp.arange(1.0, 8.0)[:, None]},
    "norm": {"scale": 1.0 + jax.random.uniform(k4, (4,))},
  }


def test_filter_norms_equal_weight_filter_norms(key):
  params = _toy_params(key)
  d = directions.filter_normalized_direction(jax.random.key(1), params)
  chex.assert_trees_all_equal_shapes(d, params)
  # Dense kernel (in, out): filters are columns, norms over axis 0.
  np.testing.assert_allclose(
    jnp.linalg.norm(d["dense"]["kernel"], axis=0),
    jnp.linalg.norm(params["dense"]["kernel"], axis=0),
    rtol=1e-5,
  )
  # Embedding (V, D): filters are rows, one per token.
  np.testing.assert_allclose(
    jnp.linalg.norm(d["embed"]["embedding"], axis=1),
    jnp.linalg.norm(params["embed"]["embedding"], axis=1),
    rtol=1e-5,
  )
  # Each filter keeps the direction of its Gaussian draw (a positive multiple of it).
  g = directions.gaussian_direction(jax.random.key(1), params)
  ratio = d["dense"]["kernel"] / g["dense"]["kernel"]
  np.testing.assert_allclose(ratio, jnp.broadcast_to(ratio[:1], ratio.shape), rtol=1e-5)
  assert float(ratio.min()) > 0


def test_zero_policy_zeroes_and_filter_policy_rescales_1d_params(key):
  params = _toy_params(key)
  zero = directions.filter_normalized_direction(jax.random.key(1), params)
  np.testing.assert_array_equal(zero["dense"]["bias"], 0.0)
  np.testing.assert_array_equal(zero["norm"]["scale"], 0.0)
  filt = directions.filter_normalized_direction(jax.random.key(1), params, policy_1d="filter")
  for path in (("dense", "bias"), ("norm", "scale")):
    d, w = filt[path[0]][path[1]], params[path[0]][path[1]]
    np.testing.assert_allclose(jnp.linalg.norm(d), jnp.linalg.norm(w), rtol=1e-5)
  chex.assert_trees_all_equal(filt["dense"]["kernel"], zero["dense"]["kernel"])
  with pytest.raises(ValueError, match="choose from"):
    directions.filter_normalized_direction(key, params, policy_1d="copy")


def test_filter_normalization_of_the_model_uses_columns_and_token_rows(key):
  cfg = config.TINY
  m = model.build(cfg, "layernorm")
  params = _init(m, key, data.batch(key, cfg)[0])["params"]
  d = jax.jit(directions.filter_normalized_direction)(jax.random.key(1), params)
  in_proj = params["transformer_block"]["attention"]["in_proj"]["kernel"]  # (D, 3D)
  d_in_proj = d["transformer_block"]["attention"]["in_proj"]["kernel"]
  np.testing.assert_allclose(
    jnp.linalg.norm(d_in_proj, axis=0), jnp.linalg.norm(in_proj, axis=0), rtol=1e-5
  )
  emb, d_emb = params["token_embeddings"]["embedding"], d["token_embeddings"]["embedding"]
  np.testing.assert_allclose(
    jnp.linalg.norm(d_emb, axis=1), jnp.linalg.norm(emb, axis=1), rtol=1e-5
  )
  for path, leaf in jax.tree_util.tree_leaves_with_path(d):
    if leaf.ndim == 1:
      np.testing.assert_array_equal(leaf, 0.0, err_msg=str(path))


@pytest.mark.parametrize("policy_1d", directions.POLICIES_1D)
def test_a_stacked_leaf_is_normalized_as_its_layers_separately(key, policy_1d):
  """A deep model's blocks (under "blocks", a leading layer axis N): the direction of the
  stack is, layer by layer, the direction of each layer's own leaves (unstacked) for the
  same Gaussian draw, not one tensor's (whose filters would span the layers)."""
  n = 3
  layers = [_toy_params(jax.random.fold_in(key, i))["dense"] for i in range(n)]
  layers[1] = jax.tree.map(lambda x: 10 * x, layers[1])  # layers of unequal scales
  stacked = {"blocks": jax.tree.map(lambda *xs: jnp.stack(xs), *layers)}
  g = directions.gaussian_direction(jax.random.key(1), stacked)
  d = directions.filter_normalize(g, stacked, policy_1d=policy_1d)
  for i in range(n):
    g_i = jax.tree.map(lambda x, i=i: x[i], g["blocks"])
    alone = directions.filter_normalize(g_i, layers[i], policy_1d=policy_1d)
    chex.assert_trees_all_close(jax.tree.map(lambda x, i=i: x[i], d["blocks"]), alone, rtol=1e-6)
  if policy_1d == "filter":  # each layer's bias is one filter of its own norm
    np.testing.assert_allclose(
      jnp.linalg.norm(d["blocks"]["bias"], axis=1),
      [jnp.linalg.norm(layer["bias"]) for layer in layers],
      rtol=1e-5,
    )


def test_filter_normalization_of_a_deep_model_is_per_block(key):
  cfg = config.TINY.replace(num_blocks=3)
  m = model.build(cfg, "layernorm")
  params = _init(m, key, data.batch(key, cfg)[0])["params"]
  d = jax.jit(directions.filter_normalized_direction)(jax.random.key(1), params)
  in_proj = params["blocks"]["attention"]["in_proj"]["kernel"]  # (N, D, 3D)
  d_in_proj = d["blocks"]["attention"]["in_proj"]["kernel"]
  np.testing.assert_allclose(
    jnp.linalg.norm(d_in_proj, axis=1), jnp.linalg.norm(in_proj, axis=1), rtol=1e-5
  )
  for leaf in jax.tree.leaves(d["blocks"]):
    if leaf.ndim == 2:  # a stacked bias or norm parameter: 1-D per block, zero by default
      np.testing.assert_array_equal(leaf, 0.0)


def test_gaussian_direction_matches_the_reference_global_direction(key):
  params = _toy_params(key)
  g = directions.gaussian_direction(jax.random.key(3), params)
  unit = landscape.random_direction(jax.random.key(3), params)
  chex.assert_trees_all_close(jax.tree.map(lambda x: x / optax.tree.norm(g), g), unit, rtol=1e-6)


def _tiny_problem(key, norm="batchnorm"):
  cfg = config.TINY
  m = model.build(cfg, norm)
  tokens, labels = data.batch(jax.random.fold_in(key, 1), cfg)
  variables = _init(m, jax.random.fold_in(key, 2), tokens)
  return m, variables["params"], variables.get("batch_stats", {}), tokens, labels


def test_surface_equals_a_loop_of_single_evaluations(key):
  m, params, bs, tokens, labels = _tiny_problem(key)
  d1 = directions.filter_normalized_direction(jax.random.key(1), params)
  d2 = directions.filter_normalized_direction(jax.random.key(2), params)
  alphas = jnp.array([-0.5, 0.0, 0.25, 1.0])
  betas = jnp.array([-1.0, 0.0, 0.5])
  grid = _model_surface(m, params, bs, d1, d2, tokens, labels, alphas, betas, 5)
  chex.assert_shape(grid, (4, 3))
  shift = lambda a, b: jax.tree.map(lambda w, u, v: w + a * u + b * v, params, d1, d2)
  loss_at = jax.jit(lambda a, b: loss.eval_loss(m, shift(a, b), bs, tokens, labels))
  for i, a in enumerate(alphas):
    for j, b in enumerate(betas):
      np.testing.assert_allclose(grid[i, j], loss_at(a, b), rtol=1e-5, err_msg=f"{i}, {j}")
  unperturbed = loss.eval_loss(m, params, bs, tokens, labels)
  np.testing.assert_allclose(grid[1, 1], unperturbed, rtol=1e-6)
  assert not np.allclose(grid, grid[1, 1])


def test_surface_row_with_a_zero_second_direction_is_the_1d_slice(key):
  m, params, bs, tokens, labels = _tiny_problem(key, "layernorm")
  g = directions.gaussian_direction(jax.random.key(1), params)
  d1 = jax.tree.map(lambda x: x / optax.tree.norm(g), g)  # the reference's global direction
  zero = jax.tree.map(jnp.zeros_like, params)
  alphas = landscape.alphas(7, 0.5)
  grid = _model_surface(m, params, bs, d1, zero, tokens, labels, alphas, jnp.array([0.0, 0.3]))
  line = _model_slice(m, params, bs, d1, tokens, labels, alphas)
  np.testing.assert_allclose(grid[:, 0], line, rtol=1e-6)
  np.testing.assert_allclose(grid[:, 1], line, rtol=1e-6)  # d2 = 0: beta does nothing


def test_adaptive_sharpness_of_a_quadratic_has_the_known_expectation(key):
  # L(w) = 0.5 sum c_i (w_i - m_i)^2; with delta_i ~ N(0, rho^2 w_i^2),
  # E[L(w + delta)] - L(w) = 0.5 sum c_i E[delta_i^2] = 0.5 rho^2 sum c_i w_i^2.
  k1, k2 = jax.random.split(key)
  params = {"a": jax.random.normal(k1, (6,)), "b": jax.random.normal(k2, (2, 3))}
  c = {"a": jnp.arange(1.0, 7.0), "b": jnp.full((2, 3), 3.0)}
  centre = jax.tree.map(lambda w: 0.5 * w + 0.1, params)

  def loss_fn(p):
    terms = jax.tree.map(lambda w, ci, mi: 0.5 * jnp.sum(ci * jnp.square(w - mi)), p, c, centre)
    return sum(jax.tree.leaves(terms))

  rho = 0.1
  expected = (
    0.5 * rho**2 * sum(jax.tree.leaves(jax.tree.map(lambda w, ci: jnp.sum(ci * w**2), params, c)))
  )
  res = directions.average_sharpness(
    loss_fn, params, key, rho=rho, num_samples=4000, chunk_size=500
  )
  chex.assert_shape(res.samples, (4000,))
  np.testing.assert_allclose(res.base_loss, loss_fn(params), rtol=1e-6)
  assert abs(float(res.sharpness) - float(expected)) < 4 * float(res.stderr)
  assert float(res.stderr) < 0.2 * float(expected)  # the test has power
  # Masking a leaf removes its contribution.
  masked = directions.average_sharpness(
    loss_fn, params, key, rho=rho, num_samples=4000, chunk_size=500, mask={"a": True, "b": False}
  )
  expected_a = 0.5 * rho**2 * float(jnp.sum(c["a"] * params["a"] ** 2))
  assert abs(float(masked.sharpness) - expected_a) < 4 * float(masked.stderr)


def _relu_net_loss(params):
  x_NxI = jnp.linspace(-1.0, 1.0, 24).reshape(8, 3)
  y_NxO = jnp.sin(3.0 * x_NxI[:, :2])
  h_NxH = jax.nn.relu(x_NxI @ params["w1"] + params["b1"][None, :])
  return jnp.mean(jnp.square(h_NxH @ params["w2"] + params["b2"][None, :] - y_NxO))


def test_adaptive_sharpness_is_invariant_to_function_preserving_rescaling(key):
  k1, k2, k3 = jax.random.split(key, 3)
  params = {
    "w1": jax.random.normal(k1, (3, 6)),
    "b1": jax.random.normal(k2, (6,)),
    "w2": jax.random.normal(k3, (6, 2)),
    "b2": jnp.zeros((2,)),
  }
  # Hidden unit j: in-weights and bias times s_j > 0, out-weights divided by s_j.
  s = jnp.array([0.1, 0.5, 1.0, 2.0, 10.0, 30.0])
  rescaled = {
    "w1": params["w1"] * s[None, :],
    "b1": params["b1"] * s,
    "w2": params["w2"] / s[:, None],
    "b2": params["b2"],
  }
  np.testing.assert_allclose(_relu_net_loss(rescaled), _relu_net_loss(params), rtol=1e-5)
  kw = dict(rho=0.05, num_samples=64)
  sharpness = jax.jit(
    lambda p, k, adaptive: directions.average_sharpness(
      _relu_net_loss, p, k, adaptive=adaptive, **kw
    ),
    static_argnums=(2,),
  )
  adaptive = sharpness(params, key, True)
  adaptive_rescaled = sharpness(rescaled, key, True)
  np.testing.assert_allclose(adaptive_rescaled.samples, adaptive.samples, rtol=1e-4, atol=1e-6)
  # The plain (non-adaptive) average sharpness is not invariant.
  plain = sharpness(params, key, False)
  plain_rescaled = sharpness(rescaled, key, False)
  assert abs(float(plain_rescaled.sharpness) / float(plain.sharpness) - 1) > 0.5
  with pytest.raises(ValueError, match=">= 2"):
    directions.average_sharpness(_relu_net_loss, params, key, rho=0.1, num_samples=1)


def test_adaptive_sharpness_is_invariant_to_the_layernorm_models_symmetry(key):
  """Scaling the embedding and the v / output-projection biases by s while dividing W_q and
  W_k by s scales the input of norm1 by s, which LayerNorm removes: the model computes the
  same function, and the adaptive sharpness (noise relative to each weight) is unchanged,
  while the Hessian trace is not."""
  cfg = config.TINY
  m = model.build(cfg, "layernorm")
  tokens, labels = data.batch(key, cfg)
  params = m.init(key, tokens, train=False)["params"]
  d, s = cfg.embed_dim, 10.0
  attention = params["transformer_block"]["attention"]
  kernel = attention["in_proj"]["kernel"]  # (D, 3D): q | k | v columns
  bias = attention["in_proj"]["bias"]
  column_scale = jnp.concatenate([jnp.full((2 * d,), 1 / s), jnp.ones((d,))])
  bias_scale = jnp.concatenate([jnp.ones((2 * d,)), jnp.full((d,), s)])
  rescaled = jax.tree.map(lambda x: x, params)
  rescaled["token_embeddings"] = {"embedding": params["token_embeddings"]["embedding"] * s}
  rescaled["transformer_block"]["attention"] = {
    "in_proj": {"kernel": kernel * column_scale[None, :], "bias": bias * bias_scale},
    "out_proj": {
      "kernel": attention["out_proj"]["kernel"],
      "bias": attention["out_proj"]["bias"] * s,
    },
  }
  loss_fn = loss.eval_loss_fn(m, {}, tokens, labels)
  np.testing.assert_allclose(loss_fn(rescaled), loss_fn(params), rtol=1e-4)
  sharpness = jax.jit(
    lambda p: directions.average_sharpness(loss_fn, p, key, rho=0.05, num_samples=16).samples
  )
  np.testing.assert_allclose(sharpness(rescaled), sharpness(params), rtol=2e-3, atol=1e-6)
  hessian_trace = jax.jit(lambda p: curvature.hutchinson_trace(loss_fn, p, key, num_probes=8).trace)
  assert abs(float(hessian_trace(rescaled)) / float(hessian_trace(params)) - 1) > 0.1
