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

import concurrent.futures
import dataclasses
import functools
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxnorm import analysis, keys, landscape, runtime, seeds, train
from jaxnorm import model as model_lib
from jaxnorm.config import (
  MAX_SEED,
  Config,
  FieldTypeError,
  as_float,
  as_int,
  as_str,
  as_tuple,
  check_learning_rates,
)
from jaxnorm.measures import MeasureConfig
from jaxnorm.report import Prediction
from jaxnorm.runfolder import fault_point

PyTree = Any

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
  return as_tuple(where, value, _instance_of(Prediction, "a report.Prediction"), "Predictions")


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
  "measures": _optional(_instance_of(MeasureConfig, "a measures.MeasureConfig or None")),
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
    measures: how hard the measures' estimators work; None skips them.
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

  @property
  def diverged(self) -> np.ndarray:
    """(S,) bool: the training loss became NaN or infinite."""
    return self.first_nonfinite_step >= 0


class ExperimentResult(NamedTuple):
  spec: ExperimentSpec
  norms: dict[str, NormResult]
  seconds: float  # wall time of the whole run
  environment: dict[str, Any]  # versions and devices (`runtime.environment`)


# Told where a run is: (normalization, "train" or "analyze", training steps done).
OnProgress = Callable[[str, str, int], None]


def _ignore_progress(norm: str, phase: str, step: int) -> None:
  del norm, phase, step


class Programs(NamedTuple):
  """The compiled programs of one normalization for groups of S seeds (`compile_programs`):
  called with their array arguments only (the static ones are compiled in)."""

  init: Callable  # (train_keys_S, learning_rates_S) -> states_S
  # chunk length n -> (states_S, curvature keys_S) -> (states_S, losses_SxN, curvature_Sx2
  # or None); donates the states
  train: dict[int, Callable]
  analyze: Callable | None  # (params_S, batch_stats_S, keys_S, offsets, alphas, grid) -> Analysis


class _Group(NamedTuple):
  """The inputs of one group of seeds, padded to a multiple of the device count."""

  mesh: Mesh  # the devices the seed axis is split over
  size: int  # S, padded
  keys: keys.RunKeys  # leaves (S, ...), sharded over the seed axis
  learning_rates: jax.Array  # (S,) float32, sharded


@functools.lru_cache
def _derive_keys(mesh: Mesh) -> Callable:
  """seeds (S,) -> `keys.RunKeys` (S, ...), each device deriving its own seeds' keys: over
  several processes no process can place keys on another's devices. One program per mesh."""
  return jax.jit(jax.vmap(keys.run_keys), out_shardings=seeds.seed_sharding(mesh))


def _group(
  spec: ExperimentSpec,
  norm: str,
  group_seeds: np.ndarray,
  mesh: Mesh,
  group_rates: np.ndarray | None = None,
) -> _Group:
  """The inputs of the runs `group_seeds` (at `group_rates`, default the config's rate for
  `norm`), padded to a multiple of the device count."""
  padded = seeds.padded(group_seeds, mesh.size)
  keys_S = _derive_keys(mesh)(seeds.shard_seeds(padded.astype(np.int32), mesh))
  if group_rates is None:
    group_rates = np.full(len(group_seeds), spec.config.learning_rate_for(norm))
  rates = seeds.padded(np.asarray(group_rates, np.float32), mesh.size)
  lrs_S = seeds.shard_seeds(rates, mesh)
  return _Group(mesh, len(padded), keys_S, lrs_S)


def _states(group: _Group, init_program) -> Any:
  """The abstract training states of `group`, every leaf split over the seed axis (what
  `seeds.shard_seeds` makes of the init program's output)."""
  sharding = NamedSharding(group.mesh, PartitionSpec(seeds.SEED_AXIS))
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), init_program.out_info
  )


class _Runs(NamedTuple):
  """Every run of one normalization: the seed of each, and its learning rate (None: the
  config's). `run` has one run per seed; `run_rates` one per (rate, seed), rate-major."""

  seeds: np.ndarray  # (N,) int64
  rates: np.ndarray | None  # (N,) float64

  @staticmethod
  def of(spec: ExperimentSpec, rates: Sequence[float] | None = None) -> _Runs:
    all_seeds = np.asarray(spec.seeds, dtype=np.int64)
    if rates is None:
      return _Runs(all_seeds, None)
    return _Runs(np.tile(all_seeds, len(rates)), np.repeat(np.asarray(rates), len(all_seeds)))


