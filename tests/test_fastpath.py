"""The fast logits paths are exact rewrites of the reference forward pass.

Every comparison runs at float32 on random tokens (repeats and the spare tokens
included) and random parameters (and random BatchNorm statistics), and requires the fast
result to match the full one elementwise within atol + rtol * |full| with
rtol = atol = 1e-5 for losses, logits and every gradient leaf.

Some parameters have a gradient that is exactly zero in exact arithmetic (`_gauge`): the
key bias, since softmax ignores a shift shared by all keys, and, under BatchNorm in
training, the biases added just before a BatchNorm, whose batch mean it subtracts. Their
computed gradients are rounding noise (~1e-8) that differs between any two ways of
computing, and Adam scales noise up to steps of about the learning rate, as it does in
the reference. So after an optimizer step those entries differ while the loss does not
depend on them; the tests check all that rather than hide it.
"""

import functools

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import config, landscape, loss, model, norms, train

NORMS = sorted(norms.REGISTRY)
TOL = dict(rtol=1e-5, atol=1e-5)


@functools.cache
def _random_setup(norm, seed=0, placement="post", readout="last", num_blocks=1):
  """On TINY (with that layout): a model, a TrainState (at the norm's learning rate) with
  perturbed parameters and statistics, and random tokens (uniform over the whole
  vocabulary, so with repeats) and labels."""
  cfg = config.TINY.replace(norm_placement=placement, readout=readout, num_blocks=num_blocks)
  m = model.build(cfg, norm)
  return (m, *_random_arrays(m, cfg, cfg.learning_rate_for(norm), jax.random.key(seed)))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _random_arrays(m, cfg, learning_rate, key):
  # 16 keys: room for pre-norm's six statistics; split's first keys do not depend on
  # the count, so the one-block post-norm models draw what they drew with 8.
  keys = iter(jax.random.split(key, 16))
  state = train.init_state(m, cfg.task, next(keys), learning_rate)
  leaves, treedef = jax.tree.flatten(state.params)
  noise = [
    0.2 * jax.random.normal(k, x.shape)
    for k, x in zip(jax.random.split(next(keys), len(leaves)), leaves, strict=True)
  ]
  params = jax.tree.unflatten(treedef, [x + n for x, n in zip(leaves, noise, strict=True)])
  batch_stats = jax.tree.map(
    lambda x: jax.random.uniform(next(keys), x.shape, minval=0.5, maxval=2.0),
    state.batch_stats,
  )
  state = state._replace(params=params, batch_stats=batch_stats)
  tokens = jax.random.randint(next(keys), (cfg.batch_size, cfg.seq_len), 0, cfg.vocab_size)
  labels = jax.random.randint(next(keys), (cfg.batch_size,), 0, cfg.vocab_size)
  return state, tokens, labels


@functools.partial(jax.jit, static_argnums=(0, 3))
def _apply(m, variables, tokens, train_mode):
  return m.apply(variables, tokens, train=train_mode, mutable=["batch_stats"])


@functools.partial(jax.jit, static_argnums=(0, 3))
def _all_logits(m, variables, tokens, train_mode):
  """(logits, batch-stats updates) of every path that is exact for this norm and mode."""
  apply = lambda **kw: m.apply(variables, tokens, train=train_mode, mutable=["batch_stats"], **kw)
  outs = {"full": apply(), "fast": apply(method=model.Transformer.fast_logits)}
  if m.table_is_exact(train_mode):
    outs["table"] = apply(project_table=True)
  if m.readout_token_is_exact(train_mode):
    outs["readout"] = apply(method=model.Transformer.readout_token_logits)
  return outs


def _gauge(params, norm, train_mode):
  """Boolean tree, True where the true gradient is identically zero (see the docstring)."""
  mask = jax.tree.map(lambda x: np.zeros(x.shape, bool), params)
  d = mask["transformer_block"]["attention"]["out_proj"]["bias"].shape[0]
  mask["transformer_block"]["attention"]["in_proj"]["bias"][d : 2 * d] = True  # key bias
  if norm == "batchnorm" and train_mode:
    mask["transformer_block"]["attention"]["in_proj"]["bias"][2 * d :] = True  # value bias
    mask["transformer_block"]["attention"]["out_proj"]["bias"][:] = True
    mask["transformer_block"]["ffn"]["down"]["bias"][:] = True
  return mask


def _assert_close_off_gauge(fast, full, mask):
  jax.tree.map(
    lambda a, b, g: np.testing.assert_allclose(np.where(g, 0, a), np.where(g, 0, b), **TOL),
    fast,
    full,
    mask,
  )


