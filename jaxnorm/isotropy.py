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

Degenerate input: one convention for every measure. A spectrum with nothing to measure is
one that is empty, all zero (an all-zero matrix: a representation that died), or has a
NaN, an infinite or a negative entry (a matrix with NaN or inf entries gives such a
spectrum); every measure of it is NaN, the numerical rank included, so that no measure
ranks a dead or broken representation and every summary counts it as missing. Any other
spectrum (some singular value > 0, every one finite and >= 0) has every measure finite,
in the ranges documented, and the same for x and c * x at any scale c > 0: each measure
is computed on s / s_max, so squares and fourth powers neither underflow nor overflow.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class IsotropyMeasures(NamedTuple):
  """All measures of one spectrum, each a () float array; every one NaN for a spectrum
  with nothing to measure (module docstring), the numerical rank included."""

  singular_values: jax.Array  # (K,) descending, K = min(N, D).
  effective_rank: jax.Array  # in [1, K]; Roy and Vetterli 2007.
  stable_rank: jax.Array  # in [1, K]; sum s^2 / s_max^2.
  participation_ratio: jax.Array  # in [1, K]; (sum s^2)^2 / sum s^4.
  condition_number: jax.Array  # >= 1; s_max / s_min over s > rtol * s_max.
  numerical_rank: jax.Array  # in [1, K], a whole number: s > rtol * s_max, as matrix_rank.
  rtol: jax.Array  # the relative tolerance that was used.


def default_rtol(shape: tuple[int, ...], dtype=jnp.float32) -> float:
  """numpy.linalg.matrix_rank's relative tolerance: max(N, D) * eps of `dtype`."""
  return max(shape, default=0) * float(jnp.finfo(dtype).eps)


def measurable(s_K: jax.Array) -> jax.Array:
  """() bool: the spectrum has something to measure: K >= 1, every s finite and >= 0, and
  some s > 0. Where it is False every measure is NaN (the module's convention)."""
  if s_K.shape[0] == 0:
    return jnp.asarray(False)
  return jnp.all(jnp.isfinite(s_K)) & jnp.all(s_K >= 0) & (jnp.max(s_K) > 0)