def _groups(spec: ExperimentSpec, mesh: Mesh, runs: _Runs) -> list[tuple[np.ndarray, Any]]:
  """(seeds, rates or None) of each compiled call: `seeds_per_call` runs (rounded up to a
  multiple of the device count) at a time."""
  count = len(runs.seeds)
  per_call = spec.seeds_per_call or count
  per_call = mesh.size * math.ceil(per_call / mesh.size)
  return [
    (runs.seeds[i : i + per_call], None if runs.rates is None else runs.rates[i : i + per_call])
    for i in range(0, count, per_call)
  ]


def _slice_axes(spec: ExperimentSpec) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """(offsets, alphas, surface grid or None) of the analysis."""
  cfg = spec.config
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  offsets = landscape.offsets(alphas, cfg.landscape_cumulative)
  grid = landscape.alphas(spec.surface_points, cfg.landscape_range) if spec.surface_points else None
  return offsets, alphas, grid


def _chunk_lengths(spec: ExperimentSpec) -> set[int]:
  steps, chunk = spec.config.steps, spec.chunk_size
  return {min(chunk, steps)} | ({steps % chunk} if steps > chunk and steps % chunk else set())


def compile_training(spec: ExperimentSpec, norm: str, group: _Group) -> Programs:
  """Compiles, ahead of time, the init program and a training program per chunk length
  for `group`'s shapes and shardings (`analyze` left None: see `compile_analysis`)."""
  cfg = spec.config
  model = model_lib.build(cfg, norm)
  with jax.default_matmul_precision(cfg.matmul_precision):
    init = seeds.init_states.lower(model, cfg.task, group.keys.train, group.learning_rates)
    init = init.compile()
    states = _states(group, init)
    train_programs = {
      n: _train_program(spec, model, states, group, n) for n in _chunk_lengths(spec)
    }
  return Programs(init, train_programs, None)


def _train_program(spec: ExperimentSpec, model, states, group: _Group, n: int) -> Callable:
  """The compiled chunk of n steps, as (states, curvature keys) -> (states, losses,
  curvature or None)."""
  task = spec.config.task
  if not spec.curvature_iterations:
    chunk = seeds.train_chunk.lower(model, task, states, n).compile()
    return lambda states_S, keys_S: (*chunk(states_S), None)
  iters = spec.curvature_iterations
  return seeds.train_chunk_tracked.lower(
    model, task, states, n, True, iters, group.keys.curvature
  ).compile()


def compile_analysis(spec: ExperimentSpec, norm: str, group: _Group, trained: Programs):
  """Compiles, ahead of time, the analysis of `group`'s trained states: a function
  (params_S, batch_stats_S, keys_S, offsets, alphas, grid) -> `analysis.Analysis`.

  With `spec.analysis_dtype` "float64" the program is traced and run with x64 enabled
  (a context local to the calling thread) on the float32 states cast to float64; the
  slice axes stay float32 numbers, so both precisions evaluate the same points.
  """
  cfg = spec.config
  model = model_lib.build(cfg, norm)
  states = _states(group, trained.init)
  dtype = jnp.dtype(spec.analysis_dtype)
  with jax.enable_x64(dtype == jnp.float64), jax.default_matmul_precision(cfg.matmul_precision):
    program = analysis.analyze_seeds.lower(
      model,
      cfg.task,
      spec.measures,
      _cast(states.params, dtype),
      _cast(states.batch_stats, dtype),
      group.keys,
      *_slice_axes(spec),
    ).compile()
  if dtype == jnp.float32:
    return program

  def analyze(params_S, batch_stats_S, *rest) -> analysis.Analysis:
    with jax.enable_x64(True):
      return program(_cast(params_S, dtype), _cast(batch_stats_S, dtype), *rest)

  return analyze


def _cast(tree: PyTree, dtype) -> PyTree:
  """Every floating leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s) as `dtype`."""

  def cast(x):
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
    return x.astype(dtype)

  return jax.tree.map(cast, tree)


