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


def test_take_slices_the_layer_arrays_and_keeps_their_absence():
  from helpers import norm_result

  r = norm_result("layernorm", seeds=3)
  assert r.take(slice(1, 2)).layer_spectra is None and r.take([0]).layer_measures is None
  layered = r._replace(
    layer_spectra=np.arange(3 * 4 * 2.0).reshape(3, 4, 2),
    layer_measures={"effective_rank": np.arange(12.0).reshape(3, 4), "block_x": np.ones((3, 3))},
  )
  part = layered.take(np.array([2, 0]))
  np.testing.assert_array_equal(part.layer_spectra, layered.layer_spectra[[2, 0]])
  np.testing.assert_array_equal(
    part.layer_measures["effective_rank"], layered.layer_measures["effective_rank"][[2, 0]]
  )
  assert part.layer_measures["block_x"].shape == (2, 3)
  assert layered._replace(layer_measures={}).take([1]).layer_measures == {}
