"""Hessian curvature of a loss over a parameter pytree, without forming the Hessian.

Flatness is measured here by the curvature of the loss L at the trained parameters
theta*, through the Hessian H = d^2 L / d theta^2 (P x P, P = number of parameters):

* `hvp`: the Hessian-vector product H v by forward-over-reverse differentiation, the jvp of
  the gradient (Pearlmutter 1994, "Fast exact multiplication by the Hessian"). One HVP costs
  a few gradient evaluations; H itself is never built.
* `lanczos`: the top-k eigenvalues of H (the largest, lambda_max, is the usual "sharpness")
  and their eigenvectors by the Lanczos iteration (Lanczos 1950) with full
  reorthogonalization, on the flattened parameter vector. m Lanczos steps give an m x m
  tridiagonal T whose eigenvalues (Ritz values) approximate the extremes of H's spectrum
  first; T also gives the stochastic Lanczos quadrature estimate of the spectral density
  (Ghorbani, Krishnan and Xiao 2019). Convergence is checked, not assumed: while a wanted
  pair's residual is above tolerance the iteration restarts thickly (Wu and Simon 2000), a
  bounded number of times, and each returned pair comes with its true residual
  ||H v - lambda v||_2 and whether it converged.
* `hutchinson_trace`: tr(H) = E_z[z^T H z] for Rademacher z (Hutchinson 1989; its variance,
  2 sum_{i != j} H_ij^2, is the smallest among i.i.d. probes: Avron and Toledo 2011), with
  the Monte Carlo standard error.

Yao et al. 2020 ("PyHessian: Neural networks through the lens of the Hessian") use the same
three tools (with power iteration in place of Lanczos) to compare architectures, among them
with and without BatchNorm.

Units: eigenvalues and the trace are in loss units per squared parameter units (nats per
parameter^2 for the cross-entropy). BatchNorm running statistics are state, not
parameters: `jaxnorm.loss.eval_loss_fn` holds them fixed (evaluation mode).

Nothing here is jitted: these functions are traced inside the caller's compiled program
(`jaxnorm.analysis.analyze_seeds`), or jit them yourself (`k`, `num_iterations`, `which`,
`max_restarts` and `num_probes` fix shapes or the program and must then be static).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree

from jaxnorm import landscape, lapack
from jaxnorm.families import MeasureConfig

PyTree = Any
LossFn = Callable[[PyTree], jax.Array]

WHICH = ("largest", "magnitude")
# Thick restarts `lanczos` may take by default (`families.MeasureConfig.lanczos_restarts`).
MAX_RESTARTS = 8
# Hutchinson probes evaluated together by default (`hutchinson_trace`).
TRACE_CHUNK = 16


class LanczosResult(NamedTuple):
  """Top-k Hessian eigenpairs from m Lanczos steps, with their convergence evidence."""

  eigenvalues: jax.Array  # (k,) Ritz values, descending (by value or by |value|).
  eigenvectors: PyTree  # like params, each leaf (k, *leaf.shape); unit global L2 norm each.
  residuals: jax.Array  # (k,) ||H v_i - lambda_i v_i||_2, from k extra HVPs.
  converged: jax.Array  # (k,) bool: residual_i <= tol * |Ritz value_i|.
  num_iterations: jax.Array  # () int32: Lanczos steps m per cycle (min(requested, P)).
  restarts: jax.Array  # () int32: thick restarts taken, each m - max(k, m // 2) more steps.
  # The first m steps' tridiagonal T = V^T H V (plain Lanczos from the random start):
  alpha: jax.Array  # (m,) diagonal of T.
  beta: jax.Array  # (m - 1,) off-diagonal of T (0 where the Krylov space was restarted).


class TraceResult(NamedTuple):
  """Hutchinson estimate of tr(H) from Rademacher probes."""

  trace: jax.Array  # () mean of the samples.
  stderr: jax.Array  # () standard error of the mean: std(samples, ddof=1) / sqrt(n).
  samples: jax.Array  # (n,) z_i^T H z_i, one per probe.
  num_probes: jax.Array  # () int32: n.


def hvp(loss_fn: LossFn, params: PyTree, tangent: PyTree) -> PyTree:
  """H(params) @ tangent, shaped like params: jvp of grad (Pearlmutter 1994)."""
  return jax.jvp(jax.grad(loss_fn), (params,), (tangent,))[1]


def flat_hvp(loss_fn: LossFn, params: PyTree) -> tuple[Callable[[jax.Array], jax.Array], int]:
  """A linear map v_P -> H v_P on the ravelled parameters, and P.

  Built with `jax.linearize` of the flat gradient, so the forward and backward passes at
  `params` are computed once and each product only runs the tangent (jvp) pass.
  """
  flat_P, unravel = ravel_pytree(params)
  grad_flat = lambda f_P: ravel_pytree(jax.grad(loss_fn)(unravel(f_P)))[0]
  _, matvec = jax.linearize(grad_flat, flat_P)
  return matvec, flat_P.size


def _orthogonalize(basis_MxP: jax.Array, w_P: jax.Array) -> jax.Array:
  """w minus its projection on the rows of the basis, twice (classical Gram-Schmidt
  repeated: "twice is enough", Giraud et al. 2005). Zero rows contribute nothing."""
  for _ in range(2):
    w_P = w_P - basis_MxP.T @ (basis_MxP @ w_P)
  return w_P


def rademacher(key: jax.Array, shape: tuple[int, ...], dtype) -> jax.Array:
  """Random signs +-1 as `dtype`, the same at either analysis precision (as
  `landscape.standard_normal`): `jax.random.rademacher` draws from a float64 uniform
  when x64 is enabled, a different sequence."""
  return (2 * jax.random.bernoulli(key, jnp.float32(0.5), shape) - 1).astype(dtype)


def _unit(w_P: jax.Array) -> jax.Array:
  norm = jnp.linalg.norm(w_P)
  return jnp.where(norm > 0, w_P / jnp.where(norm > 0, norm, 1.0), 0.0)


def lanczos(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  k: int = 1,
  num_iterations: int = 50,
  which: str = "largest",
  tol: float | jax.Array = 1e-3,
  max_restarts: int = MAX_RESTARTS,
  hvp_flat: tuple[Callable[[jax.Array], jax.Array], int] | None = None,
) -> LanczosResult:
  """Top-k eigenpairs of the Hessian of `loss_fn` at `params` by thick-restart Lanczos.

  Algorithm (Lanczos 1950; full reorthogonalization as in Golub and Van Loan, Sec. 10.3):
  v_0 = a Gaussian unit vector from `key`; for j < m: w = H v_j, alpha_j = v_j^T w,
  w <- w - V V^T w (against every previous v, twice), beta_j = ||w||, v_{j+1} = w / beta_j.
  If w vanishes (an invariant subspace is exhausted, e.g. m reaches rank(H)), the iteration
  restarts from a fresh random vector orthogonal to V and beta_j = 0, so every Ritz value
  is still an eigenvalue estimate. The eigenpairs of T = tridiag(beta, alpha, beta) give
  the Ritz values theta_i and vectors y_i = V s_i, and H y_i - theta_i y_i =
  beta_{m-1} s_{m-1,i} v_m, so |beta_{m-1} s_{m-1,i}| is each pair's residual for free.

  While a wanted pair's residual is above tolerance (a top eigenvalue inside a cluster, or
  a wide spectrum on both sides, needs more steps than m), the iteration restarts thickly
  (Wu and Simon 2000, "Thick-restart Lanczos method for large symmetric eigenvalue
  problems"): it keeps the r = max(k, m // 2) best Ritz pairs and v_m, whose projected
  matrix is diag(theta_1..r) bordered by the couplings beta_{m-1} s_{m-1,i}, and takes
  m - r more Lanczos steps from v_m, at most `max_restarts` times. The memory stays one
  (m + 1, P) basis, the cost at most m + max_restarts (m - r) + k Hessian-vector products,
  and a run that converges within m steps is exactly plain Lanczos.

  Args:
    loss_fn: params -> scalar loss, e.g. from `jaxnorm.loss.eval_loss_fn`.
    params: the point, any pytree of float arrays (P scalars in total).
    key: PRNG key for the starting vector and restarts.
    k: how many eigenpairs to return (k <= m).
    num_iterations: Lanczos steps m of each cycle (the basis size), capped at P. Extreme
      eigenvalues converge first; m ~ 3k to 10k plus a few dozen is typical.
    which: "largest" (algebraically largest, the sharpness at a minimum) or "magnitude"
      (largest |lambda|, what power iteration finds, e.g. PyHessian).
    tol: relative residual below which a pair counts as converged: ||H y - theta y|| <=
      tol * |theta|.
    max_restarts: thick restarts allowed while the top k are not converged (0: plain
      Lanczos, m steps). A static Python int: the loop is bounded, and runs under jit and
      vmap (where every seed of a batch waits for the slowest).
    hvp_flat: `flat_hvp(loss_fn, params)`, when the caller already built it (to share one
      linearization, and its compiled forward and backward pass, with `hutchinson_trace`).

  Returns:
    LanczosResult; the residuals are recomputed with k extra HVPs, not the cheap Lanczos
    estimate, so they stay honest in float32: check `converged`, a pair that did not reach
    the tolerance is an estimate only (some eigenvalue lies within its residual, possibly
    not the largest; a Ritz value is never above lambda_max). `alpha` and `beta` are those
    of the first m steps (plain Lanczos from the random start, the quadrature
    `density.spectral_density` uses).

  Raises:
    ValueError: for an unknown `which`, k outside [1, m] or a negative `max_restarts`.
  """
  if which not in WHICH:
    raise ValueError(f"which={which!r} is invalid; choose from {WHICH}")
  if max_restarts < 0:
    raise ValueError(f"max_restarts={max_restarts} must be >= 0")
  matvec, p = hvp_flat or flat_hvp(loss_fn, params)
  flat_P, unravel = ravel_pytree(params)
  dtype = flat_P.dtype
  m = min(num_iterations, p)
  if not 1 <= k <= m:
    raise ValueError(f"k={k} must be between 1 and the number of Lanczos steps m={m}")
  init_key, restart_key = jax.random.split(key)
  keep = max(k, m // 2)  # Ritz pairs kept by a thick restart
  restartable = max_restarts > 0 and keep < m  # keep = m (k = m) leaves no room

  def ritz(s: _Krylov):
    """Ritz values (m,) and vectors of the projected matrix, best first, and each pair's
    residual estimate |beta_{m-1} s_{m-1,i}| (m,)."""
    t_MxM = jnp.diag(s.alpha) + jnp.diag(s.beta[:-1], 1) + jnp.diag(s.beta[:-1], -1)
    if restartable:  # the kept pairs' couplings to v_r after a restart (zeros before)
      t_MxM = t_MxM.at[keep, :keep].add(s.coupling).at[:keep, keep].add(s.coupling)
    theta_M, s_MxM = lapack.eigh(t_MxM)
    order = jnp.argsort(-theta_M if which == "largest" else -jnp.abs(theta_M))
    theta_M, s_MxM = theta_M[order], s_MxM[:, order]
    return theta_M, s_MxM, jnp.abs(s.beta[-1] * s_MxM[-1])

  def running(carry) -> jax.Array:
    """Inside a cycle, or at its end with a wanted pair above tolerance and restarts left."""
    s, _ = carry
    if not restartable:
      return s.j < m
    theta_M, _, estimates_M = ritz(s)
    scale_K = jnp.maximum(jnp.abs(theta_M[:k]), jnp.finfo(dtype).tiny)
    unconverged = jnp.any(estimates_M[:k] > tol * scale_K)
    return (s.j < m) | ((s.restarts < max_restarts) & unconverged)

  def thick_restart(s: _Krylov) -> _Krylov:
    theta_M, s_MxM, _ = ritz(s)
    kept_RxP = s_MxM[:, :keep].T @ s.basis[:m]
    return _Krylov(
      j=jnp.asarray(keep, jnp.int32),
      restarts=s.restarts + 1,
      basis=jnp.zeros_like(s.basis).at[:keep].set(kept_RxP).at[keep].set(s.basis[m]),
      alpha=jnp.zeros_like(s.alpha).at[:keep].set(theta_M[:keep]),
      beta=jnp.zeros_like(s.beta),
      coupling=s.beta[-1] * s_MxM[-1, :keep],
    )

  def step(carry):
    """One Lanczos step (after a thick restart when a cycle is complete): one HVP, so the
    program holds a single copy of the Hessian-vector product however often it restarts."""
    s, first = carry
    if restartable:
      s = jax.lax.cond(s.j == m, thick_restart, lambda s: s, s)
    basis, alpha, beta = _lanczos_step(
      matvec, s.j, (s.basis, s.alpha, s.beta), restart_key, s.restarts * m
    )
    in_first = s.restarts == 0  # the first cycle's T, for the quadrature
    first = jax.tree.map(lambda new, old: jnp.where(in_first, new, old), (alpha, beta), first)
    return s._replace(j=s.j + 1, basis=basis, alpha=alpha, beta=beta), first

  v0_P = _unit(landscape.standard_normal(init_key, (p,), dtype))
  s = _Krylov(
    j=jnp.zeros((), jnp.int32),
    restarts=jnp.zeros((), jnp.int32),
    basis=jnp.zeros((m + 1, p), dtype).at[0].set(v0_P),
    alpha=jnp.zeros((m,), dtype),
    beta=jnp.zeros((m,), dtype),
    coupling=jnp.zeros((keep,), dtype),
  )
  s, (first_alpha_M, first_beta_M) = jax.lax.while_loop(running, step, (s, (s.alpha, s.beta)))
  theta_M, s_MxM, _ = ritz(s)
  theta_K = theta_M[:k]
  y_KxP = jax.vmap(_unit)(s_MxM[:, :k].T @ s.basis[:m])

  def residual(pair):
    y_P, theta = pair
    return jnp.linalg.norm(matvec(y_P) - theta * y_P)

  residuals_K = jax.lax.map(residual, (y_KxP, theta_K))
  # Relative to each pair's own |theta| (as ARPACK): relative to the largest |Ritz value|,
  # a small lambda_max beside large negative eigenvalues passed with a residual above it.
  spectral_scale = jnp.maximum(jnp.abs(theta_K), jnp.finfo(dtype).tiny)
  return LanczosResult(
    eigenvalues=theta_K,
    eigenvectors=jax.vmap(unravel)(y_KxP),
    residuals=residuals_K,
    converged=residuals_K <= tol * spectral_scale,
    num_iterations=jnp.asarray(m, jnp.int32),
    restarts=s.restarts,
    alpha=first_alpha_M,
    beta=first_beta_M[: m - 1],
  )


class _Krylov(NamedTuple):
  """The state of `lanczos`: the next step j of the current cycle, the restarts so far, the
  basis (m + 1, P) (rows after j zero), and the projected matrix: tridiag(beta[:-1], alpha,
  beta[:-1]) bordered at row and column r = max(k, m // 2) by `coupling` (r,) after a
  thick restart; beta[m - 1] is the norm of the residual that made v_m."""

  j: jax.Array
  restarts: jax.Array
  basis: jax.Array
  alpha: jax.Array
  beta: jax.Array
  coupling: jax.Array


def tridiagonal(
  matvec: Callable[[jax.Array], jax.Array],
  p: int,
  dtype,
  init_key: jax.Array,
  restart_key: jax.Array,
  m: int,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """m Lanczos steps from a Gaussian unit vector drawn from `init_key` (see `lanczos`):
  (basis (m + 1, P), alpha (m,), beta (m,)), T = tridiag(beta[:-1], alpha, beta[:-1]),
  beta[-1] the norm of the next residual, v_m = basis[m]."""
  v0_P = _unit(landscape.standard_normal(init_key, (p,), dtype))
  basis_MxP = jnp.zeros((m + 1, p), dtype).at[0].set(v0_P)
  alpha_M, beta_M = jnp.zeros((m,), dtype), jnp.zeros((m,), dtype)
  step = lambda j, carry: _lanczos_step(matvec, j, carry, restart_key, 0)  # noqa: E731
  return jax.lax.fori_loop(0, m, step, (basis_MxP, alpha_M, beta_M))


def _lanczos_step(
  matvec: Callable[[jax.Array], jax.Array],
  j: int | jax.Array,
  carry: tuple[jax.Array, jax.Array, jax.Array],
  restart_key: jax.Array,
  salt: int | jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Lanczos step j (see `lanczos`) on (basis (m + 1, P), alpha (m,), beta (m,)): one HVP
  of basis[j] (rows after it zero) fills alpha_j, beta_j and basis[j + 1]. A breakdown
  restarts from the normal vector of fold_in(restart_key, salt + j)."""
  basis_MxP, alpha_M, beta_M = carry
  p, dtype = basis_MxP.shape[1], basis_MxP.dtype
  # A product this close to zero after orthogonalization is rounding: the Krylov space is
  # invariant and the iteration restarts.
  breakdown = 100 * jnp.finfo(dtype).eps
  w_P = matvec(basis_MxP[j])
  alpha_j = jnp.vdot(basis_MxP[j], w_P)
  scale = jnp.linalg.norm(w_P)
  w_P = _orthogonalize(basis_MxP, w_P)
  beta_j = jnp.linalg.norm(w_P)
  broke = beta_j <= breakdown * scale
  fresh_P = landscape.standard_normal(jax.random.fold_in(restart_key, salt + j), (p,), dtype)
  next_P = jnp.where(broke, fresh_P, w_P)
  # One more pass after normalizing keeps v_{j+1} orthogonal when beta_j is small.
  next_P = _unit(_orthogonalize(basis_MxP, _unit(next_P)))
  basis_MxP = basis_MxP.at[j + 1].set(next_P)
  beta_j = jnp.where(broke, 0.0, beta_j)
  return basis_MxP, alpha_M.at[j].set(alpha_j), beta_M.at[j].set(beta_j)


def quadrature(alpha_M: jax.Array, beta_M1: jax.Array) -> tuple[jax.Array, jax.Array]:
  """Gauss quadrature of T = tridiag(beta, alpha, beta): (nodes theta (m,), weights (m,))."""
  t_MxM = jnp.diag(alpha_M) + jnp.diag(beta_M1, 1) + jnp.diag(beta_M1, -1)
  theta_M, s_MxM = lapack.eigh(t_MxM)
  return theta_M, s_MxM[0] ** 2


def hutchinson_trace(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_probes: int = 100,
  chunk_size: int | None = TRACE_CHUNK,
  hvp_flat: tuple[Callable[[jax.Array], jax.Array], int] | None = None,
) -> TraceResult:
  """tr(H) ~ (1/n) sum_i z_i^T H z_i, z_i i.i.d. Rademacher (+-1) over all P parameters.

  Unbiased (Hutchinson 1989); Var(z^T H z) = 2 sum_{i != j} H_ij^2 (Avron and Toledo
  2011), so a diagonal H is recovered exactly by any probe. Probes run `chunk_size` at a
  time under vmap (None: all at once), bounding memory. `hvp_flat` as in `lanczos`.
  """
  if num_probes < 2:
    raise ValueError(f"num_probes={num_probes} must be >= 2 to estimate a standard error")
  matvec, p = hvp_flat or flat_hvp(loss_fn, params)
  dtype = ravel_pytree(params)[0].dtype

  def sample(probe_key):
    z_P = rademacher(probe_key, (p,), dtype)
    return jnp.vdot(z_P, matvec(z_P))

  samples_N = landscape.chunked_map(sample, jax.random.split(key, num_probes), chunk_size)
  return TraceResult(
    trace=jnp.mean(samples_N),
    stderr=jnp.std(samples_N, ddof=1) / jnp.sqrt(num_probes),
    samples=samples_N,
    num_probes=jnp.asarray(num_probes, jnp.int32),
  )


def hessian_estimates(
  measure_config: MeasureConfig,
  loss_fn: Callable[[PyTree], jax.Array],
  params: PyTree,
  lanczos_key: jax.Array,
  trace_key: jax.Array,
) -> tuple[LanczosResult, TraceResult]:
  """The Hessian's top eigenpair (Lanczos, k = 1) and Hutchinson trace of `loss_fn` at
  `params`, at `measure_config`'s settings, from one linearization shared by both; the
  whole model's (`analysis`) and each block's (`layerwise.block_curvature`)."""
  hvp_flat = flat_hvp(loss_fn, params)
  top = lanczos(
    loss_fn,
    params,
    lanczos_key,
    k=1,
    num_iterations=measure_config.lanczos_iterations,
    tol=measure_config.lanczos_tol,
    max_restarts=measure_config.lanczos_restarts,
    hvp_flat=hvp_flat,
  )
  trace = hutchinson_trace(
    loss_fn, params, trace_key, num_probes=measure_config.trace_probes, hvp_flat=hvp_flat
  )
  return top, trace
