"""A learning-rate sweep: every normalization trained over a grid of rates and seeds.

The reference trains No Norm at 5x the others' rate, and its flatness verdicts move with
that choice; a sweep shows each measure as a function of the rate, for every model at
every rate. Each rate gives one ordinary experiment (`spec_at`: every model at that rate),
saved as an ordinary run folder `lr_<rate>/` inside the sweep's folder (`results.save`,
`results.write_sweep`). The learning rate is optimizer state (`train.optimizer`), so the
runs of every (rate, seed) pair of a model train and are analyzed together,
`seeds_per_call` at a time, split over every device and process like the seeds of one
experiment (`pipeline.run_runs`).

    sweep = jaxnorm.sweep.run(ExperimentSpec(config.QUICK, num_seeds=4), (1e-4, 3e-4))
    jaxnorm.stats.by_rate(sweep)["none"]["hessian_trace"]   # one `stats.across_seeds` per rate
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence

from jaxnorm import config, pipeline, programs, resume, runtime
from jaxnorm.result import ExperimentResult, SweepResult, rate_folder
from jaxnorm.spec import ExperimentSpec


def check_rates(rates: Sequence[float]) -> tuple[float, ...]:
  """The rates as a tuple of floats; ValueError unless each is a learning rate a model can
  train at (`config.learning_rate_error`: finite and > 0 also in float32) and their folders
  are distinct; `config.FieldTypeError` (a ValueError) for a rate that is not a number."""
  rates = config.check_learning_rates(rates)
  if len({rate_folder(r) for r in rates}) != len(rates):
    raise ValueError(
      "learning rates must have distinct run folders (lr_<rate> to 6 significant digits), got "
      + ", ".join(f"{r} -> {rate_folder(r)}" for r in rates)
    )
  return rates


def spec_at(spec: ExperimentSpec, rate: float) -> ExperimentSpec:
  """`spec` with every normalization at learning rate `rate` (no per-norm overrides)."""
  cfg = spec.config.replace(learning_rate=rate, learning_rate_overrides=())
  return dataclasses.replace(spec, config=cfg)


def run(
  spec: ExperimentSpec,
  rates: Sequence[float],
  *,
  progress: bool = True,
  compile_workers: int | None = None,
  on_progress: pipeline.OnProgress = pipeline.ignore_progress,
  checkpointer: resume.Checkpointer | None = None,
  on_chunk: pipeline.OnChunk | None = None,
) -> SweepResult:
  """`pipeline.run(spec_at(spec, rate))` for every rate, computed as one grid: the
  (rate, seed) runs of a normalization share its compiled programs and calls,
  `seeds_per_call` runs at a time (default: `num_seeds`, one rate's worth, the memory of
  one experiment; R x num_seeds puts the whole grid in one call), split over every device
  (and process) like seeds. The learning rate is optimizer state, so run k of the grid is
  the run of its seed at its rate alone.

  Each result's `seconds` (and each normalization's) is its share of the grid's: the
  grid's time divided by the number of rates. `on_chunk` is told of the runs of the grid
  (`programs.Runs.of(spec, rates)`: rate-major). Raises ValueError, before any work, for a
  rate a model cannot train at or two rates with one folder (`check_rates`).
  """
  rates = check_rates(rates)
  start = time.perf_counter()
  runs = programs.Runs.of(spec, rates)
  grid = dataclasses.replace(spec, seeds_per_call=spec.seeds_per_call or spec.num_seeds)
  norms = pipeline.run_runs(
    grid,
    runs,
    progress=progress,
    mesh=None,
    compile_workers=compile_workers,
    on_progress=on_progress,
    checkpointer=checkpointer,
    on_chunk=on_chunk,
  )
  share = (time.perf_counter() - start) / len(rates)
  environment = runtime.environment()
  out = []
  for i, rate in enumerate(rates):
    at = slice(i * spec.num_seeds, (i + 1) * spec.num_seeds)
    at_rate = {
      norm: r.take(at)._replace(
        learning_rate=rate, seconds={k: v / len(rates) for k, v in r.seconds.items()}
      )
      for norm, r in norms.items()
    }
    out.append(ExperimentResult(spec_at(spec, rate), at_rate, share, environment))
  return SweepResult(rates, tuple(out))