@pytest.mark.parametrize("train_mode", [False, True])
@pytest.mark.parametrize("norm", NORMS)
def test_fast_logits_equal_call(norm, train_mode):
  m, state, tokens, _ = _random_setup(norm)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  outs = _all_logits(m, variables, tokens, train_mode)
  assert "table" in outs  # post-norm: attention projects the embeddings themselves
  assert ("readout" in outs) == model.per_token(norm, train_mode)
  full = outs.pop("full")
  for name, out in outs.items():
    chex.assert_trees_all_close(out, full, **TOL, custom_message=name)


# One block's other layouts (the default, post-norm read out last, is tested above).
ONE_BLOCK_LAYOUTS = [("pre", "last"), ("post", "first"), ("pre", "first")]


@pytest.mark.parametrize("placement, readout", ONE_BLOCK_LAYOUTS)
@pytest.mark.parametrize("norm", NORMS)
def test_one_block_fast_logits_equal_call_in_every_layout(norm, placement, readout):
  """With one block, whatever the norms' placement and the read-out position, each path
  that is exact in this mode gives `__call__`'s logits and statistics."""
  m, state, tokens, _ = _random_setup(norm, placement=placement, readout=readout)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  for train_mode in (False, True):
    outs = _all_logits(m, variables, tokens, train_mode)
    per_token = model.per_token(norm, train_mode)
    assert ("readout" in outs) == per_token
    assert ("table" in outs) == (placement == "post" or per_token)
    full = outs.pop("full")
    for name, out in outs.items():
      chex.assert_trees_all_close(out, full, **TOL, custom_message=f"{name}, train={train_mode}")


def test_project_table_refuses_pre_norm_batchnorm_training():
  """Pre-norm, attention projects norm1 of the embeddings, which BatchNorm in training
  computes with the batch's statistics: no table of the vocabulary holds it."""
  m, state, tokens, _ = _random_setup("batchnorm", placement="pre")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  assert not m.table_is_exact(True) and m.table_is_exact(False)
  with pytest.raises(ValueError, match="project_table is not exact.*placement='pre'"):
    m.apply(variables, tokens, train=True, mutable=["batch_stats"], project_table=True)


@pytest.mark.parametrize("placement, readout", [("post", "last"), ("pre", "first")])
@pytest.mark.parametrize("norm", ["layernorm", "batchnorm"])
def test_deep_fast_logits_are_call_and_the_one_block_paths_refuse(norm, placement, readout):
  """With several blocks no shortcut is exact (later blocks need every position):
  `fast_logits` is `__call__`, and the one-block paths raise."""
  m, state, tokens, _ = _random_setup(norm, placement=placement, readout=readout, num_blocks=2)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  for train_mode in (False, True):
    outs = _all_logits(m, variables, tokens, train_mode)
    assert set(outs) == {"full", "fast"}
    chex.assert_trees_all_close(outs["fast"], outs["full"], **TOL)
    for kwargs in ({"method": model.Transformer.readout_token_logits}, {"project_table": True}):
      with pytest.raises(ValueError, match="not exact for num_blocks=2"):
        m.apply(variables, tokens, train=train_mode, mutable=["batch_stats"], **kwargs)


def test_last_token_path_refuses_batchnorm_training():
  m, state, tokens, _ = _random_setup("batchnorm")
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  assert not model.per_token("batchnorm", True)
  assert model.per_token("batchnorm", False)
  assert model.per_token("layernorm", True) and model.per_token("none", True)
  with pytest.raises(ValueError, match="fast_logits"):
    m.apply(
      variables,
      tokens,
      train=True,
      mutable=["batch_stats"],
      method=model.Transformer.readout_token_logits,
    )


@pytest.mark.parametrize("norm", NORMS)
def test_training_loss_gradients_and_batch_stats_equal(norm):
  m, state, tokens, labels = _random_setup(norm)
  results = {}
  for fast in (True, False):
    grad_fn = jax.jit(
      jax.value_and_grad(loss.training_loss, argnums=1, has_aux=True), static_argnums=(0, 5)
    )
    results[fast] = grad_fn(m, state.params, state.batch_stats, tokens, labels, fast)
  (fast_loss, fast_updates), fast_grads = results[True]
  (full_loss, full_updates), full_grads = results[False]
  np.testing.assert_allclose(fast_loss, full_loss, **TOL)
  chex.assert_trees_all_close(fast_grads, full_grads, **TOL)
  chex.assert_trees_all_close(fast_updates, full_updates, **TOL)
  # The comparison is not vacuous: every gradient entry but the gauge ones is far from
  # zero somewhere in its leaf, and the gauge ones are rounding noise in both paths.
  mask = _gauge(full_grads, norm, True)
  for grads in (fast_grads, full_grads):
    for g, gauge in zip(jax.tree.leaves(grads), jax.tree.leaves(mask), strict=True):
      g = np.asarray(g)
      assert np.all(np.abs(g[gauge]) < 1e-6)
      assert np.all(gauge) or np.abs(g[~gauge]).max() > 1e-4


