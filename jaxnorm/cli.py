"""The command line shared by the experiment scripts and the sweep, one path for both:
options -> checks -> ExperimentSpec -> `pipeline.run` (or `sweep.run`) -> a staged run
folder (`results.write_run`) -> report -> exit status (`exits`).

    python experiments/exp2.py --quick          # cli.run_script(predictions.EXP2, __doc__)
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from jaxnorm import (
  distributed,
  exits,
  layer_plots,
  live,
  manifests,
  options,
  pipeline,
  plotting,
  preflight,
  report,
  results,
  resume,
  runfolder,
  runtime,
  sweep,
  text_run,
)
from jaxnorm.exits import EXIT_DIVERGED, Position
from jaxnorm.norms import label
from jaxnorm.predictions import Experiment
from jaxnorm.result import ExperimentResult, SweepResult
from jaxnorm.spec import ExperimentSpec


def run_script(experiment: Experiment, doc: str) -> NoReturn:
  """What an experiment script does when run: `main` on its arguments, the first
  paragraph of its docstring `doc` as the description, then `exits.exit_process`."""
  prog = os.path.basename(sys.argv[0])
  exits.exit_process(main(sys.argv[1:], experiment, prog=prog, description=doc.split("\n\n")[0]))


def main(
  argv: Sequence[str] | None, experiment: Experiment, *, prog: str, description: str = ""
) -> int:
  """Parses `argv`, checks everything, runs the experiment (every model at each of
  --rates for a sweep: `Experiment.rates`) and writes its run folder; returns the exit
  status (`exits.EXIT_*`). A diverged model exits 1, except in a sweep, where it is a
  finding that sweep.md counts (exit 0)."""
  is_sweep = bool(experiment.rates)

  def body() -> int:
    parser = options.build_parser(prog, description, experiment)
    args = parser.parse_args(argv)
    if is_sweep:
      options.check_sweep(parser, args)
    processes = options.processes_of(parser, args)
    options.check_replot(parser, argv)
    if args.replot is not None:
      try:
        if is_sweep:
          return replot_sweep(args.replot, prog)
        return replot(args.replot, experiment.title, prog)
      except (results.ResultsError, runfolder.RunFolderError) as e:
        parser.error(str(e))
    arrays, data_source = None, None
    try:
      spec = options.spec_from_args(args, experiment)
      if experiment.dataset:  # loaded (or refused, exit 2) before any training
        spec, arrays, data_source = text_run.prepare(args, spec, progress=not args.no_progress)
    except ValueError as e:
      parser.error(str(e))
    exits.raise_pending()  # a stop while loading (its exception may have been dropped)
    rates = args.rates if is_sweep else ()
    # The same spec in every process, and a live view in all (each chunk is gathered) or none.
    run = repr((spec, rates)) if is_sweep else repr(spec)
    writes = _join(parser, processes, f"{run}, tensorboard={args.tensorboard is not None}")
    staging = _begin(parser, args, spec, writes, runs_per_seed=len(rates) or 1)
    checkpointer = _checkpointer(parser, args, staging, run, writes)
    cfg = spec.config
    position = Position()
    position.steps = cfg.steps
    outcome: list[int] = []

    def work():
      if writes:
        print(_header(experiment.name, spec, rates, staging.target))
      view = None
      if args.tensorboard is not None:  # written by process 0 only (`writes`)
        view = live.TensorBoard(args.tensorboard, spec, rates, writes)
      run_options = dict(
        progress=writes and not args.no_progress,
        compile_workers=args.compile_workers,
        on_progress=position.update,
        checkpointer=checkpointer,
        on_chunk=view,
      )
      try:
        if is_sweep:
          result = sweep.run(spec, rates, **run_options)
        else:
          result = pipeline.run(spec, arrays=arrays, **run_options)
      finally:
        if view is not None:
          view.close()
      if not is_sweep and data_source is not None:  # summary.json's environment, measures.md
        result = result._replace(environment={**result.environment, "data": data_source})
      if not writes:
        position.phase = "wait"
        distributed.barrier("run folder written")
        outcome.append(0 if is_sweep else _status(result))
        return
      exits.raise_pending()  # a stop whose exception was dropped: the run is not written
      position.phase = "write"
      if is_sweep:
        results.write_sweep(staging, result)
      else:
        results.write_run(staging, result)
      staging.commit(results.manifest_info(result))
      position.phase = "done"
      if checkpointer is not None:  # the run is whole: its checkpoints are of no more use
        checkpointer.remove()
      outcome.append(
        _report_sweep(result, staging.target) if is_sweep else _report(result, staging.target)
      )
      distributed.barrier("run folder written")

    status = exits.guarded(prog, staging, position, work)
    if status is not None and checkpointer is not None and writes:
      checkpointer.tell_stopped(prog)
    return outcome[0] if status is None else status

  return exits.interruptible(prog, body)


def _checkpointer(
  parser: argparse.ArgumentParser,
  args: argparse.Namespace,
  staging: runfolder.Staging | None,
  run: str,
  writes: bool,
) -> resume.Checkpointer | None:
  """The run's checkpoints beside its folder (`resume`; None with --no-checkpoints), checked
  before any work: a stopped run's are refused without --resume (also with
  --no-checkpoints: the new run would leave them beside a run they are not of), another
  run's or damaged ones with it, different ones in different processes, and a --tensorboard
  folder inside the run folder or the checkpoints, which the run replaces or removes (exit 2)."""
  target = staging.target if staging is not None else Path(os.path.realpath(args.out))
  checkpointer = resume.Checkpointer(
    resume.folder_of(target), run, every_s=args.checkpoint_every, writes=writes
  )

  def refuse(message: str) -> NoReturn:
    checkpointer.close()
    if staging is not None:
      staging.discard()
    parser.error(message)

  if args.no_checkpoints and args.resume:
    refuse("--resume continues from checkpoints, which --no-checkpoints turns off")
  if args.tensorboard is not None:  # the run would replace or remove it
    live_view = Path(os.path.realpath(args.tensorboard))
    for place in (target, resume.folder_of(target)):
      if live_view == place or place in live_view.parents:
        refuse(f"--tensorboard {args.tensorboard} lies inside {place}: choose a folder outside")
  try:
    found = checkpointer.open(args.resume)
  except resume.ResumeError as e:
    refuse(str(e))
  if args.no_checkpoints:
    return None
  try:  # every process continues from the checkpoints process 0 wrote, or none does
    distributed.check_same(repr(checkpointer.found))
  except ValueError:
    refuse(
      f"the processes of the run found different checkpoints in {checkpointer.folder}: "
      "every process reads process 0's, so give them one --out on a file system they share"
    )
  if args.resume and writes:
    if found:
      print(f"resuming from the checkpoints in {checkpointer.folder}")
    else:
      print(f"nothing to resume in {checkpointer.folder}: the run starts from step 0")
  return checkpointer


def _header(name: str, spec, rates: Sequence[float], out: Path) -> str:
  cfg = spec.config
  if cfg.text is not None:
    t, per_epoch = cfg.text, cfg.task.plan.steps_per_epoch
    return (
      f"{name}: {len(cfg.norms)} models x {cfg.steps // per_epoch} epochs of {per_epoch} steps "
      f"({t.num_train} {t.name} training examples, {t.num_test} test); results -> {out}"
    )
  if not rates:
    return f"{name}: {len(cfg.norms)} models x {cfg.steps} steps; results -> {out}"
  return (
    f"{name}: {len(rates)} rates x {len(cfg.norms)} models x {cfg.steps} steps, "
    f"every (rate, seed) run of a model trained together; results -> {out}"
  )


def _join(
  parser: argparse.ArgumentParser, processes: distributed.Processes | None, run: str
) -> bool:
  """Joins the run over several processes, if any, before anything else uses JAX's
  devices, and checks that every process runs the same `run` (the spec's repr); whether this process
  writes and prints (`distributed.is_main`)."""
  if processes is None:
    return True
  try:
    distributed.initialize(processes)
    distributed.check_same(run)
  except (RuntimeError, ValueError) as e:
    parser.error(str(e))
  return distributed.is_main()


def _begin(
  parser: argparse.ArgumentParser,
  args: argparse.Namespace,
  spec,
  writes: bool = True,
  runs_per_seed: int = 1,
) -> runfolder.Staging | None:
  """The checks after parsing (memory, for `runs_per_seed` runs of each seed; TensorBoard's
  folder; compilation cache; output folder), each failure one line and exit 2; then the
  run's staging folder (None where this process writes nothing: see `_join`)."""
  try:
    runtime.check_backend()
    preflight.check(spec, runs_per_seed)
    if writes and args.tensorboard is not None:
      live.check(args.tensorboard)
  except (RuntimeError, ValueError) as e:
    parser.error(str(e))
  if not args.no_compilation_cache:
    try:
      runtime.enable_compilation_cache()
    except OSError as e:
      parser.error(
        f"cannot use the compilation cache folder {runtime.default_cache_dir()} "
        f"({e.strerror or e}): set ${runtime.CACHE_ENV} or pass --no-compilation-cache"
      )
  if not writes:
    return None
  try:
    return runfolder.begin(args.out)
  except runfolder.RunFolderError as e:
    parser.error(f"--out: {e}")


def _restage(prog: str, out_dir: str, replaced: set[str], load, redraw) -> tuple[int, object]:
  """Replaces the run folder `out_dir` as a whole by its files, carried over unchanged,
  minus the top-level files named in `replaced`, plus what `redraw(staging, loaded)`
  writes, with a new run.json; `loaded = load(target)` is read after the folder's lock is
  taken and every file below it is checked against its run.json (`runfolder.begin`), so
  that no other run can change it in between. Returns (exit status, loaded).

  Raises RunFolderError or ResultsError (exit 2) for a folder that holds no run, files
  that are not the ones its run.json lists, or no run.json at all: a folder without one
  (written before manifests, or whose run.json was removed) can be loaded (with a
  warning) but not rewritten, since nothing says which files are the run's."""
  if not Path(out_dir).is_dir():
    raise results.ResultsError(f"{out_dir} holds no saved results (not a folder)")

  def has_manifest(target) -> None:
    if manifests.manifest(target) is None:
      raise runfolder.RunFolderError(
        f"{target} has no {manifests.MANIFEST}, so nothing says which of its files are the "
        "run's: --replot rewrites only folders with one; draw it from Python instead "
        "(jaxnorm.plotting.figure2(jaxnorm.results.load(DIR)))"
      )

  has_manifest(out_dir)  # before the lock is made: refused, nothing is written
  staging = runfolder.begin(out_dir, sub_run=True)
  target = staging.target
  try:
    has_manifest(target)  # again, under the lock
    loaded = load(target)
  except BaseException:
    staging.discard()
    raise
  position = Position()
  position.phase = "write"

  def work():
    staging.carry_over(replaced)
    staging.commit(redraw(staging, loaded))
    position.phase = "done"

  status = exits.guarded(prog, staging, position, work)
  return (0 if status is None else status), loaded


def replot(out_dir: str, title: str, prog: str = "replot") -> int:
  """Redraws Figure 2 of the run in `out_dir` under the run's own title (`title`, the
  script's, for a run that recorded none), and its layer figures where it has their data
  (`layer_plots.save_figures`); the folder is replaced as a whole (the other files are
  carried over unchanged) with a new run.json."""

  def load(target: Path) -> ExperimentResult:
    result = results.load(target)
    if result.spec.title != ExperimentSpec.title:
      return result
    return result._replace(spec=dataclasses.replace(result.spec, title=title))

  drawn = []

  def redraw(staging: runfolder.Staging, result: ExperimentResult) -> dict:
    drawn.extend(plotting.save_figure(plotting.figure2(result), staging.path / "figure2"))
    drawn.extend(layer_plots.save_figures(result, staging.path))
    return results.manifest_info(result)

  status, result = _restage(prog, out_dir, set(manifests.REDRAWN), load, redraw)
  if status == 0:
    _print_outputs(result, [Path(out_dir) / path.name for path in drawn])
  return status


def replot_sweep(out_dir: str, prog: str = "replot") -> int:
  """Redraws sweep.png (and sweep.md) of the sweep in `out_dir`; the folder is replaced as
  a whole with a new run.json."""

  def redraw(staging: runfolder.Staging, result: SweepResult) -> dict:
    results.write_sweep(staging, result, runs=False)
    return results.manifest_info(result)

  replaced = {"sweep.png", "sweep.md", "sweep.json"}
  status, _ = _restage(prog, out_dir, replaced, results.load_sweep, redraw)
  if status == 0:
    print("sweep:", Path(out_dir) / "sweep.md", Path(out_dir) / "sweep.png")
  return status


def _report_sweep(result: SweepResult, out: Path) -> int:
  """Prints the sweep's final losses and where its files are; 0."""
  print(report.sweep_markdown(result, names=("final_loss",)))
  print("sweep:", out / "sweep.md", out / "sweep.png")
  return 0


def _print_outputs(result: ExperimentResult, paths: list[Path]) -> None:
  print(report.terminal_table(result))
  print("figure:", ", ".join(map(str, paths)))


def _status(result: ExperimentResult) -> int:
  """EXIT_DIVERGED if a seed of a model diverged, else 0."""
  return EXIT_DIVERGED if any(r.diverged.any() for r in result.norms.values()) else 0


def _report(result: ExperimentResult, out: Path) -> int:
  """Prints the results and warnings; the exit status."""
  _print_outputs(result, [out / name for name in manifests.REDRAWN if (out / name).exists()])
  if result.spec.surface_points:
    print("2D slices:", out / "surfaces.png")
  print("measures:", out / "measures.md")
  diverged = False
  for norm, r in result.norms.items():
    for seed, step in zip(r.seeds, r.first_nonfinite_step, strict=True):
      if step >= 0:
        diverged = True
        print(
          f"WARNING: {label(norm)} (seed {seed}) diverged: loss non-finite "
          f"from step {step} (0-based)",
          file=sys.stderr,
        )
    bad = int((~np.isfinite(r.landscape[~r.diverged])).sum())
    if bad:
      print(
        f"WARNING: {label(norm)}: the landscape slice is NaN or infinite at {bad} "
        "point(s) of seeds that did not diverge: the perturbed weights overflow float32; "
        "a smaller --landscape-range gives a finite slice",
        file=sys.stderr,
      )
  return EXIT_DIVERGED if diverged else 0
