"""Curvature over training: the Hessian's largest eigenvalue and Adam's preconditioned
sharpness, measured inside the compiled training program at the end of every chunk.

Gradient descent drives lambda_max up to its stability threshold 2/eta and hovers there
(the edge of stability, Cohen et al. 2021). For Adam the quantity that does so is the
preconditioned sharpness lambda_max(P^-1 H), P = diag(sqrt(v_hat) + eps) with v_hat Adam's
bias-corrected second moment, and the threshold is 2 (1 + beta1) / ((1 - beta1) eta) =
38 / eta for beta1 = 0.9 (Cohen et al. 2022). Both are computed on the training-mode loss
(what the optimizer sees; BatchNorm with batch statistics) of one fixed batch, by Lanczos
from one fixed start (`keys.RunKeys.curvature`); P^-1 H has the eigenvalues of the
symmetric P^-1/2 H P^-1/2, which Lanczos takes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from jax.flatten_util import ravel_pytree

from jaxnorm import curvature, data, loss, train
from jaxnorm import model as model_lib


def stability_threshold(learning_rate: float | jax.Array) -> float | jax.Array:
  """Adam's preconditioned-sharpness threshold 2 (1 + beta1) / ((1 - beta1) eta)."""
  return 2 * (1 + train.ADAM_B1) / ((1 - train.ADAM_B1) * learning_rate)


def preconditioner(state: train.TrainState):
  """Adam's P = sqrt(v_hat) + eps, shaped like the params (v_hat = nu / (1 - beta2^t))."""
  nu = optax.tree_utils.tree_get(state.opt_state, "nu")
  t = jnp.maximum(state.step, 1).astype(jnp.float32)
  correction = 1 - train.ADAM_B2**t
  return jax.tree.map(lambda v: jnp.sqrt(v / correction) + train.ADAM_EPS, nu)


def top_eigenvalues(
  model: model_lib.Transformer,
  task: data.TaskShape,
  state: train.TrainState,
  key: jax.Array,
  num_iterations: int,
  arrays: data.TextArrays | None = None,
) -> jax.Array:
  """(lambda_max(H), lambda_max(P^-1 H)) of the training-mode loss at `state`: (2,).
  `arrays`: a text task's data (`data.batch`), None for the synthetic task."""
  batch_key, lanczos_key = jax.random.split(key)
  tokens_BxL, labels_B = data.batch(batch_key, task, arrays=arrays)
  loss_fn = loss.train_mode_loss_fn(model, state.batch_stats, tokens_BxL, labels_B)
  matvec, p = curvature.flat_hvp(loss_fn, state.params)
  top = curvature.lanczos(
    loss_fn, state.params, lanczos_key, num_iterations=num_iterations, hvp_flat=(matvec, p)
  )
  d_P = 1 / jnp.sqrt(ravel_pytree(preconditioner(state))[0])
  scaled = lambda v_P: d_P * matvec(d_P * v_P)  # noqa: E731
  pre = curvature.lanczos(
    loss_fn, state.params, lanczos_key, num_iterations=num_iterations, hvp_flat=(scaled, p)
  )
  return jnp.stack([top.eigenvalues[0], pre.eigenvalues[0]])
