"""summary.json and sweep.json: every measure across seeds (`stats.across_seeds`) with the
config, divergence, wall times and versions, as JSON-ready dicts. Pure functions of a
`result.ExperimentResult` or `result.SweepResult`."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxnorm import stats, trajectory
from jaxnorm.result import ExperimentResult, SweepResult, rate_folder

FORMAT = 2  # summary.json / results.npz layout: every per-seed array keeps its seed axis.


def config_to_dict(cfg) -> dict[str, Any]:
  """The fields of a `config.Config` (`results.config_from_dict` reads it back); a text
  data set's shape as its named fields."""
  fields = dataclasses.asdict(cfg)
  if cfg.text is not None:
    fields["text"] = cfg.text._asdict()
  return fields


def _finite_mean(values_SxC: np.ndarray) -> list[float | None]:
  """Per column (C,), the mean over seeds of the finite values; None where no seed has one
  (every seed diverged by then): JSON holds no NaN."""
  finite = np.isfinite(values_SxC)
  count = finite.sum(axis=0)
  total = np.where(finite, values_SxC, 0.0).sum(axis=0)
  return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]


def layer_means(layer_measures: dict[str, np.ndarray]) -> dict[str, list[float | None]]:
  """Each layer measure (S, N + 1) or (S, N) as its mean over the seeds with a finite
  value, per layer (None where none has one: a diverged or dead layer)."""
  return {
    name: _finite_mean(np.asarray(values, np.float64)) for name, values in layer_measures.items()
  }


def summary_dict(result: ExperimentResult) -> dict[str, Any]:
  """summary.json: the config, per normalization every measure across seeds, the
  learning rate, divergence, wall times, and with layer measures their per-layer means
  ("layer_measures": name -> one mean over seeds per layer, N + 1 or N of them); per
  matched-loss level the step each seed reached it at (null: never) and every measure
  there; the versions and devices."""
  spec = result.spec
  norms = {}
  for norm, r in result.norms.items():
    steps = [int(s) if s >= 0 else None for s in r.first_nonfinite_step]
    norms[norm] = {
      **stats.stats(r),
      "learning_rate": r.learning_rate,
      "seeds": [int(s) for s in r.seeds],
      "diverged": bool(r.diverged.any()),
      "first_nonfinite_step": steps,
      "seconds": dict(r.seconds),
    }
    if r.layer_measures:
      norms[norm]["layer_measures"] = layer_means(r.layer_measures)
    if r.epoch_accuracy is not None:  # mean over seeds, per epoch
      norms[norm]["epoch_accuracy"] = _finite_mean(r.epoch_accuracy)
    if r.trajectory is not None:
      norms[norm]["curvature_over_training"] = {
        "steps": [int(x) for x in r.trajectory_steps],
        "lambda_max": _finite_mean(r.trajectory[..., 0]),
        "preconditioned_sharpness": _finite_mean(r.trajectory[..., 1]),
        "stability_threshold": trajectory.stability_threshold(r.learning_rate),
      }
  return {
    "format": FORMAT,
    "experiment": spec.name,
    "title": spec.title,
    "config": config_to_dict(spec.config),
    "seeds": spec.num_seeds,
    "measured": spec.measures is not None,
    # The estimators' settings (MeasureConfig), null without measures.
    "measure_config": None if spec.measures is None else dataclasses.asdict(spec.measures),
    # What measures.md judged (`predictions.Prediction`).
    "predictions": [dataclasses.asdict(p) for p in spec.predictions],
    "surface_points": spec.surface_points,
    "curvature_iterations": spec.curvature_iterations,
    "chunk_size": spec.chunk_size,
    "analysis_dtype": spec.analysis_dtype,
    "norms": norms,
    "matched": [
      {
        "level": level,
        "norms": {
          norm: {
            "step": [int(x) if x >= 0 else None for x in r.matched[i].step],
            **stats.stats(r.matched[i]),
          }
          for norm, r in result.norms.items()
        },
      }
      for i, level in enumerate(spec.matched_losses)
    ],
    "seconds": {"total": result.seconds},
    "environment": result.environment,
  }


def sweep_dict(result: SweepResult) -> dict[str, Any]:
  """sweep.json: the rates, the common config, seed count and measure families, and per
  normalization and measure one `stats.across_seeds` per rate; per rate the sub-folder of
  its run."""
  first = result.runs[0].spec
  return {
    "format": 1,
    "experiment": first.name,
    "rates": list(result.rates),
    "folders": [rate_folder(r) for r in result.rates],
    "seeds": first.num_seeds,
    "config": config_to_dict(first.config),
    "measure_families": None if first.measures is None else list(first.measures.families),
    "diverged": stats.diverged_by_rate(result),
    "norms": stats.by_rate(result),
  }