def _relative(s_K: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(s / s_max (K,), `measurable`); ones where the spectrum is not measurable, so that no
  step divides by zero before the result is replaced by NaN."""
  s_K = _floating(s_K)
  ok = measurable(s_K)
  if s_K.shape[0] == 0:
    return s_K, ok
  # Scaled by a power of two first (exact): XLA may divide by multiplying with 1 / s_max,
  # which for s_max above 2^126 is a subnormal number that the CPU flushes to 0.
  _, exponent = jnp.frexp(jnp.where(ok, jnp.max(s_K), 1.0))
  scaled_K = jnp.ldexp(s_K, -exponent)
  return jnp.where(ok, scaled_K / jnp.max(scaled_K), 1.0), ok


def _floating(s_K: jax.Array) -> jax.Array:
  s_K = jnp.asarray(s_K)
  return s_K if jnp.issubdtype(s_K.dtype, jnp.floating) else s_K.astype(jnp.float32)


def _or_nan(ok: jax.Array, value: jax.Array) -> jax.Array:
  return jnp.where(ok, value, jnp.nan).astype(value.dtype)


def effective_rank(s_K: jax.Array) -> jax.Array:
  """exp(-sum p log p), p = s / sum s, with 0 log 0 = 0 (Roy and Vetterli 2007): in [1, K];
  NaN for a spectrum with nothing to measure (all zero, non-finite or negative entries)."""
  u_K, ok = _relative(s_K)
  p_K = u_K / jnp.sum(u_K)
  return _or_nan(ok, jnp.exp(jnp.sum(jax.scipy.special.entr(p_K))))


def stable_rank(s_K: jax.Array) -> jax.Array:
  """||A||_F^2 / ||A||_2^2 = sum s^2 / max(s)^2 = sum (s / s_max)^2: in [1, K]; NaN for a
  spectrum with nothing to measure (all zero, non-finite or negative entries)."""
  u_K, ok = _relative(s_K)
  return _or_nan(ok, jnp.sum(jnp.square(u_K)))


def participation_ratio(s_K: jax.Array) -> jax.Array:
  """(sum lambda)^2 / sum lambda^2 of the Gram eigenvalues lambda = s^2, taken of s / s_max
  (the ratio is scale-free, the fourth powers then stay in range): in [1, K]; NaN for a
  spectrum with nothing to measure (all zero, non-finite or negative entries)."""
  u_K, ok = _relative(s_K)
  lam_K = jnp.square(u_K)
  return _or_nan(ok, jnp.square(jnp.sum(lam_K)) / jnp.sum(jnp.square(lam_K)))


def _above(s_K: jax.Array, rtol: float | jax.Array | None) -> tuple[jax.Array, jax.Array]:
  """(s > rtol * s_max (K,) bool, whether the spectrum and rtol are usable: `measurable` and
  0 <= rtol < 1, so that s_max itself always counts). Default rtol: len(s) * eps."""
  s_K = _floating(s_K)
  rtol = default_rtol(s_K.shape, s_K.dtype) if rtol is None else rtol
  ok = measurable(s_K) & (rtol >= 0) & (rtol < 1)
  if s_K.shape[0] == 0:
    return s_K > 0, ok
  return s_K > rtol * jnp.max(s_K), ok


def numerical_rank(s_K: jax.Array, rtol: float | jax.Array | None = None) -> jax.Array:
  """Number of singular values above rtol * s_max (default rtol: len(s) * eps), as a float:
  a whole number in [1, K]; NaN for a spectrum with nothing to measure (all zero, where
  numpy's matrix_rank says 0; non-finite or negative entries) or an rtol outside [0, 1).

  With a matrix at hand prefer `default_rtol(x.shape)`, numpy's max(N, D) * eps; from the
  spectrum alone only K = min(N, D) is known, so the default here is K * eps.
  """
  above_K, ok = _above(s_K, rtol)
  return _or_nan(ok, jnp.sum(above_K).astype(_floating(s_K).dtype))


def condition_number(s_K: jax.Array, rtol: float | jax.Array | None = None) -> jax.Array:
  """s_max / s_min over the singular values s > rtol * s_max (default rtol: len(s) * eps):
  >= 1; NaN for a spectrum with nothing to measure (all zero, non-finite or negative
  entries) or an rtol outside [0, 1).

  Dropping singular values at rounding level keeps the number finite and meaningful for a
  rank-deficient matrix: it is the conditioning on the matrix's numerical range.
  """
  s_K = _floating(s_K)
  above_K, ok = _above(s_K, rtol)
  if s_K.shape[0] == 0:
    return jnp.asarray(jnp.nan, s_K.dtype)
  s_max = jnp.max(s_K)
  s_min = jnp.min(jnp.where(above_K, s_K, jnp.inf))
  return _or_nan(ok, s_max / jnp.where(ok, s_min, 1.0))


def from_spectrum(s_K: jax.Array, rtol: float | jax.Array | None = None) -> IsotropyMeasures:
  """Every measure of a spectrum s (K,), any order, nonnegative; all NaN (the singular
  values aside) for a spectrum with nothing to measure (see the module docstring)."""
  s_K = _floating(s_K)
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
  center=True those of x - mean(x, axis=0). rtol defaults to max(N, D) * eps. An all-zero
  matrix, one with a NaN or infinite entry, or one with no rows or columns has every
  measure NaN (the module's convention); its singular values are NaN where the matrix has
  non-finite entries.

  Raises:
    ValueError: for an array that is not 2-D.
  """
  if x_NxD.ndim != 2:
    raise ValueError(f"x_NxD must be a 2-D (samples, features) matrix, got shape {x_NxD.shape}")
  x_NxD = _floating(x_NxD)
  if center:
    x_NxD = x_NxD - jnp.mean(x_NxD, axis=0, keepdims=True)
  rtol = default_rtol(x_NxD.shape, x_NxD.dtype) if rtol is None else rtol
  if 0 in x_NxD.shape:
    return from_spectrum(jnp.zeros((0,), x_NxD.dtype), rtol)
  finite = jnp.all(jnp.isfinite(x_NxD))
  # LAPACK is not asked for the SVD of a matrix with NaN or inf entries (its result is
  # unspecified there): the spectrum is NaN, which every measure maps to NaN.
  s_K = jnp.linalg.svd(jnp.where(finite, x_NxD, 0.0), compute_uv=False)
  return from_spectrum(jnp.where(finite, s_K, jnp.nan), rtol)
