"""Epochs over a fixed data set, batched inside compiled programs, as a shuffled DataLoader.

Experiment 4 trains on AG News, whose N = 120,000 token rows `tokens_NxL` and labels
`labels_N` live on the device. The reference reads them with PyTorch's
`DataLoader(shuffle=True, batch_size=256)`: each epoch is a fresh random order of all N
examples, cut into ceil(N / B) = 469 batches, the last of which holds the remaining
N - 468 * 256 = 192 examples. Here:

- epoch e's order is `jax.random.permutation(fold_in(data_key, e), N)` (`epoch_permutation`);
- step t is batch i = t mod S of epoch e = t // S, S = ceil(N / B) (`batch_indices`): the
  entries i * B .. i * B + B - 1 of that order. Batch t depends only on the run's data key
  and t, never on how the steps are chunked, vmapped or scanned;
- every batch has the fixed shape B, so one compiled step serves the whole run. The last
  batch of an epoch is padded with the epoch's first B - B' entries (positions wrap around
  modulo N), B' = `EpochPlan.last_batch_size`, which carry weight 0; real rows weigh 1.
  Padding rows are thus real examples of the same epoch, never one row repeated;
- `weighted_cross_entropy` and `weighted_correct` count real rows only: the loss is then the
  mean over the B' real rows, PyTorch's smaller last batch, in value and gradient.

What the padding costs: the last batch computes B rows for B' real ones, B - B' rows wasted
per epoch out of N. For AG News 64 rows per 120,000, 0.053% extra work (469 * 256 = 120,064
rows computed per epoch).

What it does not reproduce: a norm that mixes the rows of a batch (BatchNorm in training
mode) normalizes the real rows of the last batch with statistics over all B rows, padding
included, and updates its running statistics with them; PyTorch's last batch uses its B'
rows alone. Norms that act on each token alone (LayerNorm, RMSNorm, L2, none) are exact:
padding rows do not change the real rows' outputs.

What the shuffling costs: `batch_indices` recomputes the epoch's permutation for its one
step (a sort of N random keys, twice for N = 120,000): 45-84 ms for N = 120,000 on two busy
CPU cores, seconds over an epoch. Training (`jaxnorm.train.train_epoch_steps`) draws each
epoch's permutation once, when the epoch starts, and takes its batches with `rows_of_batch`;
`epoch_batches` gives a whole epoch's batches at once. All three give the same rows.

All functions are pure; all but `epoch_accuracy` (host-side numpy) are traceable, a traced
`step` or `epoch` included. The `EpochPlan` is a hashable static argument.
"""

from __future__ import annotations

import operator
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import layers

INT32_MAX = 2**31 - 1