def run(
  spec: ExperimentSpec,
  *,
  progress: bool = True,
  mesh: Mesh | None = None,
  compile_workers: int | None = None,
  on_progress: OnProgress = _ignore_progress,
) -> ExperimentResult:
  """Trains and analyzes every normalization of `spec` over its seeds.

  Every program of the run (init, training chunks, analysis, per normalization and group
  size) is compiled ahead of time by `compile_workers` threads (default: one per CPU core,
  at most one per program), in the order they are needed, while the device trains: XLA
  compiles on the host's cores, one core per program, so on an accelerator the compile
  time of the later programs hides behind the training of the first. `compile_workers=0`
  compiles each program in this thread when it is first needed (`run_norm`), nothing
  overlapping. `on_progress(norm, phase, steps_done)` is called when a training chunk has
  finished on the device ("train"; the next one is already queued, so the device never
  waits for the host) and before each analysis ("analyze").

  Interrupted (KeyboardInterrupt or any other exception), it cancels the compilations that
  have not started and returns at once; one already running in a worker thread finishes
  in the background.
  """
  start = time.perf_counter()
  runs = _Runs.of(spec)
  norms = _run(spec, runs, progress, mesh, compile_workers, on_progress)
  return ExperimentResult(spec, norms, time.perf_counter() - start, runtime.environment())


def run_rates(
  spec: ExperimentSpec,
  rates: Sequence[float],
  *,
  progress: bool = True,
  mesh: Mesh | None = None,
  compile_workers: int | None = None,
  on_progress: OnProgress = _ignore_progress,
) -> tuple[ExperimentResult, ...]:
  """`run` of every normalization at each of `rates` (no per-normalization rates), one
  `ExperimentResult` per rate, computed as one grid: the (rate, seed) runs of a
  normalization share its compiled programs and calls, `seeds_per_call` runs at a time
  (default: `num_seeds`, one rate's worth, the memory of one experiment; R x num_seeds puts
  the whole grid in one call), split over every device (and process) like seeds. The
  learning rate is optimizer state, so run k of the grid is the run of its seed at its
  rate alone.

  Each result's `seconds` (and each normalization's) is its share of the grid's: the
  grid's time divided by the number of rates. Raises ValueError, before any work, for a
  rate a model cannot train at (`config.check_learning_rates`).
  """
  rates = check_learning_rates(rates)
  start = time.perf_counter()
  runs = _Runs.of(spec, rates)
  per_call = spec.seeds_per_call or spec.num_seeds
  grid = dataclasses.replace(spec, seeds_per_call=per_call)
  norms = _run(grid, runs, progress, mesh, compile_workers, on_progress)
  share = (time.perf_counter() - start) / len(rates)
  environment = runtime.environment()
  out = []
  for i, rate in enumerate(rates):
    cfg = spec.config.replace(learning_rate=rate, learning_rate_overrides=())
    at = slice(i * spec.num_seeds, (i + 1) * spec.num_seeds)
    at_rate = {norm: _take(r, at, rate, len(rates)) for norm, r in norms.items()}
    out.append(ExperimentResult(dataclasses.replace(spec, config=cfg), at_rate, share, environment))
  return tuple(out)


def _take(r: NormResult, runs: slice, rate: float, num_rates: int) -> NormResult:
  """The runs `runs` of a grid's `NormResult`, as the result at learning rate `rate`."""

  def take(x):
    return None if x is None else x[runs]

  return r._replace(
    learning_rate=rate,
    seeds=r.seeds[runs],
    losses=r.losses[runs],
    landscape=r.landscape[runs],
    base_loss=r.base_loss[runs],
    spectrum=r.spectrum[runs],
    measures={name: v[runs] for name, v in r.measures.items()},
    surface=take(r.surface),
    variables=None if r.variables is None else jax.tree.map(take, r.variables),
    first_nonfinite_step=r.first_nonfinite_step[runs],
    seconds={k: v / num_rates for k, v in r.seconds.items()},
    matched=tuple(
      m._replace(
        step=m.step[runs],
        landscape=m.landscape[runs],
        base_loss=m.base_loss[runs],
        spectrum=m.spectrum[runs],
        measures={name: v[runs] for name, v in m.measures.items()},
      )
      for m in r.matched
    ),
    hessian_density=None if r.hessian_density is None else tuple(map(take, r.hessian_density)),
    trajectory=take(r.trajectory),
  )


