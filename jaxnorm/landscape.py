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
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

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
  """A standard-normal direction shaped like `params`, unscaled: one draw of P normals
  (P = number of parameters), laid out over the leaves in `ravel_pytree` order.

  One draw, not one per leaf: each `jax.random.normal` call of a new shape adds its own
  copy of the generator to the program, and the analysis draws many directions (about 1 s
  of XLA compilation each on a CPU for the 16 leaves of the model, 0.3 s for one draw).
  """
  flat_P, unravel = ravel_pytree(params)
  return unravel(standard_normal(key, flat_P.shape, flat_P.dtype))


def standard_normal(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Standard normals drawn in float32 and cast to `dtype`.

  A float64 draw from the same key is a different sequence: drawing in float32 keeps every
  random direction and probe of the analysis the same at either analysis precision
  (`spec.ExperimentSpec.analysis_dtype`), so the two differ by rounding only.
  """
  return jax.random.normal(key, shape, jnp.float32).astype(dtype)


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


class Points(NamedTuple):
  """N points around the parameters w, in a basis of M fixed directions d_j and, optionally,
  one fresh Gaussian direction per point:

      w + sum_j coefficients[n, j] d_j + noise[n] (noise_scale * z_n),
      z_n = gaussian_direction(keys[n], w).
  """

  coefficients: jax.Array  # (N, M)
  noise: jax.Array | None = None  # (N,); None: no noise term
  keys: jax.Array | None = None  # (N,) PRNG keys of the noise directions


def losses_at(
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  points: Points,
  directions: tuple[PyTree, ...] = (),
  noise_scale: PyTree | None = None,
  chunk_size: int | None = DEFAULT_CHUNK,
) -> jax.Array:
  """loss_fn at every point of `points` (see `Points`): (N,).

  The one evaluation loop behind every slice, surface and sharpness estimate: a program
  that needs several of them evaluates all their points in one call, so its model is
  compiled once, not once per measure. Points are evaluated by vmap, `chunk_size` at a time
  (None: all at once), so memory stays bounded as N grows (`chunked_map`). The M directions
  are stacked once per parameter (M, *shape) and each point's shift is one contraction
  with its coefficients, at HIGHEST precision whatever the matmul precision (one program
  op per parameter, not M, so the loop's program does not grow with M); zero coefficients add
  exact zeros, so with IEEE float32 products (CPU, GPU) a point on one direction is that
  direction times its coefficient, as an elementwise sum gives it.
  """
  stacked = jax.tree.map(lambda *d: jnp.stack(d), *directions) if directions else None

  def at(point):
    c_M, s, key = point
    shifts = []
    if directions:
      shifts.append(
        jax.tree.map(
          lambda d_M: jnp.tensordot(c_M, d_M, axes=1, precision=jax.lax.Precision.HIGHEST),
          stacked,
        )
      )
    if noise_scale is not None:
      z = gaussian_direction(key, params)
      shifts.append(jax.tree.map(lambda a, b: s * (a * b), noise_scale, z))
    return loss_fn(jax.tree.map(lambda w, *d: w + sum(d), params, *shifts))

  n = points.coefficients.shape[0]
  noise = points.noise if points.noise is not None else jnp.zeros((n,))
  keys = points.keys if points.keys is not None else jnp.zeros((n,))
  return chunked_map(at, (points.coefficients, noise, keys), chunk_size)


def loss_slice(
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  direction: PyTree,
  offsets_N: jax.Array,
  chunk_size: int | None = DEFAULT_CHUNK,
) -> jax.Array:
  """loss_fn(params + t * direction) for every t in offsets_N: (N,) (`losses_at`)."""
  return losses_at(loss_fn, params, Points(offsets_N[:, None]), (direction,), None, chunk_size)
