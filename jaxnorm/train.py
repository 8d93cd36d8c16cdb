"""Training: one pure train step and a `lax.scan` over many.

The state is a NamedTuple of arrays only, so the same `train_step` runs alone, under
`lax.scan`, under `vmap` over seeds and sharded over devices without change. The learning
rate is part of the state (`opt_state.hyperparams['learning_rate']`), not of the compiled
program: one program trains a model at any learning rate, and seeds vmapped together may
each have their own. Batch t of a run is `data.batch_at(state.data_key, t)`, so results do
not depend on how the steps are split into compiled chunks.

Nothing here is jitted: these functions are traced inside the compiled programs of
`jaxnorm.programs` (`init_states`, `train_chunk`), or jit them yourself.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import data, epochs, loss
from jaxnorm import model as model_lib

PyTree = Any


class TrainState(NamedTuple):
  """Everything that changes during training. All leaves are arrays."""

  step: jax.Array  # () int32, steps taken so far.
  params: PyTree  # Trainable parameters.
  batch_stats: PyTree  # BatchNorm running statistics ({} for other norms).
  opt_state: optax.OptState  # Adam moments, count and learning rate.
  data_key: jax.Array  # Batch t is data.batch_at(data_key, t).


# Adam's constants: PyTorch's (= optax's) defaults.
ADAM_B1, ADAM_B2, ADAM_EPS = 0.9, 0.999, 1e-8


@functools.cache
def optimizer() -> optax.GradientTransformation:
  """Adam with PyTorch's (= optax's) betas (0.9, 0.999) and eps 1e-8, its learning rate
  read from the optimizer state (`optax.inject_hyperparams`; set by `init_state`).

  The betas and eps stay Python constants (`static_args`), so the arithmetic is that of
  `optax.adam(lr)` bit for bit. One cached object: jitted code takes it as a static
  argument and compiles once for every learning rate.
  """
  return optax.inject_hyperparams(optax.adam, static_args=("b1", "b2", "eps", "eps_root"))(
    learning_rate=0.0, b1=ADAM_B1, b2=ADAM_B2, eps=ADAM_EPS
  )


def learning_rate(state: TrainState) -> jax.Array:
  """The learning rate the state trains at: () float32."""
  return state.opt_state.hyperparams["learning_rate"]


def init_state(
  model: model_lib.Transformer,
  task: data.TaskShape,
  key: jax.Array,
  learning_rate: float | jax.Array,
) -> TrainState:
  """Fresh PyTorch-style initialization and Adam state at `learning_rate`.

  `key` is the run's training key (`keys.RunKeys.train`); it splits into the
  initialization key and the data key of the training batches.
  """
  init_key, data_key = jax.random.split(key)
  tokens_BxL = jnp.zeros((task.batch_size, task.seq_len), jnp.int32)
  variables = model.init(init_key, tokens_BxL, train=False)
  params = variables["params"]
  opt_state = optimizer().init(params)
  lr = jnp.asarray(learning_rate, jnp.float32)
  opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=opt_state,
    data_key=data_key,
  )


def training_batch(train_key: jax.Array, step: int | jax.Array, task: data.TaskShape):
  """Batch number `step` of the run whose training key is `train_key`:
  (tokens_BxL, labels_B), exactly what `train_steps` trains on at that step."""
  _, data_key = jax.random.split(train_key)
  return data.batch_at(data_key, step, task)


def loss_and_grads(
  model: model_lib.Transformer,
  state: TrainState,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> tuple[jax.Array, PyTree, PyTree]:
  """Training-mode (loss, updated batch_stats, gradient with respect to the params)."""
  (value, batch_stats), grads = jax.value_and_grad(loss.training_loss, argnums=1, has_aux=True)(
    model, state.params, state.batch_stats, tokens_BxL, labels_B, fast
  )
  return value, batch_stats, grads


def apply_gradients(state: TrainState, grads: PyTree, batch_stats: PyTree) -> TrainState:
  """One Adam update of the params with `grads`; the step count advances."""
  updates, opt_state = optimizer().update(grads, state.opt_state, state.params)
  return state._replace(
    step=state.step + 1,
    params=optax.apply_updates(state.params, updates),
    batch_stats=batch_stats,
    opt_state=opt_state,
  )


def train_step(
  model: model_lib.Transformer,
  state: TrainState,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> tuple[TrainState, jax.Array]:
  """One Adam step on one batch in training mode: (new state, loss before the step).

  `fast` must be a Python bool (static under jit): it selects the logits path, not what
  is computed (see `jaxnorm.loss`).
  """
  value, batch_stats, grads = loss_and_grads(model, state, tokens_BxL, labels_B, fast)
  return apply_gradients(state, grads, batch_stats), value


def weighted_train_step(
  model: model_lib.Transformer,
  state: TrainState,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  weights_B: jax.Array,
  fast: bool = True,
) -> tuple[TrainState, tuple[jax.Array, jax.Array]]:
  """`train_step` on the rows of weight 1 (`loss.weighted_training_loss`): (new state,
  (loss before the step, rows of weight 1 predicted right before the step))."""
  (value, (batch_stats, correct)), grads = jax.value_and_grad(
    loss.weighted_training_loss, argnums=1, has_aux=True
  )(model, state.params, state.batch_stats, tokens_BxL, labels_B, weights_B, fast)
  return apply_gradients(state, grads, batch_stats), (value, correct)


def train_steps(
  model: model_lib.Transformer,
  task: data.TaskShape,
  state: TrainState,
  num_steps: int,
  fast: bool = True,
) -> tuple[TrainState, jax.Array]:
  """`num_steps` train steps under `lax.scan`, step t on `data.batch_at(data_key, t)`.

  Returns the new state and the losses (num_steps,) float32.
  """

  def body(state, _):
    tokens_BxL, labels_B = data.batch_at(state.data_key, state.step, task)
    return train_step(model, state, tokens_BxL, labels_B, fast)

  return jax.lax.scan(body, state, length=num_steps)


def train_epoch_steps(
  model: model_lib.Transformer,
  task: data.TextTask,
  state: TrainState,
  num_steps: int,
  arrays: data.TextArrays,
  fast: bool = True,
) -> tuple[TrainState, jax.Array, jax.Array]:
  """`num_steps` train steps on a text data set, step t on batch t of the epochs over
  `arrays` (`data.training_batch`: batch t mod S of epoch t // S, S batches an epoch).

  Returns the new state, the losses (num_steps,) float32 and the examples each step
  predicted right (num_steps,) float32, from which `epochs.epoch_accuracy` gives the
  reference's running training accuracy. `train_epoch_steps_seeds` for one seed.
  """
  states_S = jax.tree.map(lambda x: x[None], state)
  states_S, losses_SxT, correct_SxT = train_epoch_steps_seeds(
    model, task, states_S, num_steps, arrays, fast
  )
  return jax.tree.map(lambda x: x[0], states_S), losses_SxT[0], correct_SxT[0]


def train_epoch_steps_seeds(
  model: model_lib.Transformer,
  task: data.TextTask,
  states_S: TrainState,
  num_steps: int,
  arrays: data.TextArrays,
  fast: bool = True,
) -> tuple[TrainState, jax.Array, jax.Array]:
  """`train_epoch_steps` for S seeds at once (leaves with a leading axis S), which must
  all have taken the same number of steps (the seeds of a run do): a `lax.scan` over the
  steps of `vmap`ped `weighted_train_step`s, so that each epoch's order is drawn once,
  when the epoch (or the call) starts, not at every step (`epochs.rows_of_batch`: the
  same rows as `data.training_batch`). Returns (states_S, losses (S, T), correct (S, T)).
  """
  plan = task.plan
  start = states_S.step[0]
  data_keys_S = states_S.data_key

  def order(step):  # every seed's order of the epoch of `step`: (S, N) int32
    epoch = step // plan.steps_per_epoch
    return jax.vmap(lambda k: epochs.epoch_permutation(k, epoch, plan.num_examples))(data_keys_S)

  def body(carry, t):
    states_S, perm_SxN = carry
    step = start + t
    new_epoch = (t > 0) & (step % plan.steps_per_epoch == 0)
    perm_SxN = jax.lax.cond(new_epoch, order, lambda _: perm_SxN, step)

    def one(state, perm_N):
      indices_B, weights_B = epochs.rows_of_batch(perm_N, step, plan)
      tokens_BxL, labels_B = arrays.train_tokens[indices_B], arrays.train_labels[indices_B]
      return weighted_train_step(model, state, tokens_BxL, labels_B, weights_B, fast)

    states_S, (losses_S, correct_S) = jax.vmap(one)(states_S, perm_SxN)
    return (states_S, perm_SxN), (losses_S, correct_S)

  steps_T = jnp.arange(num_steps, dtype=jnp.int32)
  (states_S, _), (losses_TxS, correct_TxS) = jax.lax.scan(body, (states_S, order(start)), steps_T)
  return states_S, losses_TxS.T, correct_TxS.T


def first_nonfinite(losses: np.ndarray) -> int | None:
  """Index (0-based step) of the first NaN or infinite loss, or None."""
  bad = np.flatnonzero(~np.isfinite(losses))
  return int(bad[0]) if bad.size else None
