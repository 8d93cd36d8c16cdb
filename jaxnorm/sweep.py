"""A learning-rate sweep: every normalization trained over a grid of rates and seeds, and
each measure reported against the rate.

The reference trains No Norm at 5x the others' rate, and its flatness verdicts move with
that choice; a sweep shows each measure as a function of the rate, for every model at
every rate. Each rate gives one ordinary experiment (`spec_at`: every model at that rate),
saved as an ordinary run folder `lr_<rate>/` inside the sweep's folder. The learning rate
is optimizer state (`train.optimizer`), so the runs of every (rate, seed) pair of a model
train and are analyzed together, `seeds_per_call` at a time, split over every device and
process like the seeds of one experiment (`pipeline.run_rates`).

    sweep = jaxnorm.sweep.run(pipeline.ExperimentSpec(QUICK, num_seeds=4), (1e-4, 3e-4))
    sweep.stats()["none"]["hessian_trace"]        # one `summary.across_seeds` per rate
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from jaxnorm import config, measures, pipeline, report, results, runfolder, summary


def folder(rate: float) -> str:
  """The sub-folder of the run at `rate`: lr_0.0001, lr_3e-05, ..."""
  return f"lr_{rate:g}"


def check_rates(rates: Sequence[float]) -> tuple[float, ...]:
  """The rates as a tuple of floats; ValueError unless each is a learning rate a model can
  train at (`config.learning_rate_error`: finite and > 0 also in float32) and their folders
  are distinct; `config.FieldTypeError` (a ValueError) for a rate that is not a number."""
  rates = config.check_learning_rates(rates)
  if len({folder(r) for r in rates}) != len(rates):
    raise ValueError(f"learning rates must be distinct, got {', '.join(map(str, rates))}")
  return rates


def spec_at(spec: pipeline.ExperimentSpec, rate: float) -> pipeline.ExperimentSpec:
  """`spec` with every normalization at learning rate `rate` (no per-norm overrides)."""
  cfg = spec.config.replace(learning_rate=rate, learning_rate_overrides=())
  return dataclasses.replace(spec, config=cfg)


class SweepResult(NamedTuple):
  rates: tuple[float, ...]  # R rates, in the order given
  runs: tuple[pipeline.ExperimentResult, ...]  # one experiment per rate

  def stats(self) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """norm -> measure -> one `summary.across_seeds` per rate."""
    out: dict[str, dict[str, list]] = {}
    for run in self.runs:
      for norm, r in run.norms.items():
        for name, value in summary.stats(r).items():
          out.setdefault(norm, {}).setdefault(name, []).append(value)
    return out

  def diverged(self) -> dict[str, list[int]]:
    """norm -> per rate, how many seeds diverged."""
    return {
      norm: [int(run.norms[norm].diverged.sum()) for run in self.runs]
      for norm in self.runs[0].norms
    }


def run(
  spec: pipeline.ExperimentSpec,
  rates: Sequence[float],
  *,
  progress: bool = True,
  compile_workers: int | None = None,
  on_progress: pipeline.OnProgress = pipeline._ignore_progress,
) -> SweepResult:
  """`spec_at(spec, rate)` for every rate, as one grid of (rate, seed) runs per model
  (`pipeline.run_rates`): run k of the grid is the run of its seed at its rate alone."""
  rates = check_rates(rates)
  runs = pipeline.run_rates(
    spec, rates, progress=progress, compile_workers=compile_workers, on_progress=on_progress
  )
  return SweepResult(rates, runs)


def shown_measures(sweep: SweepResult) -> list[measures.Measure]:
  """The measures of `measures.md` that the sweep's runs have."""
  present = set(next(iter(sweep.stats().values())))
  return [m for m in measures.MEASURES if m.shown and m.name in present]


def summary_dict(sweep: SweepResult) -> dict[str, Any]:
  """sweep.json: the rates, the common config and seed count, and per normalization and
  measure one `summary.across_seeds` per rate; per rate the sub-folder of its run."""
  first = sweep.runs[0].spec
  return {
    "format": 1,
    "experiment": first.name,
    "rates": list(sweep.rates),
    "folders": [folder(r) for r in sweep.rates],
    "seeds": first.num_seeds,
    "config": summary.config_to_dict(first.config),
    "diverged": sweep.diverged(),
    "norms": sweep.stats(),
  }


def markdown(sweep: SweepResult, names: Sequence[str] | None = None) -> str:
  """sweep.md: the seeds that diverged, then per measure (those of `names`, default every
  shown one) a table of normalizations x rates (mean ± 95% CI half-width with several
  seeds; an estimate that did not converge on some seed marked, `report.unconverged_mark`)."""
  stats, seeds = sweep.stats(), sweep.runs[0].spec.num_seeds
  head = "| | " + " | ".join(f"lr {r:g}" for r in sweep.rates) + " |"
  rule = "|---|" + "---|" * len(sweep.rates)
  lines = [
    f"# Learning-rate sweep: {sweep.runs[0].spec.name}",
    "",
    f"Every model at each rate; {seeds} seed(s) per cell"
    + (", mean ± 95% CI half-width" if seeds > 1 else "")
    + ". A diverged seed contributes no value (n says how many did).",
    "",
    "## Diverged seeds",
    "",
    head,
    rule,
  ]
  for norm, counts in sweep.diverged().items():
    lines.append(f"| {report.label(norm)} | " + " | ".join(f"{c}/{seeds}" for c in counts) + " |")
  for m in shown_measures(sweep):
    if names is not None and m.name not in names:
      continue
    lines += ["", f"## {m.label}" + (f" ({m.unit})" if m.unit else ""), "", head, rule]
    for norm, by_name in stats.items():
      cells = []
      for i, s in enumerate(by_name[m.name]):
        low, high = s["ci95"]
        cell = report.cell(s["mean"], low, high) + (f" (n={s['n']})" if seeds > 1 else "")
        at_rate = {name: values[i] for name, values in by_name.items()}
        cells.append(cell + report.unconverged_mark(at_rate, m.name))
      lines.append(f"| {report.label(norm)} | " + " | ".join(cells) + " |")
  return "\n".join(lines) + "\n"


def load(sweep_folder: str | Path) -> SweepResult:
  """The sweep saved in `sweep_folder` (sweep.json and one run folder per rate; without
  variables), each file checked against its run.json. Raises results.ResultsError with a
  one-line reason."""
  sweep_folder = Path(sweep_folder)
  try:
    runfolder.verify(sweep_folder, ("sweep.json",))
  except runfolder.RunFolderError as e:
    raise results.ResultsError(str(e)) from None
  try:
    info = json.loads((sweep_folder / "sweep.json").read_text())
    rates, folders = tuple(info["rates"]), info["folders"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise results.ResultsError(f"{sweep_folder} holds no sweep jaxnorm can read ({e})") from None
  return SweepResult(rates, tuple(results.load(sweep_folder / f) for f in folders))
