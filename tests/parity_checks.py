"""What the parity tests of the one-block model (test_parity.py), of the deep model
(test_parity_deep.py) and of the deep model on AG News tokens (test_parity_text.py) share:
the forward and backward pass in both frameworks, the parameters the loss does not depend
on, and the comparisons, at the tolerances that test_parity.py's docstring gives and
justifies. Imports PyTorch: import it only after `pytest.importorskip("torch")`."""

import copy
import functools
import math

import jax
import numpy as np
import scipy.stats
import torch

from jaxnorm import data, loss, torch_compat, train
from jaxnorm import torch_reference as ref


def layout(cfg) -> dict:
  """`torch_compat`'s layout arguments for the model of `cfg`."""
  return {"num_blocks": cfg.num_blocks, "placement": cfg.norm_placement}


def block_prefixes(cfg) -> list[str]:
  """The PyTorch name prefix of each block of the model of `cfg`."""
  if cfg.num_blocks == 1:
    return ["transformer_block."]
  return [f"blocks.{i}." for i in range(cfg.num_blocks)]


def numpy_state(torch_model) -> dict[str, np.ndarray]:
  return {k: v.detach().numpy().copy() for k, v in torch_model.state_dict().items()}


def load(torch_model, variables, cfg, norm, **kwargs):
  """jaxnorm variables into `torch_model`, strictly (every name and shape)."""
  state_dict = torch_compat.to_torch(variables, norm, **layout(cfg), **kwargs)
  torch_model.load_state_dict({k: torch.from_numpy(v) for k, v in state_dict.items()}, strict=True)


def flat_components(cfg, norm) -> dict[str, np.ndarray]:
  """Masks (by PyTorch name) of the parameters the training loss does not depend on.

  * in every block, the key bias (in_proj_bias[D:2D]): it adds q . b_k to every logit of
    a query, and softmax ignores a shift shared by all keys;
  * with BatchNorm (training mode), in every block, each bias added uniformly to all
    positions: out_proj.bias, ffn.2.bias and the value bias in_proj_bias[2D:] (attention
    rows sum to 1, so it adds W_o b_v everywhere). Post-norm, the next BatchNorm subtracts
    the batch mean; pre-norm, the residual stream carries the shift, and every norm that
    reads the stream (the later blocks' and the final one, all BatchNorms) subtracts it.

  Their gradients are rounding noise in both frameworks (checked below); Adam divides by
  sqrt(v) ~ |noise|, so these components move by up to ~lr per step, differently in each
  framework, without changing the loss.
  """
  d = cfg.embed_dim
  masks = {}
  for prefix in block_prefixes(cfg):
    in_proj = np.zeros(3 * d, bool)
    in_proj[d : 2 * d] = True
    masks[prefix + "attention.in_proj_bias"] = in_proj
    if norm == "batchnorm":
      in_proj[2 * d :] = True
      masks[prefix + "attention.out_proj.bias"] = np.ones(d, bool)
      masks[prefix + "ffn.2.bias"] = np.ones(d, bool)
  return masks


