"""Running an experiment: `run(spec) -> ExperimentResult`.

    spec = jaxnorm.spec.ExperimentSpec(config.QUICK, num_seeds=4)
    result = pipeline.run(spec)
    result.norms["layernorm"].measures["effective_rank"]     # (4,): one value per seed

For every normalization of `spec.config.norms`, groups of seeds are initialized and
trained together (`programs.init_states`, `programs.train_chunk`), then analyzed by one compiled
program (`analysis.analyze_seeds`): slice, spectrum, every measure and the 2D surface, all
from the keys of `keys.run_keys(seed)`, so nothing is computed twice. Every array of a
`NormResult` keeps its leading seed axis, also for one seed.

The programs are compiled ahead of time (`programs`) by a pool of threads while the device
trains; this module only schedules them and assembles their outputs into `result` types.
Saving (`results`), the figures (`plotting`), the text (`report`) and summary.json
(`summary`) are functions of the `ExperimentResult`.
"""

from __future__ import annotations

import concurrent.futures
import functools
import math
import os
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh
from tqdm.auto import tqdm

from jaxnorm import analysis, data, epochs, group_train, programs, resume, runtime, train
from jaxnorm.programs import Group, Programs
from jaxnorm.result import ExperimentResult, Matched, NormResult
from jaxnorm.spec import ExperimentSpec

# Told where a run is: (normalization, "train" or "analyze", training steps done).
OnProgress = Callable[[str, str, int], None]
# Told each training chunk's host values as it finishes: (normalization, the runs' indices
# (R,) into the run's seeds, steps done, losses (R, N), curvature (R, 2) or None).
OnChunk = Callable[[str, np.ndarray, int, np.ndarray, np.ndarray | None], None]


def ignore_progress(norm: str, phase: str, step: int) -> None:
  del norm, phase, step


