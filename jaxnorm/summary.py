"""Numbers across seeds: each measure per seed, then its mean, spread and confidence
interval, and summary.json. Pure functions of a `pipeline.ExperimentResult`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.stats

from jaxnorm import measures, trajectory

if TYPE_CHECKING:
  from jaxnorm.pipeline import ExperimentResult, Matched, NormResult

FORMAT = 2  # summary.json / results.npz layout: every per-seed array keeps its seed axis.
FINAL_LOSS_WINDOW = 100  # final_loss is the mean training loss over the last 100 steps.


def per_seed(r: NormResult | Matched) -> dict[str, np.ndarray]:
  """Every measure of `r`, in `measures.MEASURES` order: name -> (S,) float64.

  The basic ones are read off the arrays: final loss (mean of the last 100 steps; not for
  a `Matched` checkpoint), the eval loss at alpha = 0, the largest rise over the 1D slice,
  the top/bottom singular value ratio; the others are `r.measures` (booleans as 0.0 /
  1.0), each flatness measure of `measures.PER_LOSS_OF` divided by the loss at
  alpha = 0, and the effective learning rate eta / ||W||^2 at each normalization.
  """
  values = {
    "loss_at_alpha0": r.base_loss,
    "landscape_max_rise": np.max(r.landscape, axis=1) - r.base_loss,
    "spectrum_top_bottom_ratio": _top_bottom_ratio(r.spectrum),
    **r.measures,
  }
  if hasattr(r, "losses"):
    values["final_loss"] = np.mean(r.losses[:, -FINAL_LOSS_WINDOW:], axis=1)
  if hasattr(r, "learning_rate"):
    for layer in ("norm1", "norm2"):
      if f"weight_norm_{layer}_input" in values:
        w = np.asarray(values[f"weight_norm_{layer}_input"], dtype=np.float64)
        values[f"effective_lr_{layer}"] = r.learning_rate / w**2
  loss = values["loss_at_alpha0"]
  for name in measures.PER_LOSS_OF:
    if name in values:
      values[f"{name}_per_loss"] = np.asarray(values[name], dtype=np.float64) / loss
  order = [m.name for m in measures.MEASURES if m.name in values]
  return {name: np.asarray(values[name], dtype=np.float64) for name in order}


def across_seeds(values) -> dict[str, Any]:
  """Mean, sample standard deviation and 95% Student-t confidence interval of the mean
  over the finite values; n says how many seeds contributed. Non-finite values are
  listed as None (JSON null)."""
  listed = [float(v) if v is not None and np.isfinite(v) else None for v in values]
  finite = np.array([v for v in listed if v is not None], dtype=np.float64)
  n = len(finite)
  out: dict[str, Any] = {"mean": None, "std": None, "ci95": [None, None], "n": n, "values": listed}
  if n:
    out["mean"] = float(finite.mean())
  if n > 1:
    std = float(finite.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    out.update(std=std, ci95=[float(out["mean"] - half), float(out["mean"] + half)])
  return out


def stats(r: NormResult | Matched) -> dict[str, dict[str, Any]]:
  """`across_seeds` of every measure of `r`."""
  return {name: across_seeds(v) for name, v in per_seed(r).items()}


def config_to_dict(cfg) -> dict[str, Any]:
  return {field: getattr(cfg, field) for field in cfg.__dataclass_fields__}


def _top_bottom_ratio(spectrum_SxK: np.ndarray) -> np.ndarray:
  """s_max / s_min per seed (S,); NaN where the spectrum has nothing to measure (the
  convention of `jaxnorm.isotropy`: all zero, non-finite or negative entries), inf where
  only s_min is 0."""
  s = np.asarray(spectrum_SxK, np.float64)
  measurable = np.all(np.isfinite(s) & (s >= 0), axis=1) & (np.max(s, axis=1, initial=0) > 0)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.max(s, axis=1, initial=0) / np.min(s, axis=1, initial=np.inf)
  return np.where(measurable, ratio, np.nan)


def _finite_mean(values_SxC: np.ndarray) -> list[float | None]:
  """Per column (C,), the mean over seeds of the finite values; None where no seed has one
  (every seed diverged by then): JSON holds no NaN."""
  finite = np.isfinite(values_SxC)
  count = finite.sum(axis=0)
  total = np.where(finite, values_SxC, 0.0).sum(axis=0)
  return [float(t / c) if c else None for t, c in zip(total, count, strict=True)]


def summary_dict(result: ExperimentResult) -> dict[str, Any]:
  """summary.json: the config, per normalization every measure across seeds, the
  learning rate, divergence, wall times; per matched-loss level the step each seed reached
  it at (null: never) and every measure there; the versions and devices."""
  spec = result.spec
  norms = {}
  for norm, r in result.norms.items():
    steps = [int(s) if s >= 0 else None for s in r.first_nonfinite_step]
    norms[norm] = {
      **stats(r),
      "learning_rate": r.learning_rate,
      "seeds": [int(s) for s in r.seeds],
      "diverged": bool(r.diverged.any()),
      "first_nonfinite_step": steps,
      "seconds": dict(r.seconds),
    }
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
    "surface_points": spec.surface_points,
    "analysis_dtype": spec.analysis_dtype,
    "norms": norms,
    "matched": [
      {
        "level": level,
        "norms": {
          norm: {
            "step": [int(x) if x >= 0 else None for x in r.matched[i].step],
            **stats(r.matched[i]),
          }
          for norm, r in result.norms.items()
        },
      }
      for i, level in enumerate(spec.matched_losses)
    ],
    "seconds": {"total": result.seconds},
    "environment": result.environment,
  }
