"""Experiment 2 end to end: train each normalization over one or more seeds, then slice
its landscape and take its activation spectrum; summarize across seeds.

Every normalization gets the same keys for a given seed (common random numbers): the same
initialization key, training batches, landscape direction key, landscape batch and spectrum
batch, so the models differ only in their normalization (and, as in the reference, the
un-normalized model's learning rate).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
import scipy.stats

from jaxnorm import data, directions, landscape
from jaxnorm import model as model_lib
from jaxnorm import seeds as seeds_lib
from jaxnorm.config import Config

FINAL_LOSS_WINDOW = 100  # final_loss is the mean training loss over the last 100 steps.
SCALARS = ("final_loss", "loss_at_alpha0", "landscape_max_rise", "spectrum_top_bottom_ratio")


def run(
  cfg: Config, num_seeds: int = 1, *, seeds_per_call: int | None = None, progress: bool = True
) -> dict[str, seeds_lib.SeedRun]:
  """Seeds cfg.seed .. cfg.seed + num_seeds - 1 for every normalization in `cfg.norms`."""
  if num_seeds < 1:
    raise ValueError(f"num_seeds={num_seeds} must be >= 1")
  seeds = list(range(cfg.seed, cfg.seed + num_seeds))
  return {
    norm: seeds_lib.run(cfg, norm, seeds, seeds_per_call=seeds_per_call, progress=progress)
    for norm in cfg.norms
  }


def _finite_or_none(x) -> float | None:
  return float(x) if np.isfinite(x) else None


def scalars(
  losses: np.ndarray, base_loss: float, landscape_P: np.ndarray, spectrum_D: np.ndarray
) -> dict[str, float | None]:
  """One seed's headline numbers: final loss (mean of the last 100 steps), the eval loss at
  alpha = 0, the largest rise over the slice, the top/bottom singular value ratio.
  Non-finite values become None (JSON null)."""
  return {
    "final_loss": _finite_or_none(np.mean(losses[-FINAL_LOSS_WINDOW:])),
    "loss_at_alpha0": _finite_or_none(base_loss),
    "landscape_max_rise": _finite_or_none(np.max(landscape_P) - base_loss),
    "spectrum_top_bottom_ratio": _finite_or_none(spectrum_D[0] / spectrum_D[-1]),
  }


def across_seeds(values: list[float | None]) -> dict[str, Any]:
  """Mean, sample standard deviation and 95% Student-t confidence interval of the mean,
  over the seeds whose value is finite (n says how many)."""
  finite = np.array([v for v in values if v is not None], dtype=np.float64)
  n = len(finite)
  out: dict[str, Any] = {"mean": None, "std": None, "ci95": [None, None], "n": n, "values": values}
  if n:
    out["mean"] = float(finite.mean())
  if n > 1:
    std = float(finite.std(ddof=1))
    half = float(scipy.stats.t.ppf(0.975, n - 1)) * std / np.sqrt(n)
    out.update(std=std, ci95=[out["mean"] - half, out["mean"] + half])
  return out


def across_seeds_all(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
  """Per-seed measure dicts -> the values themselves for one seed; for several, each
  numeric measure's `across_seeds` statistics and each boolean's per-seed list."""
  if len(per_seed) == 1:
    return per_seed[0]
  out = {}
  for name in per_seed[0]:
    values = [s[name] for s in per_seed]
    out[name] = values if isinstance(values[0], bool) else across_seeds(values)
  return out


def summarize(cfg: Config, norm: str, run: seeds_lib.SeedRun) -> dict[str, Any]:
  """summary.json's entry for one normalization: plain scalars for one seed; mean, std and
  95% CI for several."""
  per_seed = [
    scalars(run.losses[i], run.base_loss[i], run.landscape[i], run.spectrum[i])
    for i in range(len(run.seeds))
  ]
  steps = run.first_nonfinite_step
  if len(per_seed) == 1:
    out: dict[str, Any] = {
      **per_seed[0],
      "diverged": steps[0] is not None,
      "first_nonfinite_step": steps[0],
    }
  else:
    out = {name: across_seeds([s[name] for s in per_seed]) for name in SCALARS}
    out.update(
      seeds=run.seeds.tolist(),
      diverged=any(s is not None for s in steps),
      first_nonfinite_step=steps,
    )
  out.update(learning_rate=cfg.learning_rate_for(norm), seconds=run.seconds)
  return out


def variables(run: seeds_lib.SeedRun) -> dict:
  """Trained variables; the seed axis is dropped for one seed."""
  return jax.tree.map(lambda x: x[0], run.variables) if len(run.seeds) == 1 else run.variables


def arrays(cfg: Config, run: seeds_lib.SeedRun) -> dict[str, np.ndarray]:
  """results.npz's arrays for one normalization; the seed axis is dropped for one seed."""
  alphas = np.asarray(landscape.alphas(cfg.landscape_points, cfg.landscape_range))
  offsets = np.asarray(landscape.offsets(alphas, cfg.landscape_cumulative))
  one = len(run.seeds) == 1
  squeeze = (lambda x: x[0]) if one else (lambda x: x)
  return {
    "loss": squeeze(run.losses),
    "alphas": alphas,
    "offsets": offsets,
    "landscape": squeeze(run.landscape),
    "spectrum": squeeze(run.spectrum),
  }


def surface(cfg: Config, norm: str, run: seeds_lib.SeedRun, points: int):
  """(alphas, betas, losses (points, points)) of the first seed's trained model on its
  landscape batch, along two filter-normalized directions (Li et al. 2018), over
  [-landscape_range, landscape_range] on both axes."""
  keys = seeds_lib.experiment_keys(int(run.seeds[0]))
  variables = jax.tree.map(lambda x: jax.numpy.asarray(x[0]), run.variables)
  params = variables["params"]
  k1, k2 = jax.random.split(jax.random.fold_in(keys.direction, 2))
  d1 = directions.filter_normalized_direction(k1, params)
  d2 = directions.filter_normalized_direction(k2, params)
  tokens, labels = data.batch(keys.landscape_batch, cfg)
  grid = landscape.alphas(points, cfg.landscape_range)
  losses = directions.model_surface(
    model_lib.build(cfg, norm), params, variables["batch_stats"], d1, d2, tokens, labels, grid, grid
  )
  return np.asarray(grid), np.asarray(grid), np.asarray(losses)
