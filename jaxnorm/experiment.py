"""Experiment 2 end to end: train each normalization, then slice its landscape and take
its activation spectrum, all from one seed.

Every normalization gets the same keys (common random numbers): the same training batches,
the same landscape batch and the same spectrum batch, so that the models differ only in
their normalization (and, as in the reference, the un-normalized model's learning rate).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxnorm import data, landscape, spectrum, train
from jaxnorm import model as model_lib
from jaxnorm.config import Config

PyTree = Any
FINAL_LOSS_WINDOW = 100  # final_loss is the mean training loss over the last 100 steps.


@dataclasses.dataclass
class NormResult:
  """What Experiment 2 measures for one normalization."""

  norm: str
  losses: np.ndarray  # (steps,) training loss per step.
  alphas: np.ndarray  # (N,) the slice's alphas, as plotted.
  offsets: np.ndarray  # (N,) where along the direction each point was evaluated.
  landscape: np.ndarray  # (N,) evaluation-mode loss at params + offsets[i] * direction.
  base_loss: float  # evaluation-mode loss at the trained params (alpha = 0), same batch.
  spectrum: np.ndarray  # (D,) singular values of the (B * L, D) block output, descending.
  variables: dict  # {'params': ..., 'batch_stats': ...} of the trained model.
  first_nonfinite_step: int | None
  seconds: dict[str, float]  # wall time per phase: train, landscape, spectrum.

  def scalars(self) -> dict[str, Any]:
    """The headline numbers of summary.json."""
    return summarize(
      self.losses, self.base_loss, self.landscape, self.spectrum, self.first_nonfinite_step
    )


def _finite_or_none(x: float) -> float | None:
  return float(x) if np.isfinite(x) else None


def summarize(
  losses: np.ndarray,
  base_loss: float,
  landscape_N: np.ndarray,
  spectrum_D: np.ndarray,
  first_nonfinite_step: int | None,
) -> dict[str, Any]:
  """final_loss, loss at alpha = 0, max rise over the slice, top/bottom singular value ratio.

  Non-finite values become None (JSON null).
  """
  return {
    "final_loss": _finite_or_none(np.mean(losses[-FINAL_LOSS_WINDOW:])),
    "loss_at_alpha0": _finite_or_none(base_loss),
    "landscape_max_rise": _finite_or_none(np.max(landscape_N) - base_loss),
    "spectrum_top_bottom_ratio": _finite_or_none(spectrum_D[0] / spectrum_D[-1]),
    "diverged": first_nonfinite_step is not None,
    "first_nonfinite_step": first_nonfinite_step,
  }


class ExperimentKeys(NamedTuple):
  """The keys an experiment derives from its seed, shared by every normalization."""

  train: jax.Array  # model init and training batches
  direction: jax.Array  # the landscape's random direction
  landscape_batch: jax.Array  # the batch the landscape is evaluated on
  spectrum_batch: jax.Array  # the batch whose block output gives the spectrum


def experiment_keys(seed_key: jax.Array) -> ExperimentKeys:
  return ExperimentKeys(*jax.random.split(seed_key, 4))


def analyze(cfg: Config, norm: str, variables: dict, keys: ExperimentKeys) -> dict[str, Any]:
  """Landscape slice and spectrum of a trained model, with wall times."""
  model = model_lib.build(cfg, norm)
  params, batch_stats = variables["params"], variables["batch_stats"]
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  offsets = landscape.offsets(alphas, cfg.landscape_cumulative)
  start = time.perf_counter()
  direction = landscape.random_direction(keys.direction, params)
  tokens, labels = data.batch(keys.landscape_batch, cfg)
  values = landscape.model_slice(model, params, batch_stats, direction, tokens, labels, offsets)
  base = train.eval_loss(model, params, batch_stats, tokens, labels)
  values, base = np.asarray(values), float(base)
  landscape_s = time.perf_counter() - start
  start = time.perf_counter()
  tokens, _ = data.batch(keys.spectrum_batch, cfg)
  spec = np.asarray(spectrum.activation_spectrum(model, params, batch_stats, tokens))
  spectrum_s = time.perf_counter() - start
  return dict(
    alphas=np.asarray(alphas),
    offsets=np.asarray(offsets),
    landscape=values,
    base_loss=base,
    spectrum=spec,
    seconds=dict(landscape=landscape_s, spectrum=spectrum_s),
  )


def run_norm(cfg: Config, norm: str, seed_key: jax.Array, progress: bool = True) -> NormResult:
  """Train the `norm` model, then analyze it."""
  keys = experiment_keys(seed_key)
  start = time.perf_counter()
  result = train.train(cfg, norm, keys.train, progress=progress)
  train_s = time.perf_counter() - start
  variables = {"params": result.state.params, "batch_stats": result.state.batch_stats}
  analysis = analyze(cfg, norm, variables, keys)
  seconds = {"train": train_s, **analysis.pop("seconds")}
  return NormResult(
    norm=norm,
    losses=result.losses,
    variables=jax.device_get(variables),
    first_nonfinite_step=result.first_nonfinite_step,
    seconds=seconds,
    **analysis,
  )


def run(cfg: Config, progress: bool = True) -> dict[str, NormResult]:
  """Experiment 2 for every normalization in `cfg.norms`, from `cfg.seed`."""
  seed_key = jax.random.key(cfg.seed)
  return {norm: run_norm(cfg, norm, seed_key, progress) for norm in cfg.norms}
