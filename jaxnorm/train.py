"""Training: one pure train step, a compiled multi-step loop, and a driver with progress.

The state is a NamedTuple of arrays only, so the same `train_step` runs alone, under
`lax.scan`, under `vmap` over seeds and sharded over devices without change. Batch t is
drawn from `fold_in(state.data_key, t)`, so results do not depend on how the steps are
split into compiled chunks.

Every loss here takes `fast` (default True, a static Python bool): the logits then come
from `Transformer.fast_logits`, which reads only the last position where the norm acts on
each token alone in that mode (LayerNorm, no norm, BatchNorm in evaluation) and otherwise
keeps every position but projects the embedding table once. Both are exact rewrites of
`Transformer.__call__`; `fast=False` runs `__call__` itself, for comparison.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxnorm import data
from jaxnorm import model as model_lib
from jaxnorm.config import Config

PyTree = Any


class TrainState(NamedTuple):
  """Everything that changes during training. All leaves are arrays."""

  step: jax.Array  # () int32, steps taken so far.
  params: PyTree  # Trainable parameters.
  batch_stats: PyTree  # BatchNorm running statistics ({} for other norms).
  opt_state: optax.OptState  # Adam moments and count.
  data_key: jax.Array  # Batch t is data.batch(fold_in(data_key, t)).


class TrainResult(NamedTuple):
  state: TrainState
  losses: np.ndarray  # (steps,) float32 training loss per step.
  first_nonfinite_step: int | None  # First step whose loss is NaN or inf, if any.


@functools.cache
def optimizer(learning_rate: float) -> optax.GradientTransformation:
  """Adam with optax's default betas (0.9, 0.999) and eps 1e-8, PyTorch's defaults too.

  Cached so that equal learning rates give the same (hashable) object and jitted
  functions taking it as a static argument compile once.
  """
  return optax.adam(learning_rate)


def cross_entropy(logits_BxV: jax.Array, labels_B: jax.Array) -> jax.Array:
  """Mean cross-entropy, `torch.nn.CrossEntropyLoss()`."""
  return optax.softmax_cross_entropy_with_integer_labels(logits_BxV, labels_B).mean()


def logits_method(fast: bool):
  """The model method that computes the logits: the fast exact one, or `__call__`."""
  return model_lib.Transformer.fast_logits if fast else model_lib.Transformer.__call__


def eval_loss(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> jax.Array:
  """Evaluation-mode loss (BatchNorm uses, and does not change, its running statistics)."""
  logits = model.apply(
    {"params": params, "batch_stats": batch_stats},
    tokens_BxL,
    train=False,
    method=logits_method(fast),
  )
  return cross_entropy(logits, labels_B)


def init_state(
  model: model_lib.Transformer, tx: optax.GradientTransformation, cfg: Config, key: jax.Array
) -> TrainState:
  """Fresh PyTorch-style initialization; `key` splits into the init and data keys."""
  init_key, data_key = jax.random.split(key)
  tokens_BxL = jnp.zeros((cfg.batch_size, cfg.seq_len), jnp.int32)
  variables = model.init(init_key, tokens_BxL, train=False)
  params = variables["params"]
  return TrainState(
    step=jnp.zeros((), jnp.int32),
    params=params,
    batch_stats=variables.get("batch_stats", {}),
    opt_state=tx.init(params),
    data_key=data_key,
  )


# One compiled program instead of one per initializer; the same values as the eager call.
init_state_jit = jax.jit(init_state, static_argnums=(0, 1, 2))


def train_step(
  model: model_lib.Transformer,
  tx: optax.GradientTransformation,
  state: TrainState,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  fast: bool = True,
) -> tuple[TrainState, jax.Array]:
  """One Adam step on one batch in training mode. Returns the new state and the loss.

  `fast` must be a Python bool (static under jit): it selects the logits path, not what
  is computed.
  """

  def loss_fn(params):
    logits, updates = model.apply(
      {"params": params, "batch_stats": state.batch_stats},
      tokens_BxL,
      train=True,
      mutable=["batch_stats"],
      method=logits_method(fast),
    )
    return cross_entropy(logits, labels_B), updates.get("batch_stats", {})

  (loss, batch_stats), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = tx.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  return state._replace(
    step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state
  ), loss


def train_steps(
  model: model_lib.Transformer,
  tx: optax.GradientTransformation,
  cfg: Config,
  state: TrainState,
  num_steps: int,
  fast: bool = True,
) -> tuple[TrainState, jax.Array]:
  """`num_steps` train steps under `lax.scan`, each on a fresh batch. Losses: (num_steps,)."""

  def body(state, _):
    tokens_BxL, labels_B = data.batch(jax.random.fold_in(state.data_key, state.step), cfg)
    return train_step(model, tx, state, tokens_BxL, labels_B, fast)

  return jax.lax.scan(body, state, length=num_steps)


# Compiled once per (model, optimizer, config, chunk length, fast); the state's buffers
# are reused.
train_steps_jit = jax.jit(train_steps, static_argnums=(0, 1, 2, 4, 5), donate_argnums=(3,))


def first_nonfinite(losses: np.ndarray) -> int | None:
  """Index of the first NaN or infinite loss, or None."""
  bad = np.flatnonzero(~np.isfinite(losses))
  return int(bad[0]) if bad.size else None


def train(
  cfg: Config,
  norm: str,
  key: jax.Array,
  *,
  chunk_size: int = 100,
  progress: bool = True,
  fast: bool = True,
) -> TrainResult:
  """Trains the `norm` model for `cfg.steps` steps from `key`.

  The steps run in compiled chunks of `chunk_size` (one host round-trip per chunk, to
  update the progress bar). The full per-step loss history comes back. `fast=False`
  computes the logits by the reference's full forward pass (same result, slower).
  """
  if chunk_size < 1:
    raise ValueError(f"chunk_size={chunk_size} must be >= 1")
  model = model_lib.build(cfg, norm)
  tx = optimizer(cfg.learning_rate_for(norm))
  state = init_state_jit(model, tx, cfg, key)
  chunks = []
  with tqdm(total=cfg.steps, desc=f"train {norm}", disable=not progress, unit="step") as bar:
    done = 0
    while done < cfg.steps:
      n = min(chunk_size, cfg.steps - done)
      state, losses = train_steps_jit(model, tx, cfg, state, n, fast)
      chunks.append(losses)
      done += n
      bar.update(n)
      bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
  losses = np.asarray(jnp.concatenate(chunks))
  return TrainResult(state, losses, first_nonfinite(losses))
