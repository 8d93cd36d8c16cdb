"""The loss: mean cross-entropy of the logits read at the last position.

Every part of jaxnorm evaluates the model's loss through this module: training
(`training_loss`), the landscape slices, curvature and sharpness (`eval_loss`, and
`eval_loss_fn`, which fixes everything but the parameters).

`fast` (a static Python bool, default True) selects how the logits are computed, not
what: `Transformer.fast_logits` reads only the last position where the norm acts on each
token alone in that mode (LayerNorm, RMSNorm, L2, none; BatchNorm in evaluation) and
otherwise keeps every position but projects the embedding table once. Both are exact
rewrites of `Transformer.__call__`, which `fast=False` runs, for comparison.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxnorm import epochs
from jaxnorm import model as model_lib

PyTree = Any
LossFn = Callable[[PyTree], jax.Array]


def cross_entropy(logits_BxV: jax.Array, labels_B: jax.Array) -> jax.Array:
  """Mean cross-entropy in nats, `torch.nn.CrossEntropyLoss()`. Labels of a concrete
  array outside [0, V) raise ValueError (`model.check_ids`); under jit they are not
  checked."""
  model_lib.check_ids(labels_B, logits_BxV.shape[-1], "labels")
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxV, labels_B).mean()


def logits_method(fast: bool):
  """The model method that computes the logits: the fast exact one, or `__call__`."""
  return model_lib.Transformer.fast_logits if fast else model_lib.Transformer.__call__


def training_logits(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  fast: bool = True,
) -> tuple[jax.Array, PyTree]:
  """Training-mode logits (B, C) and the updated `batch_stats` (BatchNorm's running
  statistics after this batch; {} for the other norms)."""
  logits_BxV, updates = model.apply(
    {"params": params, "batch_stats": batch_stats},
    tokens_BxL,
    train=True,
    mutable=["batch_stats"],
    method=logits_method(fast),
  )
  return logits_BxV, updates.get("batch_stats", {})


def training_loss(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> tuple[jax.Array, PyTree]:
  """Training-mode loss and the updated `batch_stats` (see `training_logits`)."""
  logits_BxV, batch_stats = training_logits(model, params, batch_stats, tokens_BxL, fast)
  return cross_entropy(logits_BxV, labels_B), batch_stats


def weighted_training_loss(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  weights_B: jax.Array,
  fast: bool = True,
) -> tuple[jax.Array, tuple[PyTree, jax.Array]]:
  """Training-mode loss over the rows of weight 1 (`epochs.weighted_cross_entropy`: a
  padded last batch of an epoch trains as the smaller batch it stands for), and
  (updated `batch_stats`, the number of those rows predicted right, () float32)."""
  logits_BxC, batch_stats = training_logits(model, params, batch_stats, tokens_BxL, fast)
  value = epochs.weighted_cross_entropy(logits_BxC, labels_B, weights_B)
  return value, (batch_stats, epochs.weighted_correct(logits_BxC, labels_B, weights_B))


def eval_loss(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> jax.Array:
  """Evaluation-mode loss (BatchNorm uses, and does not change, its running statistics)."""
  logits_BxV = model.apply(
    {"params": params, "batch_stats": batch_stats},
    tokens_BxL,
    train=False,
    method=logits_method(fast),
  )
  return cross_entropy(logits_BxV, labels_B)


def eval_loss_fn(
  model: model_lib.Transformer,
  batch_stats: PyTree,
  tokens: jax.Array | Sequence[jax.Array],
  labels: jax.Array | Sequence[jax.Array],
  fast: bool = True,
) -> LossFn:
  """params -> evaluation-mode loss of `model` on a fixed evaluation set: the function
  whose landscape, Hessian and sharpness jaxnorm measures.

  The set is one batch (tokens (N, L), labels (N,)) or K equal-sized batches, given
  stacked (tokens (K, B, L), labels (K, B)) or as lists of (B, L) / (B,) arrays. K
  batches are evaluated one after another (`lax.map`, bounded memory) and their mean
  losses averaged, which equals the mean loss over all K * B examples. BatchNorm
  normalizes with, and does not change, its running statistics, so the loss is a
  deterministic function of the parameters alone.
  """
  if isinstance(tokens, (list, tuple)):
    tokens, labels = jnp.stack(tokens), jnp.stack(labels)
  tokens, labels = jnp.asarray(tokens), jnp.asarray(labels)
  if tokens.ndim == 2 and labels.shape == tokens.shape[:1]:
    return lambda params: eval_loss(model, params, batch_stats, tokens, labels, fast)
  if tokens.ndim == 3 and labels.shape == tokens.shape[:2]:

    def mean_loss(params):
      per_batch = lambda batch: eval_loss(model, params, batch_stats, *batch, fast)  # noqa: E731
      return jnp.mean(jax.lax.map(per_batch, (tokens, labels)))

    return mean_loss
  raise ValueError(
    f"tokens {tokens.shape} and labels {labels.shape} must be (N, L) and (N,), "
    "or (K, B, L) and (K, B) for K batches"
  )


def train_mode_loss_fn(
  model: model_lib.Transformer,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> LossFn:
  """params -> training-mode loss on one batch: BatchNorm normalizes with the batch's own
  statistics (the running ones are neither used nor changed), so a perturbation of the
  weights before it is renormalized, as during training. For the other norms it is
  `eval_loss_fn`'s function."""
  return lambda params: training_loss(model, params, batch_stats, tokens_BxL, labels_B, fast)[0]