@pytest.mark.parametrize("norm", NORMS)
def test_eval_loss_and_gradients_equal(norm):
  m, state, tokens, labels = _random_setup(norm)
  results = {}
  for fast in (True, False):
    grad_fn = jax.jit(jax.value_and_grad(loss.eval_loss, argnums=1), static_argnums=(0, 5))
    results[fast] = grad_fn(m, state.params, state.batch_stats, tokens, labels, fast)
  np.testing.assert_allclose(results[True][0], results[False][0], **TOL)
  chex.assert_trees_all_close(results[True][1], results[False][1], **TOL)


@pytest.mark.parametrize("norm", NORMS)
def test_train_step_equal_and_vmappable(norm):
  """One step (loss, Adam update off the gauge entries, BatchNorm statistics) is the same
  both ways, also vmapped over two independent states; the gauge entries, where the
  updates are amplified noise, do not change the logits."""
  m, state, tokens, labels = _random_setup(norm)
  _, state2, tokens2, labels2 = _random_setup(norm, seed=1)
  stack = lambda a, b: jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)
  states, tokens_2, labels_2 = stack(state, state2), stack(tokens, tokens2), stack(labels, labels2)
  outs = {}
  for fast in (True, False):
    step = lambda s, t, y, fast=fast: train.train_step(m, s, t, y, fast)
    outs[fast] = jax.jit(jax.vmap(step))(states, tokens_2, labels_2)
  (fast_states, fast_losses), (full_states, full_losses) = outs[True], outs[False]
  np.testing.assert_allclose(fast_losses, full_losses, **TOL)
  chex.assert_trees_all_close(fast_states.batch_stats, full_states.batch_stats, **TOL)
  mask = _gauge(state.params, norm, True)
  _assert_close_off_gauge(fast_states.params, full_states.params, mask)
  first = lambda t: jax.tree.map(lambda x: x[0], t)
  for train_mode in (False, True):
    logits = [
      _apply(
        m, {"params": first(s.params), "batch_stats": first(s.batch_stats)}, tokens, train_mode
      )[0]
      for s in (fast_states, full_states)
    ]
    if train_mode or norm != "batchnorm":  # BatchNorm's running mean lags its biases.
      np.testing.assert_allclose(logits[0], logits[1], **TOL)
  single, single_loss = jax.jit(lambda s: train.train_step(m, s, tokens2, labels2))(state2)
  np.testing.assert_allclose(fast_losses[1], single_loss, **TOL)
  second = jax.tree.map(lambda x: x[1], fast_states)
  chex.assert_trees_all_close(second.batch_stats, single.batch_stats, **TOL)
  _assert_close_off_gauge(second.params, single.params, mask)


def test_landscape_slice_equal_for_batchnorm():
  m, state, tokens, labels = _random_setup("batchnorm")
  direction = landscape.random_direction(jax.random.key(9), state.params)
  offsets = landscape.alphas(5, 0.5)
  slices = {
    fast: jax.jit(
      lambda p, d, o, fast=fast: landscape.loss_slice(
        loss.eval_loss_fn(m, state.batch_stats, tokens, labels, fast), p, d, o, None
      )
    )(state.params, direction, offsets)
    for fast in (True, False)
  }
  np.testing.assert_allclose(slices[True], slices[False], **TOL)


def _flops(fn, *args) -> float:
  return jax.jit(fn).lower(*args).cost_analysis()["flops"]


@pytest.mark.parametrize("norm", NORMS)
def test_fast_path_is_selected_at_paper_size(norm):
  """XLA's own FLOP count: the per-token norms train (and every norm evaluates) with over
  10x fewer FLOPs; BatchNorm training still saves the per-token q, k, v projection."""
  cfg = config.PAPER
  m = model.build(cfg, norm)
  state = jax.eval_shape(
    lambda: train.init_state(m, cfg.task, jax.random.key(0), cfg.learning_rate_for(norm))
  )
  tokens = jax.ShapeDtypeStruct((cfg.batch_size, cfg.seq_len), jnp.int32)
  labels = jax.ShapeDtypeStruct((cfg.batch_size,), jnp.int32)
  step = {
    f: _flops(lambda s, t, y, f=f: train.train_step(m, s, t, y, f), state, tokens, labels)
    for f in (True, False)
  }
  ev = {
    f: _flops(
      lambda s, t, y, f=f: loss.eval_loss(m, s.params, s.batch_stats, t, y, f),
      state,
      tokens,
      labels,
    )
    for f in (True, False)
  }
  assert ev[False] / ev[True] > 10
  if not model.per_token(norm, True):  # BatchNorm
    assert step[False] / step[True] > 1.2
  else:
    assert step[False] / step[True] > 10