@functools.partial(jax.jit, static_argnums=0)
def jax_forward_backward(m, variables, tokens, labels):
  """Eval logits and loss, train logits and loss, grads, updated batch_stats, eval logits
  with those statistics."""
  eval_logits = m.apply(variables, tokens, train=False)
  eval_loss = loss.eval_loss(m, variables["params"], variables["batch_stats"], tokens, labels)

  def loss_fn(params):  # as loss.training_loss (what train.train_step differentiates)
    logits, updates = m.apply(
      {"params": params, "batch_stats": variables["batch_stats"]},
      tokens,
      train=True,
      mutable=["batch_stats"],
    )
    return loss.cross_entropy(logits, labels), (logits, updates.get("batch_stats", {}))

  (train_loss, (logits, stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(
    variables["params"]
  )
  eval_after = m.apply({"params": variables["params"], "batch_stats": stats}, tokens, train=False)
  return eval_logits, eval_loss, logits, train_loss, grads, stats, eval_after


def torch_forward_backward(torch_model, X, Y):
  criterion = torch.nn.CrossEntropyLoss()
  torch_model.eval()
  with torch.no_grad():
    eval_logits = torch_model(X)
    eval_loss = criterion(eval_logits, Y).item()
  torch_model.train()
  torch_model.zero_grad()
  logits = torch_model(X)
  loss = criterion(logits, Y)
  loss.backward()
  grads = {n: p.grad.numpy().copy() for n, p in torch_model.named_parameters()}
  torch_model.eval()
  with torch.no_grad():
    eval_after = torch_model(X)
  logits = logits.detach().numpy()
  return eval_logits.numpy(), eval_loss, logits, loss.item(), grads, eval_after.numpy()


def assert_forward_backward_match(cfg, norm, torch_model, m, variables, tokens, labels):
  """Logits and losses (evaluation mode, training mode, evaluation with the updated
  statistics), every gradient and every running statistic of `torch_model` and `m`, which
  hold the same weights, on one batch."""
  X, Y = ref.as_torch_batch(tokens, labels)
  out_j = jax.device_get(jax_forward_backward(m, variables, tokens, labels))
  eval_j, eval_loss_j, logits_j, loss_j, grads_j, stats_j, eval_after_j = out_j
  out_t = torch_forward_backward(torch_model, X, Y)
  eval_t, eval_loss_t, logits_t, loss_t, grads_t, eval_after_t = out_t
  assert logits_j.shape == logits_t.shape == (cfg.batch_size, cfg.num_classes or cfg.vocab_size)

  # Logits and loss, evaluation mode (initial statistics) and training mode.
  np.testing.assert_allclose(eval_j, eval_t, rtol=0, atol=1e-5)
  np.testing.assert_allclose(eval_loss_j, eval_loss_t, rtol=0, atol=1e-5)
  np.testing.assert_allclose(logits_j, logits_t, rtol=0, atol=1e-5)
  np.testing.assert_allclose(loss_j, loss_t, rtol=0, atol=1e-5)
  # Evaluation after the training forward: BatchNorm uses its updated running statistics.
  np.testing.assert_allclose(eval_after_j, eval_after_t, rtol=0, atol=1e-5)

  assert_gradients_match(cfg, norm, grads_j, grads_t)

  # Running statistics after the training forward: same update, unbiased variance.
  state_t = numpy_state(torch_model)
  state_j = torch_compat.to_torch(
    {"params": variables["params"], "batch_stats": stats_j}, norm, **layout(cfg)
  )
  for name in state_t:
    if name.endswith("running_mean"):
      np.testing.assert_allclose(state_j[name], state_t[name], rtol=0, atol=1e-7, err_msg=name)
    if name.endswith("running_var"):
      np.testing.assert_allclose(state_j[name], state_t[name], rtol=1e-6, atol=0, err_msg=name)


def assert_gradients_match(cfg, norm, grads_j, grads_t):
  """A jaxnorm gradient tree and PyTorch's {name: gradient} of the same loss, per tensor:
  ||g_jax - g_torch|| / ||g_torch|| <= 1e-4 over the components the loss depends on; the
  others' (`flat_components`) exact gradient is 0, and both frameworks' rounding noise
  there stays <= 1e-6 of the global gradient norm."""
  grads_j = torch_compat.params_to_torch(grads_j, norm, **layout(cfg))
  assert set(grads_j) == set(grads_t)
  global_norm = math.sqrt(sum(np.sum(g**2) for g in grads_t.values()))
  flat = flat_components(cfg, norm)
  for name, g_t in grads_t.items():
    live = ~flat.get(name, np.zeros(g_t.shape, bool))
    if live.any():
      err = np.linalg.norm(grads_j[name][live] - g_t[live]) / np.linalg.norm(g_t[live])
      assert err <= 1e-4, f"{name}: relative gradient difference {err:.2e}"
    for g in (grads_j[name], g_t):
      assert np.abs(g[~live]).max(initial=0) <= 1e-6 * global_norm, f"{name}: not flat"


def assert_adam_trajectories_match(cfg, norm, torch_model, m, variables, steps):
  """`steps` Adam steps, the library's scanned loop vs the notebook's loop, same batches:
  losses, final parameters off the flat components, BatchNorm running variances, and the
  flat components' drift leaves the loss unchanged."""
  # A fresh Adam state at the norm's learning rate, holding the reference's weights.
  state = train.init_state(m, cfg.task, jax.random.key(2), cfg.learning_rate_for(norm))
  state = state._replace(
    params=variables["params"], batch_stats=variables["batch_stats"], data_key=jax.random.key(2)
  )
  # The batches train.train_steps draws: batch t from fold_in(data_key, t).
  batches = [
    ref.as_torch_batch(*data.batch(jax.random.fold_in(state.data_key, t), cfg))
    for t in range(steps)
  ]
  train_steps = jax.jit(train.train_steps, static_argnums=(0, 1, 3, 4))
  state, losses_j = train_steps(m, cfg.task, state, steps, True)

  optimizer = ref.make_optimizer(torch_model, cfg.learning_rate_for(norm))
  losses_t = ref.train_steps(torch_model, optimizer, batches)
  np.testing.assert_allclose(losses_j, losses_t, rtol=1e-4, atol=0)
  X, Y = batches[-1]
  assert_trained_models_match(cfg, norm, torch_model, state.params, state.batch_stats, steps, X, Y)


def assert_trained_models_match(cfg, norm, torch_model, params, batch_stats, steps, X, Y):
  """After `steps` Adam steps in both frameworks: the parameters off the flat components
  (atol 1e-4), BatchNorm running variances (rtol 1e-4), and the flat components' drift
  leaves `torch_model`'s training loss on the batch (X, Y) unchanged."""
  final_j = torch_compat.to_torch(
    {"params": params, "batch_stats": batch_stats},
    norm,
    num_batches_tracked=steps,
    **layout(cfg),
  )
  final_t = numpy_state(torch_model)
  flat = flat_components(cfg, norm)
  for name, _ in torch_model.named_parameters():
    keep = ~flat.get(name, np.zeros(final_t[name].shape, bool))
    np.testing.assert_allclose(
      final_j[name][keep], final_t[name][keep], rtol=0, atol=1e-4, err_msg=name
    )
  # Variance ignores the drift of the flat biases; the mean tracks it (not compared).
  for name in final_t:
    if name.endswith("running_var"):
      np.testing.assert_allclose(final_j[name], final_t[name], rtol=1e-4, atol=0, err_msg=name)

  # Along the flat components the two models differ, but the loss does not: moving the
  # PyTorch model's flat components to jaxnorm's values leaves its training loss unchanged.
  moved = copy.deepcopy(torch_model)
  with torch.no_grad():
    for name, p in moved.named_parameters():
      if name in flat:
        mask = torch.from_numpy(flat[name])
        p[mask] = torch.from_numpy(final_j[name][flat[name]])
  torch_model.train()
  moved.train()
  with torch.no_grad():
    loss_before = torch.nn.functional.cross_entropy(torch_model(X), Y).item()
    loss_moved = torch.nn.functional.cross_entropy(moved(X), Y).item()
  np.testing.assert_allclose(loss_moved, loss_before, rtol=1e-6, atol=0)


def pytorch_uniform_bounds(cfg) -> dict[str, float]:
  """PyTorch's init bounds: Linear U(+-1/sqrt(fan_in)), in_proj Xavier over (3D, D)."""
  d = cfg.embed_dim
  bounds = {"to_vocab.weight": 1 / math.sqrt(d), "to_vocab.bias": 1 / math.sqrt(d)}
  for prefix in block_prefixes(cfg):
    bounds[prefix + "attention.in_proj_weight"] = math.sqrt(6 / (d + 3 * d))
    bounds[prefix + "attention.out_proj.weight"] = 1 / math.sqrt(d)
    bounds[prefix + "ffn.0.weight"] = 1 / math.sqrt(d)
    bounds[prefix + "ffn.0.bias"] = 1 / math.sqrt(d)
    bounds[prefix + "ffn.2.weight"] = 1 / math.sqrt(4 * d)
    bounds[prefix + "ffn.2.bias"] = 1 / math.sqrt(4 * d)
  return bounds


def assert_drawn_alike(init_j, init_t, bounds):
  """Each tensor of two initial state_dicts follows the same distribution: constants equal;
  otherwise the same support (inside the bound of `bounds`, where given, and reaching it),
  a two-sample KS test, mean and std within 5 standard errors."""
  assert set(init_j) == set(init_t)
  for name, w_t in init_t.items():
    w_j = init_j[name]
    assert w_j.shape == w_t.shape, name
    if np.all(w_t == w_t.flat[0]):  # constants: zero biases, unit scales, initial statistics
      np.testing.assert_array_equal(w_j, w_t, err_msg=name)
      continue
    a, b = w_j.ravel().astype(np.float64), w_t.ravel().astype(np.float64)
    n = a.size
    if name in bounds:  # same support: inside the bound, and reaching it
      for w in (a, b):
        assert np.abs(w).max() <= bounds[name] and np.abs(w).max() >= bounds[name] * (1 - 20 / n)
    p = scipy.stats.ks_2samp(a, b).pvalue
    assert p > 1e-3, f"{name}: KS p = {p:.1e}"
    assert abs(a.mean() - b.mean()) <= 5 * math.sqrt((a.var() + b.var()) / n), name
    kurt = scipy.stats.kurtosis(b, fisher=False)
    se_std = b.std() * math.sqrt((kurt - 1) / (4 * n))  # standard error of a std estimate
    assert abs(a.std() - b.std()) <= 5 * math.sqrt(2) * se_std, name
