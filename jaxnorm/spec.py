"""What to run: `ExperimentSpec`, the configuration, seeds and measures of one experiment,
checked field by field when it is made (a wrong type raises `config.FieldTypeError`, a
wrong value ValueError, each naming the field)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from jaxnorm.config import (
  MAX_SEED,
  Config,
  FieldTypeError,
  as_float,
  as_int,
  as_str,
  as_tuple,
)
from jaxnorm.families import MeasureConfig
from jaxnorm.predictions import Prediction

DEFAULT_TITLE = "Comparative Analysis of Normalization Techniques"
MAX_SURFACE = 2**12  # points per axis of a 2D slice: at most 2^24 losses per seed
ANALYSIS_DTYPES = ("float32", "float64")


def _instance_of(cls: type, what: str) -> Callable[[str, Any], Any]:
  def check(where: str, value: Any) -> Any:
    if not isinstance(value, cls):
      raise FieldTypeError(f"{where}={value!r} is invalid: must be {what}.")
    return value

  return check


def _optional(convert: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
  return lambda where, value: None if value is None else convert(where, value)


def _predictions(where: str, value: Any) -> tuple[Prediction, ...]:
  return as_tuple(where, value, _instance_of(Prediction, "a predictions.Prediction"), "Predictions")


def _levels(where: str, value: Any) -> tuple[float, ...]:
  return as_tuple(where, value, as_float, "training-loss levels (numbers)")


# Every field of ExperimentSpec and the type it must have (`ExperimentSpec.__post_init__`
# converts numpy scalars to Python numbers and raises FieldTypeError naming the field).
SPEC_FIELD_TYPES: dict[str, Callable[[str, Any], Any]] = {
  "config": _instance_of(Config, "a jaxnorm.config.Config, e.g. config.PRESETS['tiny']"),
  "num_seeds": as_int,
  "name": as_str,
  "title": as_str,
  "predictions": _predictions,
  "measures": _optional(_instance_of(MeasureConfig, "a families.MeasureConfig or None")),
  "surface_points": _optional(as_int),
  "seeds_per_call": _optional(as_int),
  "chunk_size": as_int,
  "matched_losses": _levels,
  "curvature_iterations": as_int,
  "analysis_dtype": as_str,
}


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """What to run and what to report: the config, how many seeds, what to measure.

  Attributes:
    config: task, model, training and landscape settings, normalizations, first seed.
    num_seeds: seeds config.seed .. config.seed + num_seeds - 1.
    name, title: the experiment's name (summary.json) and its figure's title.
    predictions: the paper's claims that `measures.md` judges.
    measures: which measure families run (`MeasureConfig.families`; default the standard
      level) and how hard their estimators work; None: the reference's slice and spectrum
      only.
    surface_points: also a 2D slice on this many points per axis (None: no surface).
    seeds_per_call: at most this many seeds per compiled call (bounds memory; None: all).
    chunk_size: training steps per compiled call (one host round-trip per chunk).
    matched_losses: training-loss levels at which every model is also analyzed (`Matched`):
      the state at the end of the first chunk whose mean training loss is <= the level.
    curvature_iterations: Lanczos steps of the curvature tracked at the end of every chunk
      inside the training program (`trajectory`); 0: not tracked.
    analysis_dtype: "float32", or "float64" to analyze (slices, spectrum, measures, matched
      checkpoints) in double precision: the trained float32 weights cast up and every loss,
      product and decomposition of the analysis computed in float64 under `jax.enable_x64`.
      Training (and the in-loop curvature) stays float32, and the random directions,
      probes and batches are the same numbers, so the two differ by rounding only.
  """

  config: Config
  num_seeds: int = 1
  name: str = "exp2"
  title: str = DEFAULT_TITLE
  predictions: tuple[Prediction, ...] = ()
  measures: MeasureConfig | None = MeasureConfig()
  surface_points: int | None = None
  seeds_per_call: int | None = None
  chunk_size: int = 100
  matched_losses: tuple[float, ...] = ()
  curvature_iterations: int = 0
  analysis_dtype: str = "float32"

  def __post_init__(self):
    for field, convert in SPEC_FIELD_TYPES.items():
      object.__setattr__(self, field, convert(f"ExperimentSpec.{field}", getattr(self, field)))
    if self.analysis_dtype not in ANALYSIS_DTYPES:
      raise ValueError(
        f"ExperimentSpec.analysis_dtype={self.analysis_dtype!r} is invalid: one of "
        f"{', '.join(ANALYSIS_DTYPES)}."
      )
    if not (self.curvature_iterations == 0 or self.curvature_iterations >= 2):
      raise ValueError(
        f"ExperimentSpec.curvature_iterations={self.curvature_iterations!r} is invalid: "
        "0 (off) or >= 2 Lanczos steps."
      )
    levels = self.matched_losses
    if len(set(levels)) != len(levels):
      raise ValueError(f"ExperimentSpec.matched_losses={levels!r} is invalid: distinct levels.")
    for level in levels:
      if not (math.isfinite(level) and level > 0):
        raise ValueError(
          f"ExperimentSpec.matched_losses={levels!r} is invalid: levels must be finite and > 0."
        )
    for field in ("num_seeds", "chunk_size"):
      value = getattr(self, field)
      if value < 1:
        raise ValueError(f"ExperimentSpec.{field}={value!r} is invalid: must be an integer >= 1.")
    if self.seeds_per_call is not None and self.seeds_per_call < 1:
      raise ValueError(
        f"ExperimentSpec.seeds_per_call={self.seeds_per_call!r} is invalid: must be None or >= 1."
      )
    if self.surface_points is not None and not 2 <= self.surface_points <= MAX_SURFACE:
      raise ValueError(
        f"ExperimentSpec.surface_points={self.surface_points!r} is invalid: a 2D slice needs "
        f"between 2 and {MAX_SURFACE} points per axis."
      )
    last = self.config.seed + self.num_seeds - 1
    if last > MAX_SEED:
      raise ValueError(
        f"ExperimentSpec.num_seeds={self.num_seeds} is invalid: seeds {self.config.seed} .. "
        f"{last} go beyond {MAX_SEED}, where JAX keys from int32 seeds wrap."
      )

  @property
  def seeds(self) -> tuple[int, ...]:
    return tuple(range(self.config.seed, self.config.seed + self.num_seeds))
