"""Matched-loss checkpoints: the state kept for each seed is the one at the end of the first
chunk whose mean training loss is at or below the level; seeds never there are NaN."""

from typing import NamedTuple

import numpy as np

from jaxnorm import analysis, matched_loss


class State(NamedTuple):
  params: dict
  batch_stats: dict


def _state(value_S: list[float]) -> State:
  """A state whose one parameter per seed is `value_S` (the step it was taken at)."""
  return State({"w": np.asarray(value_S, dtype=np.float32)}, {})


def test_each_seed_keeps_the_state_of_its_first_chunk_at_or_below_each_level():
  checkpoints = matched_loss.Checkpoints((2.0, 1.0), num_seeds=3)
  chunks = [  # (S, N) losses of chunks of 2 steps
    [[3.0, 2.5], [2.5, 1.5], [3.0, 3.0]],  # means 2.75, 2.0, 3.0: seed 1 reaches 2.0
    [[1.5, 1.0], [0.5, 0.5], [np.nan, 0.1]],  # 1.25, 0.5, NaN: seed 0 at 2.0, seed 1 at 1.0
    [[0.5, 1.0], [2.0, 2.0], [3.0, 3.0]],  # 0.75, 2.0, 3.0: seed 0 at 1.0; seed 1 kept
  ]
  for i, losses in enumerate(chunks):
    steps = 2 * (i + 1)
    checkpoints.update(np.asarray(losses), steps, checkpoints.snapshot(_state([steps] * 3)))
  np.testing.assert_array_equal(checkpoints.step[0], [4, 2, -1])
  np.testing.assert_array_equal(checkpoints.step[1], [6, 4, -1])
  saved_at_2 = np.asarray(checkpoints.saved[0][0]["w"])
  np.testing.assert_array_equal(saved_at_2[:2], [4, 2])  # each seed its own state

  def analyze(params, batch_stats):
    del batch_stats
    w = np.asarray(params["w"])
    return analysis.Analysis(w, w, w[:, None], {"m": w}, w[:, None, None], (w, w))

  final = analyze({"w": np.full(3, 99.0)}, {})
  (step_2, at_2), (step_1, at_1) = checkpoints.analyze(analyze, final)
  np.testing.assert_array_equal(step_2, [4, 2, -1])
  np.testing.assert_array_equal(at_2.base_loss, [4, 2, np.nan])  # seed 2 never there
  np.testing.assert_array_equal(at_1.measures["m"], [6, 4, np.nan])
  assert at_2.surface is None and at_2.hessian_density is None


def test_no_levels_keep_nothing():
  checkpoints = matched_loss.Checkpoints((), num_seeds=2)
  assert checkpoints.snapshot(_state([1, 1])) is None
  checkpoints.update(np.zeros((2, 3)), 3, None)
  assert checkpoints.analyze(lambda p, b: None, None) == []