def run(
  spec: ExperimentSpec,
  *,
  arrays: data.TextArrays | None = None,
  progress: bool = True,
  mesh: Mesh | None = None,
  compile_workers: int | None = None,
  on_progress: OnProgress = ignore_progress,
  checkpointer: resume.Checkpointer | None = None,
  on_chunk: OnChunk | None = None,
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

  `arrays`: the token arrays of the text data set `spec.config.text` names (ValueError if
  they are missing or of other shapes); None for the synthetic task.
  """
  start = time.perf_counter()
  norms = run_runs(
    spec,
    programs.Runs.of(spec),
    arrays=arrays,
    progress=progress,
    mesh=mesh,
    compile_workers=compile_workers,
    on_progress=on_progress,
    checkpointer=checkpointer,
    on_chunk=on_chunk,
  )
  return ExperimentResult(spec, norms, time.perf_counter() - start, runtime.environment())


def run_runs(
  spec: ExperimentSpec,
  runs: programs.Runs,
  *,
  arrays: data.TextArrays | None = None,
  progress: bool,
  mesh: Mesh | None,
  compile_workers: int | None,
  on_progress: OnProgress,
  checkpointer: resume.Checkpointer | None = None,
  on_chunk: OnChunk | None = None,
) -> dict[str, NormResult]:
  """Every normalization of `spec` over `runs` (see `run`; `sweep.run` gives one run per
  (rate, seed))."""
  mesh = mesh or programs.seed_mesh()
  arrays = programs.placed_arrays(spec, arrays, mesh)
  hooks = dict(on_progress=on_progress, checkpointer=checkpointer, on_chunk=on_chunk)
  if compile_workers == 0:
    one = functools.partial(run_norm, spec, arrays=arrays, progress=progress, mesh=mesh, runs=runs)
    return {n: one(n, **hooks) for n in spec.config.norms}
  groups = {
    (norm, i): programs.group_inputs(spec, norm, g_seeds, mesh, g_rates)
    for norm in spec.config.norms
    for i, (g_seeds, g_rates) in enumerate(programs.seed_groups(spec, mesh, runs))
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
    trained = {k: pool.submit(programs.compile_training, spec, k[0], g) for k, g in sizes.items()}
    analyzed = {
      k: pool.submit(lambda k=k, g=g: programs.compile_analysis(spec, k[0], g, trained[k].result()))
      for k, g in sizes.items()
    }

    def programs_of(norm: str, size: int) -> Programs:
      return trained[norm, size].result()._replace(analyze=analyzed[norm, size].result)

    mine = lambda norm: [g for (n, _), g in groups.items() if n == norm]
    rest = (programs_of, progress, on_progress, runs.seeds, arrays)
    return {
      n: _run_norm(spec, n, mine(n), *rest, checkpointer=checkpointer, on_chunk=on_chunk)
      for n in spec.config.norms
    }
  finally:  # on an interruption, do not wait for the compilations still queued
    pool.shutdown(wait=False, cancel_futures=True)


def run_norm(
  spec: ExperimentSpec,
  norm: str,
  *,
  arrays: data.TextArrays | None = None,
  progress: bool = True,
  mesh: Mesh | None = None,
  on_progress: OnProgress = ignore_progress,
  runs: programs.Runs | None = None,
  checkpointer: resume.Checkpointer | None = None,
  on_chunk: OnChunk | None = None,
) -> NormResult:
  """Trains the `norm` model for every seed of `spec` (or every run of `runs`),
  `seeds_per_call` at a time, and analyzes each group as soon as it is trained; compiles
  as it goes, in this thread.

  Every program is traced under `jax.default_matmul_precision(config.matmul_precision)`, so
  the analysis (Lanczos' orthogonalization, the SVD) computes at the model's precision.
  """
  mesh = mesh or programs.seed_mesh()
  runs = runs or programs.Runs.of(spec)
  arrays = programs.placed_arrays(spec, arrays, mesh)
  groups = [
    programs.group_inputs(spec, norm, s, mesh, r) for s, r in programs.seed_groups(spec, mesh, runs)
  ]
  compiled: dict[int, Programs] = {}

  def programs_of(_: str, size: int) -> Programs:
    if size not in compiled:
      group = next(g for g in groups if g.size == size)
      trained = programs.compile_training(spec, norm, group)
      analyze = programs.compile_analysis(spec, norm, group, trained)
      compiled[size] = trained._replace(analyze=lambda: analyze)
    return compiled[size]

  rest = (programs_of, progress, on_progress, runs.seeds, arrays)
  return _run_norm(spec, norm, groups, *rest, checkpointer=checkpointer, on_chunk=on_chunk)


def _run_norm(
  spec: ExperimentSpec,
  norm: str,
  groups: list[Group],
  programs_of: Callable[[str, int], Programs],
  progress: bool,
  on_progress: OnProgress,
  all_seeds: np.ndarray,
  arrays: data.TextArrays | None = None,
  *,
  checkpointer: resume.Checkpointer | None = None,
  on_chunk: OnChunk | None = None,
) -> NormResult:
  """Trains and analyzes the runs of `groups` (whose seeds, in order, are `all_seeds`), one
  group after the other, and assembles them into one result."""
  axes = programs.slice_axes(spec)
  outputs, seconds = [], {"compile_wait": 0.0, "train": 0.0, "analysis": 0.0}
  what = "seeds" if len(all_seeds) == spec.num_seeds else "runs"
  desc = f"train {norm}" + (f" x{len(all_seeds)} {what}" if len(all_seeds) > 1 else "")
  done_seeds = 0
  total = spec.config.steps * len(groups)
  with tqdm(total=total, desc=desc, disable=not progress, unit="step") as bar:
    for index, group in enumerate(groups):
      # The padding runs of the last group (programs.group_inputs) are dropped, as in on_chunk.
      keep = slice(0, min(group.size, len(all_seeds) - done_seeds))
      runs, done_seeds = np.arange(done_seeds, done_seeds + keep.stop), done_seeds + keep.stop
      cut = lambda a, k=keep: None if a is None else a[k]
      told = on_chunk and (lambda n, *a, r=runs, c=cut: on_chunk(norm, r, n, *map(c, a)))
      fit = functools.partial(group_train.train_group, checkpointer=checkpointer, on_chunk=told)
      program = _timed(seconds, "compile_wait", programs_of, norm, group.size)
      trained = _timed(
        seconds, "train", fit, spec, norm, index, group, program, bar, progress, on_progress, arrays
      )
      on_progress(norm, "analyze", spec.config.steps)
      analyze = _timed(seconds, "compile_wait", program.analyze)
      final, matched = _timed(seconds, "analysis", _analyze, analyze, group, trained, axes, arrays)
      variables = programs.to_host(
        {"params": trained.state.params, "batch_stats": trained.state.batch_stats}
      )
      outputs.append(
        jax.tree.map(
          lambda x, keep=keep: np.asarray(x)[keep],
          (trained.losses, final, variables, matched, trained.trajectory, trained.correct),
        )
      )
  return _assemble(spec, norm, all_seeds, outputs, seconds, axes)


def _timed(seconds: dict[str, float], phase: str, fn: Callable, *args) -> Any:
  """fn(*args), its wall time added to seconds[phase]."""
  start = time.perf_counter()
  try:
    return fn(*args)
  finally:
    seconds[phase] += time.perf_counter() - start


def _analyze(
  analyze: Callable, group: Group, trained: group_train.Trained, axes: tuple, arrays=None
) -> tuple[analysis.Analysis, list]:
  """The compiled analysis of one trained group, at its final state and at its matched-loss
  checkpoints, on the host."""
  offsets, alphas, grid = axes

  def on_host(params, batch_stats) -> analysis.Analysis:
    return programs.to_host(analyze(params, batch_stats, group.keys, offsets, alphas, grid, arrays))

  final = on_host(trained.state.params, trained.state.batch_stats)
  return final, trained.checkpoints.analyze(on_host, final)


def _assemble(
  spec: ExperimentSpec,
  norm: str,
  all_seeds: np.ndarray,
  outputs: list,
  seconds: dict[str, float],
  axes: tuple,
) -> NormResult:
  """One `NormResult` from the groups' (losses, analysis, variables, matched, trajectory),
  concatenated along the seed axis."""
  cfg = spec.config
  offsets, alphas, grid = axes
  losses, result, variables, matched, trajectory, correct = jax.tree.map(
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
      Matched(
        level,
        step,
        a.landscape,
        a.base_loss,
        a.spectrum,
        a.measures,
        layer_spectra=a.layer_spectra,
        layer_measures=a.layer_measures,
      )
      for level, (step, a) in zip(spec.matched_losses, matched, strict=True)
    ),
    hessian_density=result.hessian_density,
    trajectory_steps=None if trajectory is None else ends,
    trajectory=trajectory,
    layer_spectra=result.layer_spectra,
    layer_measures=_without_diverged(result.layer_measures, first_bad >= 0),
    epoch_accuracy=None
    if correct is None
    else _without_diverged({"a": epochs.epoch_accuracy(correct, cfg.task.plan)}, first_bad >= 0)[
      "a"
    ],
  )


def _first_or_minus_one(step: int | None) -> int:
  return -1 if step is None else step


def _without_diverged(measured: dict[str, np.ndarray], diverged_S: np.ndarray) -> dict:
  """A diverged seed's measures are NaN (reported as null), never numbers computed from
  NaN weights (an effective rank of a NaN spectrum is not a finding): measures (S,) and
  layer measures (S, N + 1) or (S, N) alike."""
  if not diverged_S.any():
    return measured
  return {
    name: np.where(
      diverged_S.reshape(-1, *([1] * (values.ndim - 1))), np.nan, values.astype(np.float64)
    )
    for name, values in measured.items()
  }