def _run(
  spec: ExperimentSpec,
  runs: _Runs,
  progress: bool,
  mesh: Mesh | None,
  compile_workers: int | None,
  on_progress: OnProgress,
) -> dict[str, NormResult]:
  """Every normalization of `spec` over `runs` (see `run`)."""
  mesh = mesh or seeds.seed_mesh()
  if compile_workers == 0:
    return {
      n: run_norm(spec, n, progress=progress, mesh=mesh, on_progress=on_progress, runs=runs)
      for n in spec.config.norms
    }
  groups = {
    (norm, i): _group(spec, norm, g_seeds, mesh, g_rates)
    for norm in spec.config.norms
    for i, (g_seeds, g_rates) in enumerate(_groups(spec, mesh, runs))
  }
  sizes = {}  # one set of programs per (norm, group size)
  for (norm, _), group in groups.items():
    sizes.setdefault((norm, group.size), group)
  workers = compile_workers or max(1, min(2 * len(sizes), os.cpu_count() or 1))
  pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="compile")
  try:
    # All training programs first, then the analyses, each waiting for its training
    # programs' output shapes: FIFO order means a waiting analysis never blocks a training
    # compile that has not started.
    trained = {k: pool.submit(compile_training, spec, k[0], g) for k, g in sizes.items()}
    analyzed = {
      k: pool.submit(lambda k=k, g=g: compile_analysis(spec, k[0], g, trained[k].result()))
      for k, g in sizes.items()
    }

    def programs(norm: str, size: int) -> Programs:
      return trained[norm, size].result()._replace(analyze=analyzed[norm, size].result)

    return {
      norm: _run_norm(
        spec,
        norm,
        [g for (n, _), g in groups.items() if n == norm],
        programs,
        progress,
        on_progress,
        runs.seeds,
      )
      for norm in spec.config.norms
    }
  finally:  # on an interruption, do not wait for the compilations still queued
    pool.shutdown(wait=False, cancel_futures=True)


def run_norm(
  spec: ExperimentSpec,
  norm: str,
  *,
  progress: bool = True,
  mesh: Mesh | None = None,
  on_progress: OnProgress = _ignore_progress,
  runs: _Runs | None = None,
) -> NormResult:
  """Trains the `norm` model for every seed of `spec` (or every run of `runs`),
  `seeds_per_call` at a time, and analyzes each group as soon as it is trained; compiles
  as it goes, in this thread.

  Every program is traced under `jax.default_matmul_precision(config.matmul_precision)`, so
  the analysis (Lanczos' orthogonalization, the SVD) computes at the model's precision.
  """
  mesh = mesh or seeds.seed_mesh()
  runs = runs or _Runs.of(spec)
  groups = [_group(spec, norm, s, mesh, r) for s, r in _groups(spec, mesh, runs)]
  compiled: dict[int, Programs] = {}

  def programs(_: str, size: int) -> Programs:
    if size not in compiled:
      group = next(g for g in groups if g.size == size)
      trained = compile_training(spec, norm, group)
      analyze = compile_analysis(spec, norm, group, trained)
      compiled[size] = trained._replace(analyze=lambda: analyze)
    return compiled[size]

  return _run_norm(spec, norm, groups, programs, progress, on_progress, runs.seeds)