class EpochPlan(NamedTuple):
  """How N examples are cut into batches of B: hashable, a cheap static jit argument.

  Build it with `epoch_plan`, which checks the sizes; every function here checks it again.
  """

  num_examples: int  # N, examples in the data set (120,000 for AG News)
  batch_size: int  # B, rows of every batch (256)

  @property
  def steps_per_epoch(self) -> int:
    """S = ceil(N / B): batches per epoch (469 for AG News)."""
    return -(-self.num_examples // self.batch_size)

  @property
  def last_batch_size(self) -> int:
    """B' = N - (S - 1) * B, real examples in an epoch's last batch, in [1, B] (192)."""
    return self.num_examples - (self.steps_per_epoch - 1) * self.batch_size


def check_plan(plan: EpochPlan) -> None:
  """Raises ValueError unless N and B are integers >= 1 and S * B fits in int32 (the
  positions inside an epoch are int32)."""
  for name, value in zip(plan._fields, plan, strict=True):
    try:
      ok = not isinstance(value, bool) and operator.index(value) >= 1
    except TypeError:
      ok = False
    if not ok:
      raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
  if plan.steps_per_epoch * plan.batch_size > INT32_MAX:
    raise ValueError(
      f"{plan.steps_per_epoch} batches of {plan.batch_size} exceed int32 positions "
      f"(num_examples {plan.num_examples})"
    )


def epoch_plan(num_examples: int, batch_size: int) -> EpochPlan:
  """The checked `EpochPlan` of N = `num_examples` examples in batches of B = `batch_size`.
  Raises ValueError (naming the value) for N < 1, B < 1 or a non-integer."""
  plan = EpochPlan(num_examples, batch_size)
  check_plan(plan)
  return EpochPlan(operator.index(num_examples), operator.index(batch_size))


def epoch_permutation(data_key: jax.Array, epoch: int | jax.Array, num_examples: int):
  """The order of epoch `epoch` (0-based): (N,) int32, a permutation of 0 .. N - 1,
  `jax.random.permutation(fold_in(data_key, epoch), N)`. `epoch` may be traced."""
  key = jax.random.fold_in(data_key, epoch)
  return jax.random.permutation(key, num_examples).astype(jnp.int32)


def _rows(perm_N: jax.Array, positions: jax.Array, plan: EpochPlan):
  """The indices at `positions` of an epoch (wrapping modulo N) and their weights: 1.0 for
  positions < N, 0.0 for the padding beyond."""
  indices = perm_N[positions % plan.num_examples]
  weights = (positions < plan.num_examples).astype(jnp.float32)
  return indices, weights


def batch_indices(
  data_key: jax.Array, step: int | jax.Array, plan: EpochPlan
) -> tuple[jax.Array, jax.Array]:
  """Which examples step `step` (0-based, may be traced) trains on: (indices_B int32,
  weights_B float32).

  Batch i = step mod S of epoch step // S: entries i * B .. i * B + B - 1 of the epoch's
  permutation, weight 1. In the last batch, the B - B' positions past N wrap to the epoch's
  first entries, with weight 0. Depends only on (data_key, step).
  """
  check_plan(plan)
  step = jnp.asarray(step, jnp.int32)
  epoch, i = step // plan.steps_per_epoch, step % plan.steps_per_epoch
  perm_N = epoch_permutation(data_key, epoch, plan.num_examples)
  positions_B = i * plan.batch_size + jnp.arange(plan.batch_size, dtype=jnp.int32)
  return _rows(perm_N, positions_B, plan)


def epoch_batches(
  data_key: jax.Array, epoch: int | jax.Array, plan: EpochPlan
) -> tuple[jax.Array, jax.Array]:
  """All batches of epoch `epoch` from one permutation: (indices_SxB int32, weights_SxB
  float32), row i equal to `batch_indices(data_key, epoch * S + i, plan)`."""
  check_plan(plan)
  perm_N = epoch_permutation(data_key, epoch, plan.num_examples)
  positions = jnp.arange(plan.steps_per_epoch * plan.batch_size, dtype=jnp.int32)
  positions_SxB = positions.reshape(plan.steps_per_epoch, plan.batch_size)
  return _rows(perm_N, positions_SxB, plan)


def rows_of_batch(
  perm_N: jax.Array, step: int | jax.Array, plan: EpochPlan
) -> tuple[jax.Array, jax.Array]:
  """`batch_indices` of step `step` from its epoch's order `perm_N` (`epoch_permutation` of
  epoch step // S), drawn once for the whole epoch: (indices_B int32, weights_B float32)."""
  i = jnp.asarray(step, jnp.int32) % plan.steps_per_epoch
  return _rows(perm_N, i * plan.batch_size + jnp.arange(plan.batch_size, dtype=jnp.int32), plan)


def batch_at(
  data_key: jax.Array,
  step: int | jax.Array,
  plan: EpochPlan,
  tokens_NxL: jax.Array,
  labels_N: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The batch of step `step`: (tokens_BxL, labels_B, weights_B), the rows
  `batch_indices(data_key, step, plan)` of the data (gathered on the device)."""
  if tokens_NxL.shape[0] != plan.num_examples or labels_N.shape != (plan.num_examples,):
    raise ValueError(
      f"tokens {tokens_NxL.shape} and labels {labels_N.shape} must have "
      f"num_examples = {plan.num_examples} rows"
    )
  indices_B, weights_B = batch_indices(data_key, step, plan)
  tokens_BxL = jnp.take(tokens_NxL, indices_B, axis=0)
  return tokens_BxL, jnp.take(labels_N, indices_B, axis=0), weights_B


def weighted_cross_entropy(
  logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array
) -> jax.Array:
  """Weighted mean cross-entropy in nats, () float: sum_b w_b * CE_b / sum_b w_b.

  Computed as mean_b(w_b * CE_b) * (B / sum_b w_b). With all weights 1 the factor is B / B,
  exactly 1, so the value is `jaxnorm.loss.cross_entropy`'s plain mean bit for bit, however
  XLA rounds a mean (it multiplies the sum by float32(1 / B) rather than dividing by B; a
  direct sum / sum_b w_b differs from it by an ulp for B = 250). With 0/1 weights it is the
  mean over the weight-1 rows, PyTorch's smaller last batch, in value and gradient (to
  float32 rounding). Rows of weight 0 are replaced (logits by 0, label by 0) before the
  cross-entropy, so nothing in them, NaN or inf included, reaches the value or the gradient.
  Labels of a concrete array outside [0, C) raise ValueError, padding rows' too (`batch_at`'s
  are real labels); under jit they are not checked. All weights 0 gives NaN (0 * B / 0).
  """
  layers.check_ids(labels_B, logits_BxC.shape[-1], "labels")
  real_B = weights_B != 0
  safe_logits_BxC = jnp.where(real_B[:, None], logits_BxC, 0.0)
  safe_labels_B = jnp.where(real_B, labels_B, 0)
  ce_B = optax.softmax_cross_entropy_with_integer_labels(safe_logits_BxC, safe_labels_B)
  weights_B = weights_B.astype(ce_B.dtype)
  return jnp.mean(weights_B * ce_B) * (weights_B.shape[0] / jnp.sum(weights_B))


def weighted_correct(logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array):
  """() float32: sum of the weights of the rows whose argmax (first on ties) is the label;
  with 0/1 weights, the number of real examples predicted right. Exact below 2**24."""
  right_B = jnp.argmax(logits_BxC, axis=-1) == labels_B
  return jnp.sum(jnp.where(right_B, weights_B.astype(jnp.float32), 0.0))


def epoch_accuracy(correct_T: np.ndarray | jax.Array, plan: EpochPlan) -> np.ndarray:
  """Each epoch's running training accuracy, as the reference reports it: (..., E) float64.

  `correct_T` (..., T) holds `weighted_correct` of each of T = E * S steps in order
  (leading axes, such as seeds, are kept). Epoch e's accuracy is the sum of its S counts
  divided by N, in float64 on the host (numpy): the reference's Python `correct / total`,
  the same float. Not traceable (counts come out of the compiled steps first). Raises
  ValueError if T is not a whole number E >= 1 of epochs.
  """
  check_plan(plan)
  correct = np.asarray(correct_T, np.float64)
  steps = plan.steps_per_epoch
  num_steps = correct.shape[-1] if correct.ndim else 0
  if num_steps == 0 or num_steps % steps:
    raise ValueError(
      f"correct_T has {num_steps} steps, not E >= 1 whole epochs of {steps} steps "
      f"({plan.num_examples} examples in batches of {plan.batch_size})"
    )
  per_epoch = correct.reshape(*correct.shape[:-1], num_steps // steps, steps).sum(axis=-1)
  return per_epoch / plan.num_examples
