"""The layer-wise dissection (`jaxnorm.layerwise`, through `analysis.analyze`): the layer
arrays' shapes, layer 0 the embedding rows' spectrum and the last layer the features'
spectrum, every layer's isotropy the scalar functions applied to that layer, each block's
curvature the dense Hessian restricted to that block, one copy of the per-block
estimator in the program whatever the depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HESSIAN_CFG
from jax.flatten_util import ravel_pytree

from jaxnorm import (
  analysis,
  config,
  curvature,
  data,
  isotropy,
  keys,
  landscape,
  layerwise,
  loss,
  measures,
  model,
  spectrum,
  train,
)
from jaxnorm import families as families_lib

pytestmark = pytest.mark.usefixtures("full_precision")

CFG = config.TINY.replace(landscape_points=5)
DEEP = CFG.replace(num_blocks=3)
ISOTROPY = families_lib.MeasureConfig(families=("isotropy",))


def _shapes(cfg, norm, measure_config):
  """The shapes of `analysis.analyze` of a fresh `norm` model of `cfg` (nothing computed)."""
  m = model.build(cfg, norm)
  state = jax.eval_shape(lambda: train.init_state(m, cfg.task, jax.random.key(0), 1e-3))
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  return jax.eval_shape(
    lambda p, b: analysis.analyze(
      m, cfg.task, measure_config, p, b, keys.run_keys(0), alphas, alphas
    ),
    state.params,
    state.batch_stats,
  )


@pytest.mark.parametrize("blocks, norm", [(1, "layernorm"), (3, "batchnorm"), (2, "l2")])
@pytest.mark.parametrize(
  "families", [families_lib.FAMILIES, ("isotropy",), ("hessian",), ("slices",)], ids=",".join
)
def test_the_layer_arrays_have_a_layer_axis_and_exactly_the_selected_names(blocks, norm, families):
  cfg = CFG.replace(num_blocks=blocks)
  out = _shapes(cfg, norm, families_lib.MeasureConfig(families=families))
  assert out.layer_spectra.shape == (blocks + 1, cfg.embed_dim)
  assert set(out.layer_measures) == set(families_lib.layer_analyzed(families))
  for name, value in out.layer_measures.items():
    per_block = name in families_lib.PER_BLOCK_MEASURES
    assert value.shape == ((blocks,) if per_block else (blocks + 1,)), name
  without = _shapes(cfg, norm, None)
  assert without.layer_measures == {} and without.layer_spectra.shape == out.layer_spectra.shape


def test_the_layer_measures_are_named_as_the_scalar_ones_of_their_family():
  for family, names in families_lib.LAYER_FAMILY_MEASURES.items():
    for name in names:
      scalar = name.removeprefix("block_")
      assert scalar in measures.BY_NAME and families_lib.family_of(scalar) == family, name


def _analysis(cfg, norm, measure_config, seed=0):
  """`analysis.analyze` of a fresh `norm` model of `cfg`, and its variables and keys."""
  m = model.build(cfg, norm)
  k = keys.run_keys(seed)
  state = jax.jit(train.init_state, static_argnums=(0, 1))(m, cfg.task, k.train, 1e-3)
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  out = jax.jit(
    lambda p, b: analysis.analyze(m, cfg.task, measure_config, p, b, k, alphas, alphas)
  )(state.params, state.batch_stats)
  return m, state, k, out


@pytest.mark.parametrize("blocks, placement", [(1, "post"), (3, "post"), (2, "pre")])
def test_layer_0_is_the_embedding_rows_and_the_last_layer_the_features_for_post_norm(
  blocks, placement
):
  cfg = CFG.replace(num_blocks=blocks, norm_placement=placement)
  m, state, k, out = _analysis(cfg, "layernorm", ISOTROPY)
  tokens, _ = data.batch(k.spectrum_batch, cfg)
  rows = np.asarray(state.params["token_embeddings"]["embedding"])[np.asarray(tokens)]
  s = np.linalg.svd(rows.reshape(-1, cfg.embed_dim).astype(np.float64), compute_uv=False)
  np.testing.assert_allclose(out.layer_spectra[0], s, rtol=1e-4, atol=1e-5 * s[0])
  if placement == "post":  # the readout reads the last block's output itself
    np.testing.assert_allclose(out.layer_spectra[-1], out.spectrum, rtol=1e-5, atol=1e-6)
    for name in families_lib.FAMILY_MEASURES["isotropy"]:
      last = -1 if name in families_lib.PER_BLOCK_MEASURES else blocks
      np.testing.assert_allclose(
        out.layer_measures[name][last], out.measures[name], rtol=1e-5, err_msg=name
      )
  else:  # the readout reads the final norm of it, which is another representation
    assert not np.allclose(out.layer_spectra[-1], out.spectrum, rtol=1e-2)
  # Every layer is a different representation.
  for a in range(blocks + 1):
    for b in range(a):
      assert not np.allclose(out.layer_spectra[a], out.layer_spectra[b], rtol=1e-2), (a, b)


def test_every_layers_isotropy_is_the_scalar_functions_on_its_activations():
  m, state, k, out = _analysis(DEEP, "batchnorm", ISOTROPY)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  tokens, _ = data.batch(k.spectrum_batch, DEEP)
  layers = m.apply(variables, tokens, train=False, method=model.Transformer.layer_features)
  assert layers.shape == (DEEP.num_blocks + 1, *tokens.shape, DEEP.embed_dim)
  for i, x in enumerate(layers):
    acts = x.reshape(-1, DEEP.embed_dim)
    np.testing.assert_allclose(
      out.layer_spectra[i], spectrum.singular_values(acts), rtol=1e-5, atol=1e-6
    )
    for prefix, center in (("", False), ("centered_", True)):
      expected = isotropy.measures(acts, center=center)
      for field in measures.ISOTROPY_FIELDS:
        np.testing.assert_allclose(
          out.layer_measures[prefix + field][i],
          getattr(expected, field),
          rtol=1e-4,
          err_msg=f"layer {i} {prefix}{field}",
        )
  stacked = state.params["blocks"]
  for name, kernel in (
    ("weight_norm_norm1_input", stacked["attention"]["out_proj"]["kernel"]),
    ("weight_norm_norm2_input", stacked["ffn"]["down"]["kernel"]),
  ):
    per_block = [np.linalg.norm(np.asarray(kernel[i])) for i in range(DEEP.num_blocks)]
    np.testing.assert_allclose(out.layer_measures[name], per_block, rtol=1e-5)
    assert len(set(np.round(per_block, 5))) == DEEP.num_blocks  # the blocks differ
    # The scalar measure (and so the effective learning rate) is the last block's.
    np.testing.assert_allclose(out.measures[name], per_block[-1], rtol=1e-5)


def _dense_block_hessian(loss_fn, params, i):
  """Block i's Hessian H_ii, formed densely: (P_i, P_i), block i written into the tree
  here (the stacked "blocks" leaves, or the one "transformer_block")."""
  if "blocks" in params:
    block = jax.tree.map(lambda x: x[i], params["blocks"])

    def put(b):
      return {**params, "blocks": jax.tree.map(lambda x, y: x.at[i].set(y), params["blocks"], b)}
  else:
    block = params["transformer_block"]

    def put(b):
      return {**params, "transformer_block": b}

  flat, unravel = ravel_pytree(block)
  h = jax.jit(jax.hessian(lambda f: loss_fn(put(unravel(f)))))(flat)
  return np.asarray(h, np.float64)


@pytest.mark.parametrize("blocks", [1, 2])
def test_each_blocks_curvature_is_the_dense_hessian_restricted_to_it(blocks):
  """lambda_max: the top eigenvalue of the dense H_ii (jax.hessian on block i's parameters,
  the others fixed); the trace: Hutchinson's mean over the same probes of z^T H_ii z, and
  within its error of tr(H_ii). The blocks' Hessians differ."""
  cfg = HESSIAN_CFG.replace(num_blocks=blocks)
  m = model.build(cfg, "layernorm")
  tokens, labels = data.batch(jax.random.key(1), cfg)
  params = m.init(jax.random.key(2), tokens, train=False)["params"]
  loss_fn = loss.eval_loss_fn(m, {}, tokens, labels)
  mc = families_lib.MeasureConfig(
    families=("hessian",), lanczos_iterations=30, lanczos_tol=1e-4, trace_probes=8
  )
  lanczos_keys, trace_keys = keys.block_curvature_keys(jax.random.key(3), blocks)
  out = jax.jit(lambda p: layerwise.block_curvature(loss_fn, p, lanczos_keys, trace_keys, mc))(
    params
  )
  assert all(v.shape == (blocks,) for v in out.values())
  assert np.all(out["block_hessian_top_converged"])
  tops = []
  for i in range(blocks):
    h = _dense_block_hessian(loss_fn, params, i)
    eigenvalues = np.linalg.eigvalsh(h)
    tops.append(eigenvalues[-1])
    np.testing.assert_allclose(out["block_hessian_top_eigenvalue"][i], eigenvalues[-1], rtol=1e-3)
    probes = [
      np.asarray(curvature.rademacher(pk, (h.shape[0],), jnp.float32), np.float64)
      for pk in jax.random.split(trace_keys[i], mc.trace_probes)
    ]
    samples = [z @ h @ z for z in probes]
    np.testing.assert_allclose(out["block_hessian_trace"][i], np.mean(samples), rtol=1e-3)
    np.testing.assert_allclose(
      out["block_hessian_trace_stderr"][i], np.std(samples, ddof=1) / np.sqrt(len(samples)), 1e-2
    )
    assert (
      abs(out["block_hessian_trace"][i] - np.trace(h)) < 5 * out["block_hessian_trace_stderr"][i]
    )
  if blocks > 1:
    assert abs(tops[0] / tops[1] - 1) > 1e-2


