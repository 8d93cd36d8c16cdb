"""Held-out evaluation of a model trained on a text data set: the test split's loss and
accuracy, which the reference's Experiment 4 does not report (it reports the running
training accuracy of the last epoch: `epochs.epoch_accuracy`).

Traced inside `analysis.analyze_seeds`' program; nothing here is jitted.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnorm import data, epochs, loss
from jaxnorm import model as model_lib

PyTree = Any


def test_measures(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  task: data.TextTask,
  arrays: data.TextArrays,
) -> dict[str, jax.Array]:
  """The test split's mean cross-entropy ("test_loss", nats) and accuracy ("test_accuracy",
  a fraction) in evaluation mode, over every test example once: batches of B (the last
  padded by wrap-around at weight 0, as a training epoch's), one after another."""
  plan = epochs.EpochPlan(task.num_test, task.batch_size)
  positions_KxB = jnp.arange(plan.steps_per_epoch * plan.batch_size).reshape(
    plan.steps_per_epoch, plan.batch_size
  )

  def totals(positions_B):
    rows_B = positions_B % task.num_test
    weights_B = (positions_B < task.num_test).astype(jnp.float32)
    tokens_BxL, labels_B = arrays.test_tokens[rows_B], arrays.test_labels[rows_B]
    logits_BxC = model.apply(
      {"params": params, "batch_stats": batch_stats},
      tokens_BxL,
      train=False,
      method=loss.logits_method(True),
    )
    ce = epochs.weighted_cross_entropy(logits_BxC, labels_B, weights_B) * jnp.sum(weights_B)
    return ce, epochs.weighted_correct(logits_BxC, labels_B, weights_B)

  ce_K, correct_K = jax.lax.map(totals, positions_KxB)
  return {
    "test_loss": jnp.sum(ce_K) / task.num_test,
    "test_accuracy": jnp.sum(correct_K) / task.num_test,
  }
