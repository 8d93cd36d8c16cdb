import math
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.special import erf

from jaxnorm import config, data, loss, model, norms

NORMS = sorted(norms.REGISTRY)


def _variables(cfg, norm, key):
  m = model.build(cfg, norm)
  tokens, _ = data.batch(key, cfg)
  return m, m.init(key, tokens, train=False), tokens


@pytest.mark.parametrize("norm", NORMS)
def test_shapes_and_finiteness(norm, key):
  cfg = config.TINY
  m, variables, tokens = _variables(cfg, norm, key)
  logits = m.apply(variables, tokens, train=False)
  chex.assert_shape(logits, (cfg.batch_size, cfg.vocab_size))
  feats = m.apply(variables, tokens, train=False, method=model.Transformer.features)
  chex.assert_shape(feats, (cfg.batch_size, cfg.seq_len, cfg.embed_dim))
  logits_train, _ = m.apply(variables, tokens, train=True, mutable=["batch_stats"])
  chex.assert_tree_all_finite((logits, feats, logits_train))
  # Only a norm with running statistics (BatchNorm) has a `batch_stats` collection.
  assert ("batch_stats" in variables) == bool(norms.get(norm).torch_buffers)


def test_parameter_shapes_follow_the_reference():
  cfg = config.PAPER
  _, variables, _ = _variables(cfg, "layernorm", jax.random.key(0))
  shapes = jax.tree.map(jnp.shape, variables["params"])
  d, v = 128, 402
  assert shapes["token_embeddings"]["embedding"] == (v, d)
  block = shapes["transformer_block"]
  assert block["attention"]["in_proj"] == {"kernel": (d, 3 * d), "bias": (3 * d,)}
  assert block["attention"]["out_proj"] == {"kernel": (d, d), "bias": (d,)}
  assert block["ffn"]["up"] == {"kernel": (d, 4 * d), "bias": (4 * d,)}
  assert block["ffn"]["down"] == {"kernel": (4 * d, d), "bias": (d,)}
  assert block["norm1"] == block["norm2"] == {"scale": (d,), "bias": (d,)}  # LayerNorm
  assert shapes["to_vocab"] == {"kernel": (d, v), "bias": (v,)}
  n_params = sum(
    np.prod(s) for s in jax.tree.leaves(shapes, is_leaf=lambda x: isinstance(x, tuple))
  )
  # torch: 402*128 + (3*128*128 + 3*128) + (128*128 + 128) + (128*512 + 512) + (512*128 + 128)
  #        + 2 * (128 + 128) + (128*402 + 402)
  assert n_params == 51456 + 49536 + 16512 + 66048 + 65664 + 512 + 51858


def _uniform_bound_ok(w, bound):
  """Max within the bound, std of U(-b, b) = b / sqrt(3), mean ~ 0."""
  w = np.asarray(w).ravel()
  se = bound / math.sqrt(3 * w.size)
  assert np.abs(w).max() <= bound
  assert np.abs(w).max() > 0.95 * bound
  np.testing.assert_allclose(w.std(), bound / math.sqrt(3), rtol=0.05)
  assert abs(w.mean()) < 5 * se


def test_initial_parameters_follow_pytorch_defaults():
  cfg = config.PAPER
  _, variables, _ = _variables(cfg, "batchnorm", jax.random.key(7))
  p = variables["params"]
  d = cfg.embed_dim
  emb = np.asarray(p["token_embeddings"]["embedding"])
  np.testing.assert_allclose(emb.std(), 1.0, rtol=0.02)  # nn.Embedding: N(0, 1)
  assert abs(emb.mean()) < 5 / math.sqrt(emb.size)
  att = p["transformer_block"]["attention"]
  _uniform_bound_ok(att["in_proj"]["kernel"], math.sqrt(6 / (d + 3 * d)))  # xavier (3D, D)
  np.testing.assert_array_equal(att["in_proj"]["bias"], 0.0)
  _uniform_bound_ok(att["out_proj"]["kernel"], 1 / math.sqrt(d))
  np.testing.assert_array_equal(att["out_proj"]["bias"], 0.0)
  ffn = p["transformer_block"]["ffn"]
  for layer, fan_in in ((ffn["up"], d), (ffn["down"], 4 * d), (p["to_vocab"], d)):
    _uniform_bound_ok(layer["kernel"], 1 / math.sqrt(fan_in))
    assert np.abs(layer["bias"]).max() <= 1 / math.sqrt(fan_in)
    assert np.abs(layer["bias"]).max() > 0.5 / math.sqrt(fan_in)
  for norm in ("norm1", "norm2"):
    np.testing.assert_array_equal(p["transformer_block"][norm]["scale"], 1.0)
    np.testing.assert_array_equal(p["transformer_block"][norm]["bias"], 0.0)