def _lapack_operand_ranks(text: str) -> list[int]:
  """The rank of the first operand of every LAPACK custom call of a lowered program."""
  ranks = []
  for line in text.splitlines():
    if "custom_call @lapack_" in line:
      shape = line.split(": (tensor<", 1)[1].split(">", 1)[0]
      ranks.append(len(shape.split("x")) - 1)
  return ranks


def test_the_program_holds_one_copy_of_the_per_block_estimators_whatever_the_depth():
  """The analysis of two vmapped seeds of a 2-block and a 5-block model lower to programs
  of the same size: the blocks are a scan, the per-block curvature a map, the layers'
  isotropy a batch, not N copies. On the CPU every LAPACK call but one takes one matrix,
  never a batch (jaxlib 0.10 hangs with batched calls at once: `jaxnorm.lapack`); the one
  left is `isotropy.measures`' centered SVD of the features, as before."""
  every = families_lib.MeasureConfig(families=families_lib.FAMILIES)

  def program(blocks):
    cfg = CFG.replace(num_blocks=blocks)
    m = model.build(cfg, "batchnorm")
    state = jax.eval_shape(lambda: train.init_state(m, cfg.task, jax.random.key(0), 1e-3))
    k2 = jax.eval_shape(lambda: jax.vmap(keys.run_keys)(jnp.arange(2)))
    two = jax.tree.map(lambda x: jax.ShapeDtypeStruct((2, *x.shape), x.dtype), state)
    alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
    lowered = analysis.analyze_seeds.lower(
      m, cfg.task, every, two.params, two.batch_stats, k2, alphas, alphas
    )
    return lowered.as_text()

  two, five = program(2), program(5)
  assert five.count("stablehlo.while") == two.count("stablehlo.while")
  # The same program but for shapes (helper functions that coincide at one size, not the other).
  assert abs(len(five.splitlines()) - len(two.splitlines())) < 0.01 * len(two.splitlines())
  if jax.default_backend() == "cpu":  # one batch left: the features' centered isotropy
    ranks = _lapack_operand_ranks(five)
    assert len(ranks) > 1 and sorted(ranks) == [2] * (len(ranks) - 1) + [3], ranks


