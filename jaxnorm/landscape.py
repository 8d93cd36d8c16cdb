"""Loss-landscape slices: the loss along params + alpha * direction, all alphas in one call.

Following the reference (and Goodfellow et al. 2015, "Qualitatively characterizing neural
network optimization problems"), a 1D slice evaluates L(theta* + alpha d) for a Gaussian
direction d over every trainable parameter, scaled to unit global L2 norm. BatchNorm's
running statistics are state, not parameters: they are neither perturbed nor updated.

The reference notebook adds `alpha * d` to the weights at each point without restoring
them first, so its published slice is evaluated at theta* + cumsum(alphas)[i] d.
`offsets(alphas, cumulative=True)` reproduces that; the default is the intended slice.

Nothing here is jitted: these functions are traced inside the caller's compiled program
(`jaxnorm.analysis.analyze_seeds`), or jit them yourself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any
DEFAULT_CHUNK = 16  # slice points evaluated together by vmap; bounds memory.


def chunked_map(f: Callable, xs: PyTree, chunk_size: int | None = DEFAULT_CHUNK) -> PyTree:
  """`jax.vmap(f)(xs)` over the leading axis (N), at most `chunk_size` points at a time.

  Like `lax.map(f, xs, batch_size=chunk_size)`, but `lax.map` compiles a second copy of
  `f` for the N % chunk_size leftover points. Here the chunks are evened out
  (ceil(N / ceil(N / chunk_size)) points each) and the last one is filled up with copies
  of the last point, whose outputs are dropped: one copy of `f` in the program.
  """
  n = jax.tree.leaves(xs)[0].shape[0]
  if chunk_size is None or chunk_size >= n:
    return jax.vmap(f)(xs)
  size = math.ceil(n / math.ceil(n / chunk_size))
  extra = -n % size
  if extra:
    xs = jax.tree.map(lambda x: jnp.concatenate([x, jnp.repeat(x[-1:], extra, axis=0)]), xs)
  out = jax.lax.map(f, xs, batch_size=size)
  return jax.tree.map(lambda y: y[:n], out)


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

  Points are evaluated by vmap, `chunk_size` at a time (None: all at once), so memory
  stays bounded as N grows (`chunked_map`).
  """

  def at(t):
    return loss_fn(jax.tree.map(lambda p, d: p + t * d, params, direction))

  return chunked_map(at, offsets_N, chunk_size)
