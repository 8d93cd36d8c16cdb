"""The Hessian's eigenvalue density by stochastic Lanczos quadrature (`jaxnorm.density`)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import density


def test_slq_recovers_a_known_spectrum():
  """H = diag(lambda): 180 eigenvalues spread over [0, 1], 15 at -0.5, 5 outliers at 10.
  Quadrature with m steps is exact for polynomials of degree < 2m, so the density's
  moments are tr(H^k) / P up to the probes' sampling error."""
  lam = jnp.concatenate([jnp.linspace(0.0, 1.0, 180), jnp.full((15,), -0.5), jnp.full((5,), 10.0)])
  loss_fn = lambda p: 0.5 * jnp.sum(lam * p["w"] ** 2)  # noqa: E731
  params = {"w": jnp.zeros_like(lam)}
  slq = jax.jit(
    lambda k: density.spectral_density(loss_fn, params, k, num_probes=64, num_iterations=25)
  )(jax.random.key(0))
  assert slq.nodes.shape == (64, 25)
  np.testing.assert_allclose(slq.weights.sum(axis=1), 1.0, rtol=1e-5)
  for k in (1, 2, 3):
    moment = float(jnp.sum(slq.weights * slq.nodes**k) / 64)
    np.testing.assert_allclose(moment, float(jnp.mean(lam**k)), rtol=0.15)
  # The extreme eigenvalues are nodes; the mass below zero is the fraction 15 / 200.
  assert float(slq.nodes.max()) == pytest.approx(10.0, rel=1e-4)
  assert float(slq.nodes.min()) == pytest.approx(-0.5, rel=1e-4)
  np.testing.assert_allclose(density.negative_mass(slq.nodes, slq.weights), 0.075, atol=0.02)
  outliers = float(jnp.sum(jnp.where(slq.nodes > 5, slq.weights, 0.0)) / 64)
  np.testing.assert_allclose(outliers, 0.025, atol=0.01)
  grid = jnp.linspace(-3.0, 13.0, 4001)
  smoothed = density.density_on(grid, slq.nodes, slq.weights, 0.1)
  np.testing.assert_allclose(float(jnp.sum(smoothed) * (grid[1] - grid[0])), 1.0, rtol=1e-3)


def test_numpy_values_are_computed_on_the_host_as_jax_computes_them():
  """Given NumPy arrays (a figure's), the smoothed density and the negative mass are NumPy
  float64 and equal JAX's float32 values within float32 rounding."""
  rng = np.random.default_rng(0)
  nodes = rng.normal(size=(3, 7))
  weights = rng.dirichlet(np.ones(7), size=3)
  grid = np.linspace(-3.0, 3.0, 50)
  on_host = density.density_on(grid, nodes, weights, 0.3)
  on_device = density.density_on(jnp.asarray(grid), jnp.asarray(nodes), jnp.asarray(weights), 0.3)
  assert type(on_host) is np.ndarray and on_host.dtype == np.float64
  np.testing.assert_allclose(on_host, on_device, rtol=1e-5, atol=1e-7)
  mass = density.negative_mass(nodes, weights)
  assert isinstance(mass, np.floating) and mass.dtype == np.float64
  np.testing.assert_allclose(mass, density.negative_mass(jnp.asarray(nodes), weights), rtol=1e-6)