def test_ffn_uses_exact_gelu(key):
  ffn = model.FeedForward(8)
  x = jax.random.normal(key, (3, 8))
  variables = ffn.init(key, x)
  up, down = variables["params"]["up"], variables["params"]["down"]
  h = x @ up["kernel"] + up["bias"][None]
  exact = 0.5 * h * (1 + erf(h / math.sqrt(2)))
  np.testing.assert_allclose(
    ffn.apply(variables, x), exact @ down["kernel"] + down["bias"][None], rtol=1e-5, atol=1e-6
  )


def test_attention_matches_single_head_formula(key):
  attn = model.SelfAttention(8, 1)
  x = jax.random.normal(key, (2, 5, 8))
  variables = attn.init(key, x)
  p = variables["params"]
  qkv = x @ p["in_proj"]["kernel"] + p["in_proj"]["bias"][None, None]
  q, k, v = qkv[..., :8], qkv[..., 8:16], qkv[..., 16:]
  a = jax.nn.softmax(q @ jnp.swapaxes(k, 1, 2) / math.sqrt(8), axis=-1)
  expected = (a @ v) @ p["out_proj"]["kernel"] + p["out_proj"]["bias"][None, None]
  np.testing.assert_allclose(attn.apply(variables, x), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("norm", NORMS)
def test_no_positional_encoding_and_no_mask(norm, key):
  """Logits are invariant to permuting the context, and depend on every context token."""
  cfg = config.TINY
  m, variables, tokens = _variables(cfg, norm, key)
  perm = jax.random.permutation(jax.random.key(1), cfg.seq_len - 1)
  shuffled = tokens.at[:, :-1].set(tokens[:, :-1][:, perm])
  for train in (False, True):
    a, _ = m.apply(variables, tokens, train=train, mutable=["batch_stats"])
    b, _ = m.apply(variables, shuffled, train=train, mutable=["batch_stats"])
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
  changed = tokens.at[:, 0].set((tokens[:, 0] + 1) % cfg.num_keys)
  assert not np.allclose(
    m.apply(variables, tokens, train=False), m.apply(variables, changed, train=False)
  )


def test_unknown_norm_fails_at_build():
  with pytest.raises(ValueError, match="unknown normalization"):
    model.build(config.TINY, "groupnorm")


def _dot_precisions(fn, *args) -> list[str]:
  """The precision of every dot_general in the lowered program of fn(*args)."""
  text = jax.jit(fn).lower(*args).as_text()
  return re.findall(r"dot_general.*?precision = \[(\w+), \w+\]", text)


@pytest.mark.parametrize("precision", ["highest", "high", "default"])
def test_every_matmul_runs_at_the_configured_precision(precision, key):
  """With no jax.default_matmul_precision set, the model's own products (forward and
  backward, fast and full paths) carry Config.matmul_precision; "default" leaves them
  to the backend (TF32 on NVIDIA GPUs)."""
  cfg = config.TINY.replace(matmul_precision=precision)
  m = model.build(cfg, "batchnorm")
  tokens, labels = data.batch(key, cfg)
  variables = m.init(key, tokens, train=False)

  def grads(params, fast):
    return jax.grad(lambda p: loss.eval_loss(m, p, variables["batch_stats"], tokens, labels, fast))(
      params
    )

  for fast in (True, False):
    found = _dot_precisions(lambda p, fast=fast: grads(p, fast), variables["params"])
    assert len(found) >= 10
    expected = "DEFAULT" if precision == "default" else precision.upper()
    assert set(found) == {expected}, found


@pytest.mark.parametrize("bad", [-1, config.TINY.vocab_size])
@pytest.mark.parametrize("method", ["__call__", "features", "readout_token_logits", "fast_logits"])
def test_token_ids_outside_the_vocabulary_raise_in_eager_calls(bad, method, key):
  """JAX alone gives NaN logits for id V and reads row V - 1 for -1."""
  m, variables, tokens = _variables(config.TINY, "layernorm", key)
  tokens = tokens.at[1, 2].set(bad)
  with pytest.raises(ValueError, match=f"token ids must be in \\[0, 38\\), got {bad}"):
    m.apply(variables, tokens, train=False, method=getattr(model.Transformer, method))


def test_token_ids_are_not_checked_inside_jit(key):
  m, variables, tokens = _variables(config.TINY, "layernorm", key)
  logits = jax.jit(lambda t: m.apply(variables, t, train=False))(tokens.at[0, 0].set(-1))
  assert logits.shape == (config.TINY.batch_size, config.TINY.vocab_size)


# The deep model: several blocks are one nn.scan over stacked parameters.


def _deep(num_blocks=3, placement="post", readout="last", cfg=config.TINY):
  return cfg.replace(num_blocks=num_blocks, norm_placement=placement, readout=readout)


def _stats_variables(m, cfg, key):
  """Variables whose BatchNorm statistics (if any) are not the initial ones: one training
  forward on another batch."""
  tokens, _ = data.batch(jax.random.fold_in(key, 1), cfg)
  variables = m.init(key, tokens, train=False)
  _, updates = m.apply(variables, tokens, train=True, mutable=["batch_stats"])
  return {**variables, **updates}


def _loop_of_blocks(cfg, norm, variables, tokens, train):
  """`model.Block` applied N times in Python, block i holding the i-th slice of the stacked
  variables: the layers (N + 1, B, L, D) and the stacked batch_stats updates."""
  block = model.Block(cfg.embed_dim, cfg.num_heads, norm, cfg.matmul_precision, cfg.norm_placement)
  x_BxLxD = jnp.take(variables["params"]["token_embeddings"]["embedding"], tokens, axis=0)
  layers, updates = [x_BxLxD], []
  for i in range(cfg.num_blocks):
    block_i = {k: jax.tree.map(lambda a, i=i: a[i], v["blocks"]) for k, v in variables.items()}
    x_BxLxD, update = block.apply(block_i, x_BxLxD, train, mutable=["batch_stats"])
    layers.append(x_BxLxD)
    updates.append(update)
  return jnp.stack(layers), jax.tree.map(lambda *a: jnp.stack(a), *updates)


ROUNDING = dict(rtol=1e-6, atol=1e-6)  # float32 rounding of differently compiled sums


def _apply(m, variables, tokens, train, method=model.Transformer.__call__):
  """`method`'s output and the batch_stats updates, jitted."""
  run = lambda v, t: m.apply(v, t, train, method=method, mutable=["batch_stats"])  # noqa: E731
  return jax.jit(run)(variables, tokens)


@pytest.mark.parametrize("placement", ["post", "pre"])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_block_scan_equals_unrolled_scan_and_a_loop_of_blocks(norm, placement, key):
  """The scan, the scan unrolled (scan_unroll = N) and a Python loop of `Block`s compute
  the same layers, logits and BatchNorm statistics, in both modes."""
  cfg = _deep(placement=placement)
  scanned, unrolled = model.build(cfg, norm), model.build(cfg, norm, scan_unroll=cfg.num_blocks)
  variables = _stats_variables(scanned, cfg, key)
  tokens, _ = data.batch(key, cfg)
  layer_features = model.Transformer.layer_features
  for train in (False, True):
    layers, stats = _apply(scanned, variables, tokens, train, layer_features)
    logits, _ = _apply(scanned, variables, tokens, train)
    unrolled_out = (
      _apply(unrolled, variables, tokens, train, layer_features),
      _apply(unrolled, variables, tokens, train)[0],
    )
    chex.assert_trees_all_close(unrolled_out, ((layers, stats), logits), **ROUNDING)
    layers_loop, stats_loop = _loop_of_blocks(cfg, norm, variables, tokens, train)
    chex.assert_trees_all_close(layers_loop, layers, **ROUNDING)
    assert bool(stats) == (norm == "batchnorm")
    if stats:  # the loop's per-block updates, stacked, are the scan's
      chex.assert_trees_all_close(
        stats_loop["batch_stats"], stats["batch_stats"]["blocks"], **ROUNDING
      )


@pytest.mark.parametrize("num_blocks", [1, 3, model.MAX_UNROLLED_BLOCKS + 1])
def test_the_training_model_is_the_analysis_model_unrolled(num_blocks, key):
  """Training unrolls the block scan up to `MAX_UNROLLED_BLOCKS` (`build_for_training`),
  the analysis keeps it: the two models initialize the very same parameters, so a trained
  state fits the analysis. Deeper, training keeps the scan too."""
  cfg = _deep(num_blocks=num_blocks)
  trained, analyzed = model.build_for_training(cfg, "layernorm"), model.build(cfg, "layernorm")
  unrolled = num_blocks if num_blocks <= model.MAX_UNROLLED_BLOCKS else 1
  assert (trained.scan_unroll, analyzed.scan_unroll) == (unrolled, 1)
  assert trained.clone(scan_unroll=1) == analyzed
  tokens, _ = data.batch(key, cfg)
  init = lambda m: jax.jit(lambda k: m.init(k, tokens, train=False))(key)  # noqa: E731
  chex.assert_trees_all_equal(init(trained), init(analyzed))


@pytest.mark.parametrize("num_blocks", [1, 3])
@pytest.mark.parametrize("placement", ["post", "pre"])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_layer_features_are_the_embedding_and_each_blocks_output(norm, placement, num_blocks, key):
  """(N + 1, B, L, D); layer 0 is the embedding lookup; what the readout reads is the last
  layer (post-norm) or the final norm of it (pre-norm)."""
  cfg = _deep(num_blocks, placement)
  m = model.build(cfg, norm)
  variables = _stats_variables(m, cfg, key)
  tokens, _ = data.batch(key, cfg)
  final_norm = lambda module, x, train: module.final_norm(x, train)  # noqa: E731
  embedding = variables["params"]["token_embeddings"]["embedding"]
  for train in (False, True):
    layers, _ = _apply(m, variables, tokens, train, model.Transformer.layer_features)
    chex.assert_shape(layers, (num_blocks + 1, cfg.batch_size, cfg.seq_len, cfg.embed_dim))
    np.testing.assert_array_equal(layers[0], jnp.take(embedding, tokens, axis=0))
    features, _ = _apply(m, variables, tokens, train, model.Transformer.features)
    read = (
      layers[-1] if placement == "post" else _apply(m, variables, layers[-1], train, final_norm)[0]
    )
    np.testing.assert_allclose(features, read, **ROUNDING)
    # Each layer is a different representation (no block is skipped or repeated).
    for i in range(num_blocks):
      assert not np.allclose(layers[i], layers[i + 1], atol=1e-3)


def test_blocks_are_initialized_independently_each_as_pytorch(key):
  """Every stacked parameter has the block axis first; each block's slice follows
  PyTorch's default init (as test_initial_parameters_follow_pytorch_defaults for one
  block), and no two blocks hold the same or correlated values."""
  cfg = _deep(num_blocks=3, placement="pre", cfg=config.PAPER.replace(num_heads=4))
  m = model.build(cfg, "layernorm")
  params = m.init(key, jnp.zeros((1, cfg.seq_len), jnp.int32), train=False)["params"]
  blocks, d = params["blocks"], cfg.embed_dim
  bounds = {
    ("attention", "in_proj", "kernel"): math.sqrt(6 / (d + 3 * d)),
    ("attention", "out_proj", "kernel"): 1 / math.sqrt(d),
    ("ffn", "up", "kernel"): 1 / math.sqrt(d),
    ("ffn", "down", "kernel"): 1 / math.sqrt(4 * d),
  }
  constants = {("attention", "in_proj", "bias"): 0.0, ("attention", "out_proj", "bias"): 0.0}
  constants |= {
    (f"norm{i}", name): float(name == "scale") for i in (1, 2) for name in ("scale", "bias")
  }
  flat = {
    tuple(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(blocks)
  }
  assert set(flat) == set(bounds) | set(constants) | {
    ("ffn", "up", "bias"),
    ("ffn", "down", "bias"),
  }
  for path, stacked in flat.items():
    assert stacked.shape[0] == cfg.num_blocks, path
    slices = [np.asarray(stacked[i]).ravel().astype(np.float64) for i in range(cfg.num_blocks)]
    if path in constants:
      np.testing.assert_array_equal(stacked, constants[path])
      continue
    for i, w in enumerate(slices):
      if path in bounds:
        _uniform_bound_ok(w, bounds[path])
      for other in slices[:i]:
        assert abs(np.corrcoef(w, other)[0, 1]) < 5 / math.sqrt(w.size), path


@pytest.mark.parametrize("readout", ["last", "first"])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_readout_reads_its_position(norm, readout, key):
  """Without positional encoding or mask, a deep model's logits are invariant to permuting
  the positions it does not read out (BatchNorm's statistics too: a permutation keeps each
  example's tokens), and change when the read-out token trades places with another."""
  cfg = _deep(num_blocks=2, readout=readout)
  m = model.build(cfg, norm)
  variables = _stats_variables(m, cfg, key)
  tokens, _ = data.batch(key, cfg)
  read = {"last": cfg.seq_len - 1, "first": 0}[readout]  # the position read out
  others = np.array([p for p in range(cfg.seq_len) if p != read])
  shuffled = tokens.at[:, others].set(tokens[:, np.random.default_rng(0).permutation(others)])
  swapped = tokens.at[:, [read, others[3]]].set(tokens[:, [others[3], read]])
  for train in (False, True):
    logits = [_apply(m, variables, t, train)[0] for t in (tokens, shuffled, swapped)]
    np.testing.assert_allclose(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    assert not np.allclose(logits[2], logits[0], rtol=1e-3, atol=1e-3)
