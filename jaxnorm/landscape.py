"""Loss-landscape slices: the loss along params + alpha * direction, all alphas in one call.

Following the reference (and Goodfellow et al. 2015, "Qualitatively characterizing neural
network optimization problems"), a 1D slice evaluates L(theta* + alpha d) for a Gaussian
direction d over every trainable parameter, scaled to unit global L2 norm. BatchNorm's
running statistics are state, not parameters: they are neither perturbed nor updated.

The reference notebook adds `alpha * d` to the weights at each point without restoring
them first, so its published slice is evaluated at theta* + cumsum(alphas)[i] d.
`offsets(alphas, cumulative=True)` reproduces that; the default is the intended slice.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxnorm import model as model_lib
from jaxnorm import train

PyTree = Any
DEFAULT_CHUNK = 16  # slice points evaluated together by vmap; bounds memory.


def gaussian_direction(key: jax.Array, params: PyTree) -> PyTree:
  """A standard-normal direction over every leaf of `params` (one key per leaf), unscaled."""
  leaves, treedef = jax.tree.flatten(params)
  keys = jax.random.split(key, len(leaves))
  noise = [jax.random.normal(k, x.shape, x.dtype) for k, x in zip(keys, leaves, strict=True)]
  return jax.tree.unflatten(treedef, noise)


def random_direction(key: jax.Array, params: PyTree) -> PyTree:
  """The reference's direction: `gaussian_direction` scaled to global L2 norm 1."""
  direction = gaussian_direction(key, params)
  return optax.tree.scale(1.0 / optax.tree.norm(direction), direction)


def alphas(points: int, span: float) -> jax.Array:
  """The reference's alphas: numpy's float64 linspace(-span, span, points), as float32."""
  return jnp.asarray(np.linspace(-span, span, points), dtype=jnp.float32)


def offsets(alphas_N: jax.Array, cumulative: bool = False) -> jax.Array:
  """Where along the direction each point is evaluated.

  cumulative=False: at the alphas themselves (the intended slice).
  cumulative=True: at cumsum(alphas), which is what the reference notebook evaluates,
  because it never restores the weights between points.
  """
  return jnp.cumsum(alphas_N) if cumulative else alphas_N


def loss_slice(
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  direction: PyTree,
  offsets_N: jax.Array,
  chunk_size: int | None = DEFAULT_CHUNK,
) -> jax.Array:
  """loss_fn(params + t * direction) for every t in offsets_N: (N,).

  Points are evaluated by vmap in chunks of `chunk_size` (None: all at once) inside one
  `lax.map`, so memory stays bounded as N grows. Traceable; jit the caller.
  """

  def at(t):
    return loss_fn(jax.tree.map(lambda p, d: p + t * d, params, direction))

  return jax.lax.map(at, offsets_N, batch_size=chunk_size)


@functools.partial(jax.jit, static_argnums=(0, 7, 8))
def model_slice(
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  direction: PyTree,
  tokens_BxL: jax.Array,
  labels_B: jax.Array,
  offsets_N: jax.Array,
  chunk_size: int | None = DEFAULT_CHUNK,
  fast: bool = True,
) -> jax.Array:
  """Evaluation-mode loss of `model` on one batch along a direction: (N,), one compiled call.

  `fast` as in `train.eval_loss`: the exact last-position path where it applies.
  """
  loss_fn = lambda p: train.eval_loss(model, p, batch_stats, tokens_BxL, labels_B, fast)
  return loss_slice(loss_fn, params, direction, offsets_N, chunk_size)
