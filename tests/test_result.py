"""The result types: `NormResult.take` slices every per-seed array of a model at once, and
`PER_SEED` names exactly the fields that hold them."""

import jax
import numpy as np

from jaxnorm import result as result_lib


def _leaves(value) -> list:
  return [x for x in jax.tree.leaves(value) if isinstance(x, np.ndarray | jax.Array)]


def test_take_slices_every_per_seed_array_and_nothing_else(measured_result):
  r = measured_result.norms["batchnorm"]
  seeds = len(r.seeds)
  assert seeds == 2
  for name in r._fields:  # PER_SEED is every field with a seed axis, and only those
    leaves = _leaves(getattr(r, name))
    if name in result_lib.PER_SEED:
      assert all(np.shape(x)[0] == seeds for x in leaves), name  # or None here
    elif name != "matched":
      assert all(np.ndim(x) == 0 or np.shape(x)[0] != seeds for x in leaves), name
  second = r.take(slice(1, 2))
  for name in result_lib.PER_SEED:
    for whole, part in zip(_leaves(getattr(r, name)), _leaves(getattr(second, name)), strict=True):
      np.testing.assert_array_equal(part, np.asarray(whole)[1:2])
  np.testing.assert_array_equal(second.alphas, r.alphas)
  assert second.seconds == r.seconds