@pytest.mark.hostile
def test_a_layer_with_a_nan_has_nan_singular_values():
  acts = jax.random.normal(jax.random.key(0), (3, 12, 4))
  s, c = layerwise.layer_spectra(acts.at[1, 0, 0].set(jnp.nan), centered=True)
  assert np.isnan(s[1]).all() and np.isnan(c[1]).all()
  for i in (0, 2):
    np.testing.assert_allclose(s[i], np.linalg.svd(acts[i], compute_uv=False), rtol=1e-5)
    centered = acts[i] - acts[i].mean(0, keepdims=True)
    np.testing.assert_allclose(c[i], np.linalg.svd(centered, compute_uv=False), 1e-5, 1e-6)
  assert layerwise.layer_spectra(acts, centered=False)[1] is None


def test_one_seed_of_a_deep_model_is_analyzed_as_each_seed_of_many():
  """The layer arrays of S = 1 (the program without vmap) equal that seed's in a vmapped
  group of two, to float32 rounding, with the seed axis kept."""
  m = model.build(DEEP, "batchnorm")
  k2 = jax.vmap(keys.run_keys)(jnp.array([5, 6]))
  state = jax.vmap(lambda k: train.init_state(m, DEEP.task, k, 1e-3))(k2.train)
  alphas = landscape.alphas(DEEP.landscape_points, DEEP.landscape_range)
  mc = families_lib.MeasureConfig(
    families=("isotropy", "hessian"), lanczos_iterations=4, trace_probes=2
  )
  args = (state.params, state.batch_stats, k2, alphas, alphas)
  both = analysis.analyze_seeds(m, DEEP.task, mc, *args)
  first = jax.tree.map(lambda x: x[:1], args[:3])
  alone = analysis.analyze_seeds(m, DEEP.task, mc, *first, *args[3:])
  assert alone.layer_spectra.shape == (1, DEEP.num_blocks + 1, DEEP.embed_dim)
  assert alone.layer_measures.keys() == both.layer_measures.keys() != set()
  for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(both), strict=True):
    assert a.shape == (1, *b.shape[1:])
    np.testing.assert_allclose(a[0], b[0], rtol=1e-4, atol=1e-6)
