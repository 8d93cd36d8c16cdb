"""Scalar isotropy measures of a representation, from its singular-value spectrum.

Figure 2 (right) of the paper shows the whole singular-value spectrum of the block's
(B * L, D) output; these numbers summarize how evenly it spreads, each in "number of
dimensions" units (n for n equal singular values, 1 for a rank-1 matrix):

* effective rank (Roy and Vetterli 2007, "The effective rank: a measure of effective
  dimensionality"): exp(H(p)), p_i = s_i / sum_j s_j, H = -sum_i p_i log p_i (0 log 0 = 0).
* stable rank (Rudelson and Vershynin 2007): ||A||_F^2 / ||A||_2^2 = sum_i s_i^2 / s_max^2.
* participation ratio (e.g. Gao et al. 2017; Recanatesi et al. 2019): of the eigenvalues
  lambda_i = s_i^2 of the Gram / uncentered covariance A^T A,
  (sum_i lambda_i)^2 / sum_i lambda_i^2 = (sum s^2)^2 / sum s^4.
* condition number: s_max / s_min over the singular values that count as nonzero,
  s_i > rtol * s_max; the default rtol is numpy.linalg.matrix_rank's, max(N, D) * eps.

The reference notebook takes the spectrum of the raw activations, without centering;
`measures(x, center=False)` matches it, `center=True` removes each feature's mean first
(the spectrum of the covariance, i.e. PCA).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class IsotropyMeasures(NamedTuple):
  """All measures of one spectrum. Scalars are () float arrays, rank is () int32."""

  singular_values: jax.Array  # (K,) descending, K = min(N, D).
  effective_rank: jax.Array  # in [1, K]; Roy and Vetterli 2007.
  stable_rank: jax.Array  # in [1, K]; sum s^2 / s_max^2.
  participation_ratio: jax.Array  # in [1, K]; (sum s^2)^2 / sum s^4.
  condition_number: jax.Array  # >= 1; s_max / s_min over s > rtol * s_max.
  numerical_rank: jax.Array  # number of s > rtol * s_max, as numpy.linalg.matrix_rank.
  rtol: jax.Array  # the relative tolerance that was used.


def default_rtol(shape: tuple[int, ...], dtype=jnp.float32) -> float:
  """numpy.linalg.matrix_rank's relative tolerance: max(N, D) * eps of `dtype`."""
  return max(shape) * float(jnp.finfo(dtype).eps)


def effective_rank(s_K: jax.Array) -> jax.Array:
  """exp(-sum p log p), p = s / sum s, with 0 log 0 = 0 (Roy and Vetterli 2007)."""
  p_K = s_K / jnp.sum(s_K)
  plogp_K = jnp.where(p_K > 0, p_K * jnp.log(jnp.where(p_K > 0, p_K, 1.0)), 0.0)
  return jnp.exp(-jnp.sum(plogp_K))


def stable_rank(s_K: jax.Array) -> jax.Array:
  """||A||_F^2 / ||A||_2^2 = sum s^2 / max(s)^2."""
  return jnp.sum(jnp.square(s_K)) / jnp.square(jnp.max(s_K))


def participation_ratio(s_K: jax.Array) -> jax.Array:
  """(sum lambda)^2 / sum lambda^2 of the Gram eigenvalues lambda = s^2."""
  lam_K = jnp.square(s_K)
  return jnp.square(jnp.sum(lam_K)) / jnp.sum(jnp.square(lam_K))


def numerical_rank(s_K: jax.Array, rtol: float | jax.Array | None = None) -> jax.Array:
  """Number of singular values above rtol * s_max (default rtol: len(s) * eps).

  With a matrix at hand prefer `default_rtol(x.shape)`, numpy's max(N, D) * eps; from the
  spectrum alone only K = min(N, D) is known, so the default here is K * eps.
  """
  rtol = default_rtol(s_K.shape, s_K.dtype) if rtol is None else rtol
  return jnp.sum(s_K > rtol * jnp.max(s_K)).astype(jnp.int32)


def condition_number(s_K: jax.Array, rtol: float | jax.Array | None = None) -> jax.Array:
  """s_max / s_min over the singular values s > rtol * s_max (default rtol: len(s) * eps).

  Dropping singular values at rounding level keeps the number finite and meaningful for a
  rank-deficient matrix: it is the conditioning on the matrix's numerical range.
  """
  rtol = default_rtol(s_K.shape, s_K.dtype) if rtol is None else rtol
  s_max = jnp.max(s_K)
  s_min = jnp.min(jnp.where(s_K > rtol * s_max, s_K, jnp.inf))
  return s_max / s_min


def from_spectrum(s_K: jax.Array, rtol: float | jax.Array | None = None) -> IsotropyMeasures:
  """Every measure of a spectrum s (K,), any order, nonnegative."""
  rtol = default_rtol(s_K.shape, s_K.dtype) if rtol is None else rtol
  return IsotropyMeasures(
    singular_values=jnp.sort(s_K)[::-1],
    effective_rank=effective_rank(s_K),
    stable_rank=stable_rank(s_K),
    participation_ratio=participation_ratio(s_K),
    condition_number=condition_number(s_K, rtol),
    numerical_rank=numerical_rank(s_K, rtol),
    rtol=jnp.asarray(rtol, s_K.dtype),
  )


def measures(x_NxD: jax.Array, *, center: bool, rtol: float | None = None) -> IsotropyMeasures:
  """Every measure of an activation matrix (N samples x D features).

  center=False takes the singular values of x itself, as the reference notebook does;
  center=True those of x - mean(x, axis=0). rtol defaults to max(N, D) * eps.
  """
  if x_NxD.ndim != 2:
    raise ValueError(f"x_NxD must be a 2-D (samples, features) matrix, got shape {x_NxD.shape}")
  if center:
    x_NxD = x_NxD - jnp.mean(x_NxD, axis=0, keepdims=True)
  rtol = default_rtol(x_NxD.shape, x_NxD.dtype) if rtol is None else rtol
  return from_spectrum(jnp.linalg.svd(x_NxD, compute_uv=False), rtol)
