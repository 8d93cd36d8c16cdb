import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import isotropy


def test_identity_has_every_measure_equal_to_n():
  n = 6
  m = isotropy.measures(jnp.eye(n), center=False)
  for value in (m.effective_rank, m.stable_rank, m.participation_ratio):
    np.testing.assert_allclose(value, n, rtol=1e-6)
  np.testing.assert_allclose(m.condition_number, 1.0, rtol=1e-6)
  assert int(m.numerical_rank) == n


def test_rank_one_matrix_has_every_rank_measure_equal_to_one(key):
  u = jax.random.normal(key, (12, 1))
  v = jax.random.normal(jax.random.key(1), (1, 5))
  m = isotropy.measures(u @ v, center=False)
  # The SVD of a float32 rank-1 matrix leaves rounding-level singular values.
  np.testing.assert_allclose(m.effective_rank, 1.0, atol=1e-4)
  np.testing.assert_allclose(m.stable_rank, 1.0, rtol=1e-5)
  np.testing.assert_allclose(m.participation_ratio, 1.0, rtol=1e-5)
  assert int(m.numerical_rank) == 1
  np.testing.assert_allclose(m.condition_number, 1.0, rtol=1e-6)
  # From an exact spectrum with zeros, exactly 1 (0 log 0 = 0, zeros are below tolerance).
  exact = isotropy.from_spectrum(jnp.array([2.5, 0.0, 0.0]))
  for value in (exact.effective_rank, exact.stable_rank, exact.participation_ratio):
    np.testing.assert_allclose(value, 1.0, rtol=1e-7)
  np.testing.assert_allclose(exact.condition_number, 1.0)


def test_known_spectrum_three_one():
  m = isotropy.from_spectrum(jnp.array([1.0, 3.0]))  # order does not matter
  np.testing.assert_array_equal(m.singular_values, [3.0, 1.0])
  # p = (3/4, 1/4): H = -(3/4 log 3/4 + 1/4 log 1/4) = log 4 - (3/4) log 3.
  entropy = math.log(4) - 0.75 * math.log(3)
  np.testing.assert_allclose(m.effective_rank, math.exp(entropy), rtol=1e-6)  # 1.7548
  np.testing.assert_allclose(m.stable_rank, (9 + 1) / 9, rtol=1e-6)
  np.testing.assert_allclose(m.participation_ratio, (9 + 1) ** 2 / (81 + 1), rtol=1e-6)
  np.testing.assert_allclose(m.condition_number, 3.0, rtol=1e-6)
  assert int(m.numerical_rank) == 2


def test_condition_number_ignores_singular_values_below_tolerance():
  s = jnp.array([4.0, 2.0, 1e-9])
  np.testing.assert_allclose(isotropy.condition_number(s), 2.0)  # 1e-9 < 3 * eps * 4
  np.testing.assert_allclose(isotropy.condition_number(s, rtol=0.0), 4e9, rtol=1e-6)
  np.testing.assert_allclose(isotropy.condition_number(s, rtol=0.6), 1.0)  # only s_max
  assert int(isotropy.numerical_rank(s)) == 2


def test_default_tolerance_is_numpys_matrix_rank(key):
  x = jax.random.normal(key, (30, 4)) @ jax.random.normal(jax.random.key(1), (4, 8))
  m = isotropy.measures(x, center=False)
  assert float(m.rtol) == pytest.approx(30 * np.finfo(np.float32).eps)
  assert int(m.numerical_rank) == np.linalg.matrix_rank(np.asarray(x)) == 4


def test_centering_is_explicit_and_removes_the_mean_direction(key):
  # A large common offset dominates the uncentered spectrum (as in the reference).
  x = jax.random.normal(key, (200, 8)) + 10.0
  raw = isotropy.measures(x, center=False)
  centered = isotropy.measures(x, center=True)
  np.testing.assert_allclose(raw.singular_values, np.linalg.svd(np.asarray(x))[1], rtol=1e-4)
  xc = np.asarray(x) - np.asarray(x).mean(0)
  np.testing.assert_allclose(centered.singular_values, np.linalg.svd(xc)[1], rtol=1e-4)
  assert float(raw.stable_rank) < 1.5 < 5.0 < float(centered.stable_rank)
  with pytest.raises(TypeError):
    isotropy.measures(x)  # center must be chosen
  with pytest.raises(ValueError, match="2-D"):
    isotropy.measures(x[None], center=False)