def _run_norm(
  spec: ExperimentSpec,
  norm: str,
  groups: list[_Group],
  programs: Callable[[str, int], Programs],
  progress: bool,
  on_progress: OnProgress,
  all_seeds: np.ndarray,
) -> NormResult:
  """Trains and analyzes the runs of `groups` (whose seeds, in order, are `all_seeds`)."""
  cfg = spec.config
  offsets, alphas, grid = _slice_axes(spec)
  outputs, seconds = [], {"compile_wait": 0.0, "train": 0.0, "analysis": 0.0}
  what = "seeds" if len(all_seeds) == spec.num_seeds else "runs"
  desc = f"train {norm}" + (f" x{len(all_seeds)} {what}" if len(all_seeds) > 1 else "")
  done_seeds = 0
  with tqdm(total=cfg.steps * len(groups), desc=desc, disable=not progress, unit="step") as bar:
    for group in groups:
      start = time.perf_counter()
      program = programs(norm, group.size)
      seconds["compile_wait"] += time.perf_counter() - start
      start = time.perf_counter()
      # Every leaf split over the seed axis, as the programs were compiled for (XLA may
      # return constant leaves replicated); a no-op for leaves already split.
      state = seeds.shard_seeds(program.init(group.keys.train, group.learning_rates), group.mesh)
      chunks, tracked, done, finished = [], [], 0, 0
      checkpoints = _Checkpoints(spec.matched_losses, group.size)

      def chunk_finished(losses_SxN: jax.Array, snapshot, checkpoints=checkpoints) -> None:
        nonlocal finished
        losses_SxN.block_until_ready()
        finished += losses_SxN.shape[1]
        bar.update(losses_SxN.shape[1])
        # Read on the host only when needed (a device wait); over several processes
        # always, as the gather is a collective every process must join.
        if progress or checkpoints.levels or jax.process_count() > 1:
          host_SxN = seeds.to_host(losses_SxN)
          if progress:
            bar.set_postfix(loss=f"{np.nanmean(host_SxN[:, -1]):.4f}")
          checkpoints.update(host_SxN, finished, snapshot)
        on_progress(norm, "train", finished)
        fault_point(f"train:{norm}")

      previous = None
      while done < cfg.steps:
        n = min(spec.chunk_size, cfg.steps - done)
        state, losses_SxN, curvature_Sx2 = program.train[n](state, group.keys.curvature)
        state = seeds.shard_seeds(state, group.mesh)
        chunks.append(losses_SxN)
        tracked.append(curvature_Sx2)
        done += n
        if previous is not None:  # the device holds the chunk just queued: wait for the one before
          chunk_finished(*previous)
        # The next chunk donates `state`: a matched-loss checkpoint needs its own copy.
        previous = (losses_SxN, checkpoints.snapshot(state))
      chunk_finished(*previous)
      losses = seeds.to_host(jnp.concatenate(chunks, axis=1))
      trajectory = None if tracked[0] is None else seeds.to_host(jnp.stack(tracked, axis=1))
      seconds["train"] += time.perf_counter() - start
      on_progress(norm, "analyze", done)
      fault_point(f"analyze:{norm}")
      start = time.perf_counter()
      analyze = program.analyze()
      seconds["compile_wait"] += time.perf_counter() - start
      start = time.perf_counter()
      result = analyze(state.params, state.batch_stats, group.keys, offsets, alphas, grid)
      result = seeds.to_host(result)
      matched = checkpoints.analyze(
        lambda p, b, run=analyze, k=group.keys: seeds.to_host(run(p, b, k, offsets, alphas, grid)),
        result,
      )
      seconds["analysis"] += time.perf_counter() - start
      variables = seeds.to_host({"params": state.params, "batch_stats": state.batch_stats})
      keep = slice(0, min(group.size, len(all_seeds) - done_seeds))
      done_seeds += keep.stop
      outputs.append(
        jax.tree.map(
          lambda x, keep=keep: np.asarray(x)[keep],
          (losses, result, variables, matched, trajectory),
        )
      )
  losses, result, variables, matched, trajectory = jax.tree.map(
    lambda *xs: np.concatenate(xs), *outputs
  )
  ends = np.minimum(
    np.arange(1, math.ceil(cfg.steps / spec.chunk_size) + 1) * spec.chunk_size, cfg.steps
  )
  first_bad = np.array([_first_or_minus_one(train.first_nonfinite(row)) for row in losses])
  return NormResult(
    norm=norm,
    learning_rate=cfg.learning_rate_for(norm),
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
    matched=tuple(
      Matched(level, step, a.landscape, a.base_loss, a.spectrum, a.measures)
      for level, (step, a) in zip(spec.matched_losses, matched, strict=True)
    ),
    hessian_density=result.hessian_density,
    trajectory_steps=None if trajectory is None else ends,
    trajectory=trajectory,
  )


class _Checkpoints:
  """The training states where each seed's chunk-mean training loss first fell to each
  level of `ExperimentSpec.matched_losses` (kept on the device, one per level)."""

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
    final analysis gives the shapes where no seed got there."""
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
