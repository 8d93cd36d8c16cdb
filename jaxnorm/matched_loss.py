"""Matched-loss checkpoints: each seed's training state where its training loss first fell
to a level, so that models can be compared at the same training loss rather than the same
step (`ExperimentSpec.matched_losses`; the analyses land in `result.Matched`).

A level is reached at the end of the first chunk of steps whose mean training loss is at or
below it; the states are kept on the device, one pytree per level, and analyzed once
training ends by the same compiled analysis as the final state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import analysis


class Checkpoints:
  """The training states where each seed's chunk-mean training loss first fell to each
  level of `levels` (kept on the device, one per level), for `num_seeds` seeds."""

  def __init__(self, levels: tuple[float, ...], num_seeds: int):
    self.levels = levels
    self.step = [np.full(num_seeds, -1) for _ in levels]
    self.saved: list[Any] = [None for _ in levels]

  def snapshot(self, state) -> Any:
    """A copy of (params, batch_stats) that outlives the state's donation; None when no
    level is tracked."""
    if not self.levels:
      return None
    return jax.tree.map(jnp.copy, (state.params, state.batch_stats))

  def update(self, losses_SxN: np.ndarray, steps_done: int, snapshot) -> None:
    """Takes the chunk of training losses (S, N) that ended at `steps_done` steps, and the
    `snapshot` of the state there."""
    if not self.levels:
      return
    mean_S = losses_SxN.mean(axis=1)
    for i, level in enumerate(self.levels):
      newly_S = np.isfinite(mean_S) & (mean_S <= level) & (self.step[i] < 0)
      if not newly_S.any():
        continue
      self.step[i][newly_S] = steps_done
      if self.saved[i] is None:
        self.saved[i] = snapshot
      else:
        pick = lambda new, old, m=newly_S: jnp.where(  # noqa: E731
          m.reshape(-1, *([1] * (new.ndim - 1))), new, old
        )
        self.saved[i] = jax.tree.map(pick, snapshot, self.saved[i])

  def analyze(self, analyze: Callable, final: analysis.Analysis) -> list:
    """Per level (step_S, Analysis at the checkpoints), NaN for seeds never there; the
    final analysis gives the shapes where no seed got there. `analyze(params,
    batch_stats)` is the run's analysis on the host."""
    out = []
    for step_S, saved in zip(self.step, self.saved, strict=True):
      result = final if saved is None else analyze(*saved)
      missed_S = step_S < 0

      def mask(x, missed=missed_S):
        x = np.asarray(x, dtype=np.float64)
        return np.where(missed.reshape(-1, *([1] * (x.ndim - 1))), np.nan, x)

      result = result._replace(surface=None, hessian_density=None)
      out.append((step_S.copy(), jax.tree.map(mask, result)))
    return out
