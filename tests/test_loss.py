"""The loss (`jaxnorm.loss`): cross-entropy of labels inside the classes only (checked in
eager calls), the evaluation loss with the stored BatchNorm statistics, and `eval_loss_fn`
over several equal batches, which is the loss of them concatenated."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import HESSIAN_CFG, model_and_state, tiny_model_problem

from jaxnorm import config, data, loss


@pytest.mark.parametrize("bad", [-1, 5])
def test_labels_outside_the_classes_raise_in_eager_calls(bad):
  logits = jnp.zeros((3, 5))
  assert float(loss.cross_entropy(logits, jnp.array([0, 4, 2]))) == pytest.approx(math.log(5))
  with pytest.raises(ValueError, match=f"labels must be in \\[0, 5\\), got {bad}"):
    loss.cross_entropy(logits, jnp.array([0, bad, 2]))


def test_eval_loss_leaves_batch_stats_alone(key):
  cfg = config.TINY
  m, state = model_and_state(cfg, "batchnorm", key)
  tokens, labels = data.batch(key, cfg)
  value = loss.eval_loss(m, state.params, state.batch_stats, tokens, labels)
  chex.assert_shape(value, ())
  np.testing.assert_allclose(value, np.log(cfg.vocab_size), rtol=0.3)


# At float32 tolerances on any device (conftest.full_precision).
@pytest.mark.usefixtures("full_precision")
def test_eval_loss_fn_averages_equal_batches_like_one_concatenated_batch(key):
  m, params, bs, _, _ = tiny_model_problem("batchnorm", key)
  batches = [data.batch(jax.random.fold_in(key, 10 + i), HESSIAN_CFG) for i in range(3)]
  tokens = [b[0] for b in batches]
  labels = [b[1] for b in batches]
  as_list = loss.eval_loss_fn(m, bs, tokens, labels)
  stacked = loss.eval_loss_fn(m, bs, jnp.stack(tokens), jnp.stack(labels))
  concatenated = loss.eval_loss_fn(m, bs, jnp.concatenate(tokens), jnp.concatenate(labels))
  np.testing.assert_allclose(as_list(params), concatenated(params), rtol=1e-6)
  np.testing.assert_allclose(stacked(params), concatenated(params), rtol=1e-6)
  with pytest.raises(ValueError, match=r"\(K, B, L\)"):
    loss.eval_loss_fn(m, bs, tokens[0], labels[0][:3])
