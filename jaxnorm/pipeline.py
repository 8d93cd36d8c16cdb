"""Running an experiment: `run(spec) -> ExperimentResult`.

    spec = pipeline.ExperimentSpec(config.QUICK, num_seeds=4)
    result = pipeline.run(spec)
    result.norms["layernorm"].measures["effective_rank"]     # (4,): one value per seed

For every normalization of `spec.config.norms`, groups of seeds are initialized and
trained together (`seeds.init_states`, `seeds.train_chunk`), then analyzed by one compiled
program (`analysis.analyze_seeds`): slice, spectrum, every measure and the 2D surface, all
from the keys of `keys.run_keys(seed)`, so nothing is computed twice. Every array of a
`NormResult` keeps its leading seed axis, also for one seed.

Saving (`results`), the figure (`plotting`), `measures.md` and the terminal table
(`report`) and summary.json (`summary`) are functions of the `ExperimentResult`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxnorm import analysis, keys, landscape, runtime, seeds, train
from jaxnorm import model as model_lib
from jaxnorm.config import Config
from jaxnorm.measures import MeasureConfig
from jaxnorm.report import Prediction

DEFAULT_TITLE = "Comparative Analysis of Normalization Techniques"


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """What to run and what to report: the config, how many seeds, what to measure.

  Attributes:
    config: task, model, training and landscape settings, normalizations, first seed.
    num_seeds: seeds config.seed .. config.seed + num_seeds - 1.
    name, title: the experiment's name (summary.json) and its figure's title.
    predictions: the paper's claims that `measures.md` judges.
    measures: how hard the measures' estimators work; None skips them.
    surface_points: also a 2D slice on this many points per axis (None: no surface).
    seeds_per_call: at most this many seeds per compiled call (bounds memory; None: all).
    chunk_size: training steps per compiled call (one host round-trip per chunk).
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

  def __post_init__(self):
    for field in ("num_seeds", "chunk_size"):
      value = getattr(self, field)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f"ExperimentSpec.{field}={value!r} is invalid: must be an integer >= 1.")
    for field in ("surface_points", "seeds_per_call"):
      value = getattr(self, field)
      if value is not None and (not isinstance(value, int) or value < 1):
        raise ValueError(f"ExperimentSpec.{field}={value!r} is invalid: must be None or >= 1.")

  @property
  def seeds(self) -> tuple[int, ...]:
    return tuple(range(self.config.seed, self.config.seed + self.num_seeds))


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

  @property
  def diverged(self) -> np.ndarray:
    """(S,) bool: the training loss became NaN or infinite."""
    return self.first_nonfinite_step >= 0


class ExperimentResult(NamedTuple):
  spec: ExperimentSpec
  norms: dict[str, NormResult]
  seconds: float  # wall time of the whole run
  environment: dict[str, Any]  # versions and devices (`runtime.environment`)


def run(
  spec: ExperimentSpec, *, progress: bool = True, mesh: Mesh | None = None
) -> ExperimentResult:
  """Trains and analyzes every normalization of `spec` over its seeds."""
  start = time.perf_counter()
  mesh = mesh or seeds.seed_mesh()
  norms = {n: run_norm(spec, n, progress=progress, mesh=mesh) for n in spec.config.norms}
  return ExperimentResult(spec, norms, time.perf_counter() - start, runtime.environment())


def run_norm(
  spec: ExperimentSpec, norm: str, *, progress: bool = True, mesh: Mesh | None = None
) -> NormResult:
  """Trains the `norm` model for every seed of `spec`, `seeds_per_call` at a time, and
  analyzes each group as soon as it is trained.

  Every program is traced under `jax.default_matmul_precision(config.matmul_precision)`, so
  the analysis (Lanczos' orthogonalization, the SVD) computes at the model's precision.
  """
  with jax.default_matmul_precision(spec.config.matmul_precision):
    return _run_norm(spec, norm, progress, mesh or seeds.seed_mesh())


def _run_norm(spec: ExperimentSpec, norm: str, progress: bool, mesh: Mesh) -> NormResult:
  cfg = spec.config
  model = model_lib.build(cfg, norm)
  lr = cfg.learning_rate_for(norm)
  all_seeds = np.asarray(spec.seeds, dtype=np.int64)
  per_call = spec.seeds_per_call or len(all_seeds)
  per_call = mesh.size * math.ceil(per_call / mesh.size)
  groups = [all_seeds[i : i + per_call] for i in range(0, len(all_seeds), per_call)]
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  offsets = landscape.offsets(alphas, cfg.landscape_cumulative)
  grid = landscape.alphas(spec.surface_points, cfg.landscape_range) if spec.surface_points else None
  outputs, seconds = [], {"train": 0.0, "analysis": 0.0}
  desc = f"train {norm}" + (f" x{len(all_seeds)} seeds" if len(all_seeds) > 1 else "")
  with tqdm(total=cfg.steps * len(groups), desc=desc, disable=not progress, unit="step") as bar:
    for group in groups:
      group_seeds = seeds.padded(group, mesh.size)
      keys_S = seeds.shard_seeds(jax.vmap(keys.run_keys)(jnp.asarray(group_seeds)), mesh)
      lrs_S = seeds.shard_seeds(jnp.full(len(group_seeds), lr, jnp.float32), mesh)
      start = time.perf_counter()
      state = seeds.init_states(model, cfg.task, keys_S.train, lrs_S)
      chunks, done = [], 0
      while done < cfg.steps:
        n = min(spec.chunk_size, cfg.steps - done)
        state, losses_SxN = seeds.train_chunk(model, cfg.task, state, n)
        chunks.append(losses_SxN)
        done += n
        bar.update(n)
        bar.set_postfix(loss=f"{float(jnp.nanmean(losses_SxN[:, -1])):.4f}")
      losses = np.asarray(jnp.concatenate(chunks, axis=1))
      seconds["train"] += time.perf_counter() - start
      start = time.perf_counter()
      result = analysis.analyze_seeds(
        model,
        cfg.task,
        spec.measures,
        state.params,
        state.batch_stats,
        keys_S,
        offsets,
        alphas,
        grid,
      )
      result = jax.device_get(result)
      seconds["analysis"] += time.perf_counter() - start
      variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
      keep = slice(0, len(group))
      outputs.append(
        jax.tree.map(lambda x, keep=keep: np.asarray(x)[keep], (losses, result, variables))
      )
  losses, result, variables = jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
  first_bad = np.array([_first_or_minus_one(train.first_nonfinite(row)) for row in losses])
  return NormResult(
    norm=norm,
    learning_rate=lr,
    seeds=all_seeds,
    losses=losses,
    alphas=np.asarray(alphas),
    offsets=np.asarray(offsets),
    landscape=result.landscape,
    base_loss=result.base_loss,
    spectrum=result.spectrum,
    measures=_without_diverged(result.measures, first_bad >= 0),
    surface_grid=None if grid is None else np.asarray(grid),
    surface=result.surface,
    variables=variables,
    first_nonfinite_step=first_bad,
    seconds=seconds,
  )


def _first_or_minus_one(step: int | None) -> int:
  return -1 if step is None else step


def _without_diverged(measured: dict[str, np.ndarray], diverged_S: np.ndarray) -> dict:
  """A diverged seed's measures are NaN (reported as null), never numbers computed from
  NaN weights (an effective rank of a NaN spectrum is not a finding)."""
  if not diverged_S.any():
    return measured
  return {
    name: np.where(diverged_S, np.nan, values.astype(np.float64))
    for name, values in measured.items()
  }
