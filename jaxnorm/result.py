"""What a run returns: per normalization the per-seed arrays of every seed (`NormResult`,
`Matched`), the experiment (`ExperimentResult`) and the learning-rate sweep
(`SweepResult`). Every per-seed array keeps its leading seed axis S, also for one seed,
so `take` slices runs or seeds of every array at once."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import numpy as np

from jaxnorm.spec import ExperimentSpec


class Matched(NamedTuple):
  """The analysis of one normalization at a matched training loss, per seed: the state at
  the end of the first training chunk (`ExperimentSpec.chunk_size` steps) whose mean
  training loss is <= `level`. A seed that never gets there has step -1 and NaN values."""

  level: float
  step: np.ndarray  # (S,) int: steps trained at the checkpoint, -1 if never reached
  landscape: np.ndarray  # (S, P) eval loss along the global-norm direction
  base_loss: np.ndarray  # (S,) eval loss at the checkpoint
  spectrum: np.ndarray  # (S, K)
  measures: dict[str, np.ndarray]  # (S,) each; {} when not measured
  # As `NormResult`'s: (S, N + 1, K) and name -> (S, N + 1) or (S, N); None for older folders.
  layer_spectra: np.ndarray | None = None
  layer_measures: dict[str, np.ndarray] | None = None


class NormResult(NamedTuple):
  """One normalization over S seeds. Every per-seed array has a leading seed axis S."""

  norm: str
  learning_rate: float
  seeds: np.ndarray  # (S,) int
  losses: np.ndarray  # (S, steps) training loss per step
  alphas: np.ndarray  # (P,) the slice's axis
  offsets: np.ndarray  # (P,) where it was evaluated (cumsum(alphas) for the cumulative slice)
  landscape: np.ndarray  # (S, P) eval loss along the global-norm direction
  base_loss: np.ndarray  # (S,) eval loss at the trained params
  spectrum: np.ndarray  # (S, K) singular values of the block output
  measures: dict[str, np.ndarray]  # measures.ANALYZED name -> (S,); {} when not measured
  surface_grid: np.ndarray | None  # (A,) both axes of the 2D slice
  surface: np.ndarray | None  # (S, A, A)
  variables: dict | None  # {'params', 'batch_stats'}, leaves (S, ...)
  first_nonfinite_step: (
    np.ndarray
  )  # (S,) int: first step (0-based) with a non-finite loss, -1 if none
  seconds: dict[str, float]  # wall time: train, analysis
  matched: tuple[Matched, ...] = ()  # one per `ExperimentSpec.matched_losses` level
  # The Hessian's eigenvalue density per seed, SLQ nodes and weights, each (S, m); None
  # without measures (`analysis.Analysis.hessian_density`).
  hessian_density: tuple[np.ndarray, np.ndarray] | None = None
  # Curvature over training (`ExperimentSpec.curvature_iterations`): the chunk ends (C,)
  # and per seed (lambda_max, Adam's preconditioned sharpness) there, (S, C, 2).
  trajectory_steps: np.ndarray | None = None
  trajectory: np.ndarray | None = None
  # The layer-wise dissection (`Config.num_blocks` = N): the singular values of the
  # representation at every depth, (S, N + 1, K), layer 0 the embedding output and layer l
  # block l's output; None for folders written before it existed.
  layer_spectra: np.ndarray | None = None
  # Per-layer measures (`families.LAYER_FAMILY_MEASURES`): each isotropy measure name ->
  # (S, N + 1) and each block's weight norms "weight_norm_norm{1,2}_input" -> (S, N) (with
  # the "isotropy" family), each per-block curvature name ("block_hessian_...") -> (S, N)
  # (with "hessian"; `families.PER_BLOCK_MEASURES` names the (S, N) ones); {} when none
  # was measured, None for older folders.
  layer_measures: dict[str, np.ndarray] | None = None
  # A text data set (`Config.text`): each epoch's running training accuracy, the fraction
  # of its examples predicted right by the steps that trained on them (the reference's),
  # (S, E); None for the synthetic task.
  epoch_accuracy: np.ndarray | None = None

  @property
  def diverged(self) -> np.ndarray:
    """(S,) bool: the training loss became NaN or infinite."""
    return self.first_nonfinite_step >= 0

  def take(self, runs: slice | np.ndarray) -> NormResult:
    """The runs (seeds) `runs` of every per-seed array; the axes and times unchanged."""

    def take(tree):
      return jax.tree.map(lambda x: x[runs], tree)

    return self._replace(
      **{name: take(getattr(self, name)) for name in PER_SEED},
      matched=tuple(
        m._replace(**{n: take(getattr(m, n)) for n in MATCHED_PER_SEED}) for m in self.matched
      ),
    )


# The fields of `NormResult` and `Matched` that hold per-seed arrays (None where not taken).
PER_SEED = (
  "seeds",
  "losses",
  "landscape",
  "base_loss",
  "spectrum",
  "measures",
  "surface",
  "variables",
  "first_nonfinite_step",
  "hessian_density",
  "trajectory",
  "layer_spectra",
  "layer_measures",
  "epoch_accuracy",
)
MATCHED_PER_SEED = (
  "step",
  "landscape",
  "base_loss",
  "spectrum",
  "measures",
  "layer_spectra",
  "layer_measures",
)


class ExperimentResult(NamedTuple):
  """Every normalization of `spec` over its seeds; `seconds`: the run's wall time."""

  spec: ExperimentSpec
  norms: dict[str, NormResult]
  seconds: float  # wall time of the whole run
  environment: dict[str, Any]  # versions and devices (`runtime.environment`)


def rate_folder(rate: float) -> str:
  """The sub-folder of a sweep's run at learning rate `rate`: lr_0.0001, lr_3e-05, ..."""
  return f"lr_{rate:g}"


class SweepResult(NamedTuple):
  """A learning-rate sweep (`jaxnorm.sweep`): one experiment per rate, every model at it."""

  rates: tuple[float, ...]  # R rates, in the order given
  runs: tuple[ExperimentResult, ...]  # one experiment per rate