def test_measures_are_jittable(key):
  x = jax.random.normal(key, (16, 4))
  f = jax.jit(lambda x: isotropy.measures(x, center=True))
  chex.assert_trees_all_close(f(x), isotropy.measures(x, center=True), rtol=1e-5)


MEASURE_FNS = (
  isotropy.effective_rank,
  isotropy.stable_rank,
  isotropy.participation_ratio,
  isotropy.condition_number,
  isotropy.numerical_rank,
)
MEASURE_NAMES = (
  "effective_rank",
  "stable_rank",
  "participation_ratio",
  "condition_number",
  "numerical_rank",
)
NAN, INF = float("nan"), float("inf")


def _assert_all_nan(m: isotropy.IsotropyMeasures):
  values = {name: float(getattr(m, name)) for name in MEASURE_NAMES}
  assert all(math.isnan(v) for v in values.values()), values


def _eye_with(value):
  x = np.eye(4, 6)
  x[1, 1] = value
  return x


@pytest.mark.hostile
@pytest.mark.parametrize(
  ("x", "centered_only"),
  [
    (np.zeros((6, 4)), False),  # a dead representation: was rank 1.0, NaN, NaN, 0.0, 0
    (np.ones((6, 4)), True),  # all zero once centered; uncentered a fine rank-1 matrix
    (_eye_with(NAN), False),
    (_eye_with(INF), False),
    (np.full((5, 3), -INF), False),
    (np.zeros((0, 4)), False),
  ],
  ids=["zeros", "constant", "nan", "inf", "-inf", "no rows"],
)
def test_every_measure_of_a_matrix_with_nothing_to_measure_is_nan(x, centered_only):
  x = jnp.asarray(x, jnp.float32)
  _assert_all_nan(isotropy.measures(x, center=True))
  if not centered_only:
    _assert_all_nan(isotropy.measures(x, center=False))
    _assert_all_nan(jax.jit(lambda x: isotropy.measures(x, center=False))(x))


@pytest.mark.hostile
@pytest.mark.parametrize(
  "s",
  [[0.0, 0.0, 0.0], [2.0, NAN, 1.0], [INF, 1.0], [3.0, -1.0], [NAN], []],
  ids=["zeros", "nan", "inf", "negative", "only nan", "empty"],
)
def test_every_measure_of_a_spectrum_with_nothing_to_measure_is_nan(s):
  s = jnp.asarray(s, jnp.float32)
  for fn in MEASURE_FNS:
    assert math.isnan(float(fn(s))), fn.__name__
  _assert_all_nan(isotropy.from_spectrum(s))
  if s.size:
    _assert_all_nan(jax.jit(isotropy.from_spectrum)(s))


def test_a_tolerance_outside_zero_one_gives_nan_rank_and_condition_number():
  s = jnp.array([4.0, 2.0, 1.0])
  for rtol in (1.0, -0.1, NAN):
    assert math.isnan(float(isotropy.numerical_rank(s, rtol)))
    assert math.isnan(float(isotropy.condition_number(s, rtol)))
  assert float(isotropy.numerical_rank(s, 0.0)) == 3.0


@pytest.mark.hostile
@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1.0, 1e12, 1e30, 1e38])
def test_measures_are_the_same_at_any_scale(scale):
  """Known answers of the spectrum (3, 1), times a scale at which s^2 or s^4 would underflow
  or overflow float32 (at 1e-12 the participation ratio was 0 / 0), or 1 / s_max would be
  a subnormal number flushed to 0 (above 2^126: the stable rank was 0)."""
  m = isotropy.from_spectrum(scale * jnp.array([1.0, 1.0 / 3.0]))
  entropy = math.log(4) - 0.75 * math.log(3)
  np.testing.assert_allclose(m.effective_rank, math.exp(entropy), rtol=1e-6)
  np.testing.assert_allclose(m.stable_rank, 10 / 9, rtol=1e-6)
  np.testing.assert_allclose(m.participation_ratio, 100 / 82, rtol=1e-6)
  np.testing.assert_allclose(m.condition_number, 3.0, rtol=1e-6)
  assert float(m.numerical_rank) == 2.0
  x = scale * jnp.diag(jnp.array([1.0, 1.0 / 3.0]))
  m = isotropy.measures(x, center=False)
  np.testing.assert_allclose(m.participation_ratio, 100 / 82, rtol=1e-6)
