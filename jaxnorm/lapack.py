"""The dense decompositions the analysis calls (singular values, symmetric eigenpairs), one
matrix per LAPACK call on the CPU, also under `vmap`.

Why: jaxlib 0.10's CPU LAPACK kernels split a batch of matrices into parts for XLA's
intra-op thread pool and block their worker until every part is done (`ParallelBatchMap`;
the parts are sized by cost: a batch of two 104 x 16 SVDs is split, two 20 x 20 eigh are
not, eight are). When as many split calls run at once as the pool has threads (2 on a
2-core machine; or one per host device, `--xla_force_host_platform_device_count`, all
sharing the pool), every worker waits for parts no worker is free to run and the program
hangs for ever. Seen here, in gdb: both pool threads in the SVD kernel's wait, two seeds
vmapped; four host devices each running a batched SVD. A call with one matrix is never
split, so nothing waits. jaxlib 0.11 no longer splits the batch in its open-source
builds; with it this module could call `jnp.linalg` directly.

`spectrum.singular_values` (every spectrum of the analysis) and `curvature`'s eigenproblems
(Lanczos' Ritz values, the quadrature) call this module. `isotropy.measures` keeps
`jnp.linalg.svd`: through here the centered measures of vmapped seeds move by float32
rounding (XLA fuses the centering differently), and the existing results stay bit for bit
as they were; the analysis' one batched call left cannot hang on its own.

On the CPU `svd_values` and `eigh` map one-matrix calls over the leading axes (`lax.map`,
and the same under `vmap`, `jax.custom_batching.custom_vmap`); on other platforms they are
`jnp.linalg`'s batched calls (`lax.platform_dependent`: only the platform's branch is
lowered). The values are LAPACK's for each matrix either way: the batched kernel calls the
same routine on each matrix. Nothing here is differentiable (the analysis differentiates
the loss, never a decomposition).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp


def svd_values(x_xMxD: jax.Array) -> jax.Array:
  """Singular values of each (M, D) matrix of `x` (..., M, D), descending: (..., min(M, D))."""
  return jax.lax.platform_dependent(x_xMxD, cpu=_svd_values_each, default=_svd_values)


def eigh(x_xMxM: jax.Array) -> tuple[jax.Array, jax.Array]:
  """`jnp.linalg.eigh` of each symmetric (M, M) matrix of `x` (..., M, M): (eigenvalues
  (..., M) ascending, eigenvectors (..., M, M) in columns)."""
  return jax.lax.platform_dependent(x_xMxM, cpu=_eigh_each, default=_eigh)


def _svd_values(x: jax.Array) -> jax.Array:
  return jnp.linalg.svd(x, compute_uv=False)


def _eigh(x: jax.Array) -> tuple[jax.Array, jax.Array]:
  w, v = jnp.linalg.eigh(x)
  return w, v


def one_matrix_at_a_time(fn: Callable[[jax.Array], Any]) -> Callable[[jax.Array], Any]:
  """`fn` of one matrix (M, N), applied to (..., M, N) one matrix per call, the leading
  axes looped over by `lax.map`; under `vmap` the mapped axis is one more leading axis,
  also looped over (never a batch handed to `fn`)."""

  @jax.custom_batching.custom_vmap
  def each(x: jax.Array) -> Any:
    lead = x.shape[:-2]
    out = jax.lax.map(fn, x.reshape(-1, *x.shape[-2:]))
    return jax.tree.map(lambda y: y.reshape(*lead, *y.shape[1:]), out)

  @each.def_vmap
  def rule(axis_size: int, in_batched: list, x: jax.Array) -> tuple[Any, Any]:
    del axis_size
    (batched,) = in_batched
    out = each(x)  # a batched x has the mapped axis in front: one more leading axis
    return out, jax.tree.map(lambda _: batched, out)

  return each


_svd_values_each = one_matrix_at_a_time(_svd_values)
_eigh_each = one_matrix_at_a_time(_eigh)
