"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (SLQ): per random
probe, the Gauss quadrature of its spectral measure from a Lanczos tridiagonal
(`curvature.tridiagonal`, `curvature.quadrature`); smoothed on a grid for the figure, and
the mass of its negative eigenvalues.

Lin, Saad and Yang 2016, "Approximating spectral densities of large matrices"; Ghorbani,
Krishnan and Xiao 2019, "An investigation into neural net optimization via Hessian
eigenvalue density"; Yao et al. 2020 (PyHessian). Traced inside the caller's program,
as `curvature`; `density_on` and `negative_mass` also compute on the host, in NumPy, when
given NumPy arrays (a figure's float64 values, no program compiled).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from jaxnorm.curvature import LossFn, PyTree, flat_hvp, quadrature, tridiagonal


class SpectralDensity(NamedTuple):
  """Stochastic Lanczos quadrature of the Hessian's eigenvalue density: per probe vector,
  the Gauss quadrature nodes (Ritz values) and weights of its spectral measure."""

  nodes: jax.Array  # (V, m) Ritz values theta_j of each probe's tridiagonal T
  weights: jax.Array  # (V, m) tau_j = (first component of T's j-th eigenvector)^2; rows sum to 1


def spectral_density(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  num_probes: int = 4,
  num_iterations: int = 30,
  hvp_flat: tuple[Callable[[jax.Array], jax.Array], int] | None = None,
) -> SpectralDensity:
  """The Hessian's eigenvalue density by stochastic Lanczos quadrature (Lin, Saad and Yang
  2016; Ghorbani, Krishnan and Xiao 2019; PyHessian): for each of V Gaussian unit probes v,
  m Lanczos steps give T = U diag(theta) U^T, and v^T f(H) v ~ sum_j tau_j f(theta_j) with
  tau_j = U_0j^2, exact for polynomials f of degree < 2m. The density is the average over
  probes of sum_j tau_j delta(t - theta_j) (`density_on`), in expectation the eigenvalue
  histogram divided by P. Probes run one after another (memory: one (m + 1, P) basis)."""
  matvec, p = hvp_flat or flat_hvp(loss_fn, params)
  dtype = ravel_pytree(params)[0].dtype
  m = min(num_iterations, p)

  def one(probe_key):
    _, alpha_M, beta_M = tridiagonal(matvec, p, dtype, *jax.random.split(probe_key), m)
    return quadrature(alpha_M, beta_M[:-1])

  nodes, weights = jax.lax.map(one, jax.random.split(key, num_probes))
  return SpectralDensity(nodes, weights)


def density_on(
  grid_G: jax.Array, nodes: jax.Array, weights: jax.Array, sigma: float | jax.Array
) -> jax.Array:
  """The SLQ density smoothed by a Gaussian of width sigma, on `grid_G`: (G,), integrating
  to 1 over the real line; nodes and weights (V, m) as `SpectralDensity`. NumPy in, NumPy
  out (`_namespace`)."""
  xp = _namespace(grid_G, nodes, weights, sigma)
  z = (grid_G[:, None, None] - nodes[None]) / sigma
  kernel = xp.exp(-0.5 * z**2) / (sigma * xp.sqrt(2 * xp.pi))
  return xp.sum(weights[None] * kernel, axis=(1, 2)) / nodes.shape[0]


NEGATIVE_TOL = 1e-2  # eigenvalues within 1% of the largest |eigenvalue| of 0 count as 0


def negative_mass(nodes: jax.Array, weights: jax.Array, rel_tol: float = NEGATIVE_TOL):
  """The density's mass clearly below zero, under -rel_tol * max |node|: the fraction of
  eigenvalues that are negative. (A Hessian's bulk sits at 0 in both signs, and the
  rounding of the nodes there would otherwise decide half of its mass.)"""
  xp = _namespace(nodes, weights)
  cut = -rel_tol * xp.max(xp.abs(nodes))
  return xp.sum(xp.where(nodes < cut, weights, 0.0)) / nodes.shape[0]


def _namespace(*arrays):
  """jax.numpy if any argument is a JAX array (a tracer included), else NumPy: host values
  stay on the host, at their own precision, instead of each operation being compiled."""
  return jnp if any(isinstance(a, jax.Array) for a in arrays) else np
