"""The command line shared by the experiment scripts: options -> checks -> ExperimentSpec ->
`pipeline.run` -> a staged run folder (results, figures, measures) -> exit status.

Exit statuses (`EXIT_*`): 0 done; 1 done, but a model diverged; 2 bad options, an output
folder that cannot take the run or an environment that cannot run it, found before any
work starts; 3 an unexpected error (traceback in `<out>.failed/traceback.txt` where it can
be written), whatever raised it; 129, 130 and 143 stopped by SIGHUP (a closed terminal),
Ctrl-C (SIGINT) and SIGTERM. Every one of them ends with at most one line on standard
error, never a traceback. Whatever the status, the output folder holds one whole run: the
previous one, or the new one once it is complete (`runfolder`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NoReturn

import numpy as np

from jaxnorm import (
  distributed,
  pipeline,
  plotting,
  preflight,
  report,
  results,
  runfolder,
  runtime,
  sweep,
)
from jaxnorm.config import MATMUL_PRECISIONS, PRESETS, QUICK, Config
from jaxnorm.measures import MeasureConfig

EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_HUNG_UP = 128 + signal.SIGHUP  # 129
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143
# The options that --replot takes besides its folder (it trains nothing: no run options).
REPLOT_OPTIONS = {"replot", "no_progress"}


class Parser(argparse.ArgumentParser):
  """An argument parser whose errors are one line (no usage dump, no traceback), exit 2."""

  def error(self, message: str) -> NoReturn:
    self.exit(EXIT_USAGE, f"{self.prog}: error: {' '.join(message.split())}\n")


def _int_at_least(low: int):
  """An argparse type: an integer >= low, else a one-line error."""

  def parse(text: str) -> int:
    try:
      value = int(text)
    except ValueError:
      raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < low:
      raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
    return value

  return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _norm_list(text: str) -> tuple[str, ...]:
  return tuple(name.strip() for name in text.split(",") if name.strip())


def _float_list(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(x) for x in _norm_list(text))
  except ValueError:
    raise argparse.ArgumentTypeError(
      f"expected numbers separated by commas, got {text!r}"
    ) from None


def _rate_overrides(text: str) -> tuple[tuple[str, float], ...]:
  """ "none=5e-4,l2=1e-3" -> (("none", 5e-4), ("l2", 1e-3)); "" -> ()."""
  pairs = []
  for item in _norm_list(text):
    name, sep, rate = item.partition("=")
    try:
      pairs.append((name.strip(), float(rate)))
    except ValueError:
      sep = ""
    if not sep:
      raise argparse.ArgumentTypeError(f"expected NORM=RATE, got {item!r}")
  return tuple(pairs)


def build_parser(prog: str, description: str, default_out: str) -> argparse.ArgumentParser:
  p = Parser(
    prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument("--out", default=default_out, help="output folder")
  p.add_argument(
    "--preset",
    choices=sorted(PRESETS),
    help="start from this named configuration instead of the script's (equal_lr: the "
    "reference with every model at 1e-4; tiny: a shrunken task and model for smoke tests)",
  )
  p.add_argument(
    "--quick",
    action="store_true",
    help=f"smoke-run preset: {QUICK.steps} steps, {QUICK.landscape_points} "
    "landscape points, same task and model",
  )
  p.add_argument("--steps", type=_positive_int, help="training steps per model")
  p.add_argument("--batch-size", type=_positive_int, help="examples per batch")
  p.add_argument("--seed", type=int, help="seed of every key in the run")
  p.add_argument("--norms", type=_norm_list, help="comma-separated normalizations")
  p.add_argument(
    "--learning-rate",
    type=float,
    metavar="RATE",
    help="every model's learning rate; drops the configuration's per-normalization rates "
    "(the reference trains No Norm at 5e-4) unless --lr-override sets some",
  )
  p.add_argument(
    "--lr-override",
    type=_rate_overrides,
    metavar="NORM=RATE,...",
    help="per-normalization learning rates that replace the common one, e.g. none=5e-4 "
    "(the reference's); an empty string: none",
  )
  p.add_argument("--landscape-points", type=_positive_int, help="points on the 1D slice")
  p.add_argument("--landscape-range", type=float, help="the slice spans [-range, range]")
  p.add_argument(
    "--matmul-precision",
    choices=sorted(MATMUL_PRECISIONS),
    help="float32 matrix products: highest = full float32 on every backend, as PyTorch "
    "(default); high / default = TF32 on NVIDIA GPUs, bfloat16 passes on TPUs",
  )
  p.add_argument(
    "--landscape-cumulative",
    action="store_true",
    help="evaluate the slice at cumsum(alphas), as the reference notebook "
    "does (it never restores the weights between points)",
  )
  p.add_argument(
    "--seeds",
    type=_positive_int,
    default=1,
    help="train this many seeds (seed, seed + 1, ...) at once; with more than "
    "one, figures show mean ± std and summaries a 95%% CI",
  )
  p.add_argument(
    "--seeds-per-call",
    type=_positive_int,
    help="seeds trained together in one compiled call (bounds memory); default: all",
  )
  p.add_argument(
    "--replot", metavar="DIR", help="redraw the figure from the results saved in DIR; no training"
  )
  p.add_argument("--no-progress", action="store_true", help="no progress bars")
  p.add_argument(
    "--surface",
    type=_positive_int,
    metavar="N",
    help="also draw a 2D slice on an N x N grid along two filter-normalized directions "
    "(surfaces.png, surfaces.npz), for the first seed",
  )
  p.add_argument(
    "--no-measures",
    action="store_true",
    help="skip the Hessian, sharpness and isotropy measures (measures.md)",
  )
  p.add_argument(
    "--matched-loss",
    type=_float_list,
    metavar="L1,L2,...",
    help="also analyze every model where its training loss first falls to each level "
    "(e.g. 0.1,0.01), so that models are compared at equal fit (measures.md)",
  )
  p.add_argument(
    "--curvature-iterations",
    type=_nonnegative_int,
    default=0,
    metavar="N",
    help="track the Hessian's lambda_max and Adam's preconditioned sharpness at the end of "
    "every 100-step chunk, inside the training program, with N Lanczos steps "
    "(curvature.png; 0: off)",
  )
  p.add_argument(
    "--analysis-dtype",
    choices=pipeline.ANALYSIS_DTYPES,
    default="float32",
    help="precision of the analysis (slices, spectrum, measures; training stays float32): "
    "float64 where float32 rounding is a visible part of a measure, e.g. slice rises of "
    "a few 1e-7 (README, 'Precision of the analysis'); several times the analysis time on a CPU",
  )
  several = p.add_argument_group(
    "several processes",
    "run over several processes or hosts with jax.distributed (README: 'Several processes "
    "and hosts'): every process runs the same command plus these; process 0 writes --out",
  )
  several.add_argument(
    "--coordinator",
    metavar="HOST:PORT",
    help="process 0's address (default: $JAX_COORDINATOR_ADDRESS, JAX's own variable)",
  )
  several.add_argument("--num-processes", type=_positive_int, metavar="N", help="processes")
  several.add_argument(
    "--process-id", type=_nonnegative_int, metavar="I", help="this process: 0 .. N-1"
  )
  several.add_argument(
    "--distributed",
    action="store_true",
    help="join a run whose processes JAX finds in the cluster's environment (Slurm, Open "
    "MPI, Cloud TPU, GKE) instead of the three options above",
  )
  p.add_argument(
    "--compile-workers",
    type=_nonnegative_int,
    help="threads that compile the run's programs ahead of time, while the device trains "
    "(default: one per CPU core; 0: compile each program when first needed)",
  )
  p.add_argument(
    "--no-compilation-cache",
    action="store_true",
    help="do not read or write JAX's persistent compilation cache (default folder: "
    f"${runtime.CACHE_ENV}, else $XDG_CACHE_HOME/jaxnorm/xla, else ~/.cache/jaxnorm/xla)",
  )
  return p


def config_from_args(args: argparse.Namespace, default: Config) -> Config:
  """`default` (or the --preset, then QUICK's step counts with --quick) with the given
  options applied."""
  cfg = PRESETS[args.preset] if args.preset else default
  if args.quick:
    cfg = cfg.replace(steps=QUICK.steps, landscape_points=QUICK.landscape_points)
  changes = {
    "steps": args.steps,
    "batch_size": args.batch_size,
    "seed": args.seed,
    "norms": args.norms,
    "landscape_points": args.landscape_points,
    "landscape_range": args.landscape_range,
    "matmul_precision": args.matmul_precision,
  }
  cfg = cfg.replace(**{k: v for k, v in changes.items() if v is not None})
  if args.learning_rate is not None:
    cfg = cfg.replace(learning_rate=args.learning_rate, learning_rate_overrides=())
  if args.lr_override is not None:
    cfg = cfg.replace(learning_rate_overrides=args.lr_override)
  if args.landscape_cumulative:
    cfg = cfg.replace(landscape_cumulative=True)
  return cfg


def spec_from_args(
  args: argparse.Namespace, default: Config, name: str, title: str, predictions
) -> pipeline.ExperimentSpec:
  """The experiment the options describe."""
  return pipeline.ExperimentSpec(
    config=config_from_args(args, default),
    num_seeds=args.seeds,
    name=name,
    title=title,
    predictions=tuple(predictions),
    measures=None if args.no_measures else MeasureConfig(),
    surface_points=args.surface,
    seeds_per_call=args.seeds_per_call,
    matched_losses=args.matched_loss or (),
    curvature_iterations=args.curvature_iterations,
    analysis_dtype=args.analysis_dtype,
  )


class Interrupted(BaseException):
  """SIGINT or SIGTERM arrived while `main` ran; `status` is 128 + the signal."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.status = 128 + signum


def _interrupt(signum: int, frame) -> NoReturn:
  """SIGINT/SIGTERM handler of `main`: raises `Interrupted`. Every time: Python drops an
  exception raised inside a garbage-collector callback, so a second Ctrl-C must still work."""
  del frame
  raise Interrupted(signum)


def _cleaning_up() -> None:
  """From here until `main` returns, the stop signals (SIGHUP, SIGINT, SIGTERM) are
  ignored: the cleanup after an interruption or a failure is not interrupted again."""
  if threading.current_thread() is threading.main_thread():
    for s in runfolder.STOP_SIGNALS:
      signal.signal(s, signal.SIG_IGN)


class _Position:
  """Where a run is, for the one line an interruption or failure prints."""

  def __init__(self):
    self.norm, self.phase, self.step, self.steps = "", "start", 0, 0

  def update(self, norm: str, phase: str, step: int) -> None:
    self.norm, self.phase, self.step = norm, phase, step

  def __str__(self) -> str:
    return {
      "start": "while compiling and starting the first model",
      "train": f"at step {self.step} of {self.steps} of {report.label(self.norm)}",
      "analyze": f"while analyzing {report.label(self.norm)}",
      "write": "while writing the run folder",
      "wait": "while process 0 wrote and reported the run",
      "done": "after the run folder was written",
    }[self.phase]


def _folder_state(staging: runfolder.Staging) -> str:
  if staging.committed:
    return f"{staging.target} holds the new run"
  if staging.had_previous_run:
    return f"{staging.target} still holds the previous run"
  return f"{staging.target} holds no run"


def _guarded(prog: str, staging: runfolder.Staging | None, where: _Position, work) -> int | None:
  """Runs `work()` (`main` has SIGINT/SIGTERM raise `Interrupted`). Interrupted: removes the
  staging folder, prints one line, returns 130/143. Any other exception: keeps what was
  written and the traceback in `<out>.failed`, prints one line, returns 3. Otherwise
  returns None (and `work` has committed or discarded `staging`). `staging` is None in the
  processes of a distributed run other than process 0, which write nothing."""
  who = f"{prog}: {distributed.where()}"
  try:
    work()
    return None
  except (Interrupted, KeyboardInterrupt) as e:
    _cleaning_up()
    if staging is not None:
      staging.discard()
    state = "" if staging is None else f"; {_folder_state(staging)}"
    print(f"{who}interrupted {where}{state}", file=sys.stderr)
    return e.status if isinstance(e, Interrupted) else EXIT_INTERRUPTED
  except Exception as e:  # one line for the user, the traceback in a file
    _cleaning_up()
    text = traceback.format_exc()
    if staging is None:
      place = ""
    elif staging.committed:
      staging.discard()
      place = "; (traceback not kept)"
    else:
      place = _keep_failed(staging, text)
    first = (str(e).splitlines() or [""])[0]
    if distributed.peer_failed(e):
      cause = f"another process of the run stopped ({type(e).__name__}: {first[:200]})"
    else:
      cause = f"{type(e).__name__}: {first}"
    state = "" if staging is None else f"; {_folder_state(staging)}"
    print(f"{who}error {where}: {cause}{place}{state}", file=sys.stderr)
    return EXIT_FAILED
  finally:
    if staging is not None:
      staging.discard()  # a no-op after commit or keep_as_failed


def _keep_failed(staging: runfolder.Staging, text: str) -> str:
  """Moves what a failed run wrote to `<out>.failed` with the traceback `text`; what the
  one line says of it. Never raises: on a full disk the traceback may not fit."""
  try:
    failed = staging.keep_as_failed()
  except OSError as e:
    return f"; what was written could not be kept ({e.strerror or e})"
  try:
    runfolder.write_bytes(failed / "traceback.txt", text.encode())
  except OSError as e:
    (failed / "traceback.txt").unlink(missing_ok=True)
    return f"; what was written is in {failed}, the traceback could not be kept ({e.strerror or e})"
  return f"; what was written and the traceback are in {failed}"


def _print_outputs(result: pipeline.ExperimentResult, paths: list[Path]) -> None:
  print(report.terminal_table(result))
  print("figure:", ", ".join(map(str, paths)))


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
    if runfolder.manifest(target) is None:
      raise runfolder.RunFolderError(
        f"{target} has no {runfolder.MANIFEST}, so nothing says which of its files are the "
        "run's: --replot rewrites only folders with one; draw it from Python instead "
        "(jaxnorm.plotting.figure2(jaxnorm.results.load(DIR)))"
      )

  has_manifest(out_dir)  # before the lock is made: refused, nothing is written
  staging = runfolder.begin(out_dir)
  target = staging.target
  try:
    has_manifest(target)  # again, under the lock
    loaded = load(target)
  except BaseException:
    staging.discard()
    raise
  where = _Position()
  where.phase = "write"

  def work():
    staging.carry_over(replaced)
    staging.commit(redraw(staging, loaded))
    where.phase = "done"

  status = _guarded(prog, staging, where, work)
  return (0 if status is None else status), loaded


def replot(out_dir: str, title: str, prog: str = "replot") -> int:
  """Redraws Figure 2 of the run in `out_dir`; the folder is replaced as a whole (the
  other files are carried over unchanged) with a new run.json."""

  def load(target: Path) -> pipeline.ExperimentResult:
    result = results.load(target)
    return result._replace(spec=dataclasses.replace(result.spec, title=title))

  def redraw(staging: runfolder.Staging, result: pipeline.ExperimentResult) -> dict:
    plotting.save_figure(plotting.figure2(result), staging.path / "figure2")
    return results.manifest_info(result)

  status, result = _restage(prog, out_dir, {"figure2.png", "figure2.pdf"}, load, redraw)
  if status == 0:
    target = Path(out_dir)
    _print_outputs(result, [target / "figure2.png", target / "figure2.pdf"])
  return status


def write_outputs(
  staging: runfolder.Staging, result: pipeline.ExperimentResult, folder: str = ""
) -> None:
  """Everything a run leaves in its folder, written into the staging folder (into its
  sub-folder `folder` if given)."""
  results.write_run(staging, result, folder)
  plotting.save_figure(plotting.figure2(result), staging.path / folder / "figure2")
  if result.spec.surface_points:
    stem = staging.path / folder / "surfaces"
    plotting.save_figure(plotting.surfaces(result), stem, formats=("png",))
  if result.spec.curvature_iterations:
    stem = staging.path / folder / "curvature"
    plotting.save_figure(plotting.curvature_over_training(result), stem, formats=("png",))
  if result.spec.measures is not None:
    staging.write(str(Path(folder) / "measures.md"), report.markdown(result).encode())
    stem = staging.path / folder / "hessian_density"
    plotting.save_figure(plotting.hessian_density(result), stem, formats=("png",))


def _status(result: pipeline.ExperimentResult) -> int:
  """EXIT_DIVERGED if a seed of a model diverged, else 0."""
  return EXIT_DIVERGED if any(r.diverged.any() for r in result.norms.values()) else 0


def _report(result: pipeline.ExperimentResult, out: Path) -> int:
  """Prints the results and warnings; the exit status."""
  _print_outputs(result, [out / "figure2.png", out / "figure2.pdf"])
  if result.spec.surface_points:
    print("2D slices:", out / "surfaces.png")
  if result.spec.measures is not None:
    print("measures:", out / "measures.md")
  diverged = False
  for norm, r in result.norms.items():
    for seed, step in zip(r.seeds, r.first_nonfinite_step, strict=True):
      if step >= 0:
        diverged = True
        print(
          f"WARNING: {report.label(norm)} (seed {seed}) diverged: loss non-finite "
          f"from step {step} (0-based)",
          file=sys.stderr,
        )
    bad = int((~np.isfinite(r.landscape[~r.diverged])).sum())
    if bad:
      print(
        f"WARNING: {report.label(norm)}: the landscape slice is NaN or infinite at {bad} "
        "point(s) of seeds that did not diverge: the perturbed weights overflow float32; "
        "a smaller --landscape-range gives a finite slice",
        file=sys.stderr,
      )
  return EXIT_DIVERGED if diverged else 0


class _Output:
  """A text stream that passes writes on to `stream` until one fails (standard output
  redirected to a full disk, a closed pipe); from then on it drops them, the file
  descriptor points to /dev/null (so that the interpreter's last flush cannot fail), and
  one line on standard error says so. Everything else is the stream's."""

  def __init__(self, stream, prog: str, name: str):
    self._stream, self._prog, self._name, self.failed = stream, prog, name, False

  def _fail(self, error: OSError) -> None:
    self.failed = True
    _to_devnull(self._stream)
    if self._name == "stdout":
      _say(
        f"{self._prog}: cannot write to standard output ({error.strerror or error}); the run "
        "goes on without printing",
        sys.stderr,
      )

  def write(self, text: str) -> int:
    if not self.failed:
      try:
        return self._stream.write(text)
      except OSError as e:
        self._fail(e)
    return len(text)

  def flush(self) -> None:
    if not self.failed:
      try:
        self._stream.flush()
      except OSError as e:
        self._fail(e)

  def __getattr__(self, name: str):
    return getattr(self._stream, name)


def _to_devnull(stream) -> None:
  """Points the file descriptor of `stream` to /dev/null, where every write succeeds."""
  with contextlib.suppress(OSError, ValueError):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _say(line: str, stream=None) -> None:
  """Prints `line` on `stream` (default: standard error); an error writing it is ignored."""
  with contextlib.suppress(OSError, ValueError):
    print(line, file=stream or sys.stderr, flush=True)


@contextlib.contextmanager
def _tolerant_output(prog: str):
  """Within the block, standard output and error that cannot be written are `_Output`s
  (a closed one, None in Python, writes to /dev/null)."""
  saved = sys.stdout, sys.stderr
  closed = [open(os.devnull, "w") for stream in saved if stream is None]  # noqa: SIM115
  out, err = (stream if stream is not None else closed.pop() for stream in saved)
  sys.stdout, sys.stderr = _Output(out, prog, "stdout"), _Output(err, prog, "stderr")
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout, sys.stderr = saved
    for stream in (out, err):
      if stream not in saved:
        stream.close()


def run_tool(prog: str, body: Callable[[], int]) -> int:
  """`body()` for the scripts that read saved runs (compare_runs.py, findings_tables.py):
  its parser's errors pass (one line, exit 2); Ctrl-C, one line and 130; any other
  exception, one line and 3; output that cannot be written is dropped (`_Output`)."""
  with _tolerant_output(prog):
    try:
      return body()
    except KeyboardInterrupt:
      _say(f"{prog}: interrupted")
      return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  a bug or an unforeseen input: one line
      _say(f"{prog}: error: {type(e).__name__}: {' '.join(str(e).split())}")
      return EXIT_FAILED


def _interruptible(prog: str, body) -> int:
  """`body()` with SIGHUP/SIGINT/SIGTERM raising `Interrupted`, and output that cannot be
  written dropped (`_Output`). Interrupted before a run folder was begun (parsing,
  checks): one line and 129/130/143. Any exception that `body` lets escape: one line and
  3."""
  with _tolerant_output(prog), runfolder.signals_handled(_interrupt):
    try:
      status = body()
    except (Interrupted, KeyboardInterrupt) as e:
      _cleaning_up()
      _say(f"{prog}: interrupted before the run started; nothing was written")
      status = e.status if isinstance(e, Interrupted) else EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  a bug or an unforeseen environment: one line
      _cleaning_up()
      first = (str(e).strip().splitlines() or [""])[0]
      _say(f"{prog}: {distributed.where()}error: {type(e).__name__}: {first}")
      status = EXIT_FAILED
  return status


def _given(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
  """The options (argparse destinations) that `argv` gives, whatever their value."""
  unset = object()
  probe = copy.deepcopy(parser)
  probe.set_defaults(**{dest: unset for dest in vars(parser.parse_args([]))})
  return {dest for dest, value in vars(probe.parse_args(argv)).items() if value is not unset}


def _check_replot(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
  """With --replot: a folder, and none of the run's options, which it would ignore."""
  given = _given(parser, argv)
  if "replot" not in given:
    return
  others = sorted(given - REPLOT_OPTIONS)
  if others:
    shown = ", ".join("--" + dest.replace("_", "-") for dest in others)
    parser.error(f"--replot redraws a saved run and takes no run options (got {shown}): drop them")
  if not parser.parse_args(argv).replot:
    parser.error("--replot needs a folder, got an empty string")


def _processes(
  parser: argparse.ArgumentParser, args: argparse.Namespace
) -> distributed.Processes | None:
  """The run over several processes the options ask for (None: one process), checked."""
  flags = (args.coordinator, args.num_processes, args.process_id)
  if not args.distributed and all(x is None for x in flags):
    return None
  if args.replot is not None:
    parser.error("--replot runs in one process: drop the options of several processes")
  if args.distributed and any(x is not None for x in flags):
    parser.error(
      "--distributed takes the processes from the cluster: drop --coordinator, "
      "--num-processes and --process-id"
    )
  coordinator = args.coordinator
  if coordinator is None and not args.distributed:
    coordinator = os.environ.get("JAX_COORDINATOR_ADDRESS") or None
  try:
    return distributed.Processes(coordinator, args.num_processes, args.process_id)
  except ValueError as e:
    parser.error(str(e))


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
  """The checks after parsing (memory, for `runs_per_seed` runs of each seed; compilation
  cache; output folder), each failure one line and exit 2; then the run's staging folder
  (None where this process writes nothing: see `_join`)."""
  try:
    runtime.check_backend()
    preflight.check(spec, runs_per_seed)
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


def main(
  argv: Sequence[str] | None,
  *,
  prog: str,
  description: str,
  default: Config,
  default_out: str,
  name: str,
  title: str,
  predictions: Sequence[report.Prediction] = (),
) -> int:
  """Parses `argv`, checks everything, runs the experiment and writes its run folder;
  returns the exit status (`EXIT_*`)."""

  def body() -> int:
    parser = build_parser(prog, description, default_out)
    args = parser.parse_args(argv)
    processes = _processes(parser, args)
    _check_replot(parser, argv)
    if args.replot is not None:
      try:
        return replot(args.replot, title, prog)
      except (results.ResultsError, runfolder.RunFolderError) as e:
        parser.error(str(e))
    try:
      spec = spec_from_args(args, default, name, title, predictions)
    except ValueError as e:
      parser.error(str(e))
    writes = _join(parser, processes, repr(spec))
    staging = _begin(parser, args, spec, writes)
    cfg = spec.config
    where = _Position()
    where.steps = cfg.steps
    outcome: list[int] = []

    def work():
      if writes:
        print(f"{name}: {len(cfg.norms)} models x {cfg.steps} steps; results -> {staging.target}")
      result = pipeline.run(
        spec,
        progress=writes and not args.no_progress,
        compile_workers=args.compile_workers,
        on_progress=where.update,
      )
      if not writes:
        where.phase = "wait"
        distributed.barrier("run folder written")
        outcome.append(_status(result))
        return
      where.phase = "write"
      write_outputs(staging, result)
      staging.commit(results.manifest_info(result))
      where.phase = "done"
      outcome.append(_report(result, staging.target))
      distributed.barrier("run folder written")

    status = _guarded(prog, staging, where, work)
    return outcome[0] if status is None else status

  return _interruptible(prog, body)


def _rate_list(text: str) -> tuple[float, ...]:
  try:
    return sweep.check_rates(float(r) for r in _norm_list(text))
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def sweep_main(
  argv: Sequence[str] | None,
  *,
  prog: str,
  description: str,
  default: Config,
  default_out: str,
  name: str,
  rates: Sequence[float],
) -> int:
  """The learning-rate sweep's command line: the experiment's options plus --rates; one
  run folder per rate inside the sweep's folder, sweep.md, sweep.json and sweep.png.
  Exit statuses as `main`, except that a diverged model is a finding of the sweep
  (sweep.md counts them), not a failure: 0."""

  def body() -> int:
    parser = build_parser(prog, description, default_out)
    parser.add_argument(
      "--rates",
      type=_rate_list,
      default=tuple(rates),
      metavar="R1,R2,...",
      help="the learning rates; every model trains at each",
    )
    args = parser.parse_args(argv)
    if args.learning_rate is not None or args.lr_override is not None:
      parser.error("--learning-rate and --lr-override do not apply to a sweep: use --rates")
    processes = _processes(parser, args)
    _check_replot(parser, argv)
    if args.replot is not None:
      try:
        return replot_sweep(args.replot, prog)
      except (results.ResultsError, runfolder.RunFolderError) as e:
        parser.error(str(e))
    try:
      spec = spec_from_args(args, default, name, "", ())
    except ValueError as e:
      parser.error(str(e))
    writes = _join(parser, processes, repr((spec, args.rates)))
    staging = _begin(parser, args, spec, writes, runs_per_seed=len(args.rates))
    cfg = spec.config
    where = _Position()
    where.steps = cfg.steps

    def work():
      if writes:
        print(
          f"{name}: {len(args.rates)} rates x {len(cfg.norms)} models x {cfg.steps} steps, "
          f"every (rate, seed) run of a model trained together; results -> {staging.target}"
        )
      result = sweep.run(
        spec,
        args.rates,
        progress=writes and not args.no_progress,
        compile_workers=args.compile_workers,
        on_progress=where.update,
      )
      if not writes:
        where.phase = "wait"
        distributed.barrier("run folder written")
        return
      where.phase = "write"
      for rate, run in zip(result.rates, result.runs, strict=True):
        write_outputs(staging, run, sweep.folder(rate))
        staging.write_manifest(results.manifest_info(run), sweep.folder(rate))
      _write_sweep(staging, result)
      staging.commit(results.manifest_info(result.runs[0]))
      where.phase = "done"
      print(sweep.markdown(result, names=("final_loss",)))
      print("sweep:", staging.target / "sweep.md", staging.target / "sweep.png")
      distributed.barrier("run folder written")

    status = _guarded(prog, staging, where, work)
    return 0 if status is None else status

  return _interruptible(prog, body)


def _write_sweep(staging: runfolder.Staging, result: sweep.SweepResult) -> None:
  staging.write("sweep.md", sweep.markdown(result).encode())
  text = json.dumps(sweep.summary_dict(result), indent=2, allow_nan=False)
  staging.write("sweep.json", text.encode())
  plotting.save_figure(plotting.sweep(result), staging.path / "sweep", formats=("png",))


def replot_sweep(out_dir: str, prog: str = "replot") -> int:
  """Redraws sweep.png (and sweep.md) of the sweep in `out_dir`; the folder is replaced as
  a whole with a new run.json."""

  def redraw(staging: runfolder.Staging, result: sweep.SweepResult) -> dict:
    _write_sweep(staging, result)
    return results.manifest_info(result.runs[0])

  replaced = {"sweep.png", "sweep.md", "sweep.json"}
  status, _ = _restage(prog, out_dir, replaced, sweep.load, redraw)
  if status == 0:
    print("sweep:", Path(out_dir) / "sweep.md", Path(out_dir) / "sweep.png")
  return status


def exit_process(status: int) -> NoReturn:
  """Ends the script with `status`. After an interruption or a failure, compilations may
  still run in worker threads, which the interpreter would wait for: the process ends at
  once instead, its output flushed. The status is known: stop signals that arrive from
  here on are ignored (a Ctrl-C as a finished run exits changes nothing)."""
  if threading.current_thread() is threading.main_thread():
    for s in runfolder.STOP_SIGNALS:
      signal.signal(s, signal.SIG_IGN)
  runfolder.fault_point("exit")
  for stream in (sys.stdout, sys.stderr):
    try:
      if stream is not None:  # None: closed when the process started
        stream.flush()
    except (OSError, ValueError, AttributeError):
      _to_devnull(stream)  # what it could not write is dropped, the exit is not stopped
  if status in (EXIT_FAILED, EXIT_HUNG_UP, EXIT_INTERRUPTED, EXIT_TERMINATED):
    os._exit(status)
  sys.exit(status)
