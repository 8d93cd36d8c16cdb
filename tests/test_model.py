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
