"""The command line's options: the parser of the experiment scripts and of the sweep, and
the options turned into a `config.Config` and an `spec.ExperimentSpec`, each wrong option
refused in one line with exit status 2 before any work starts."""

from __future__ import annotations

import argparse
import copy
import os
from collections.abc import Sequence
from typing import NoReturn

from jaxnorm import distributed, resume, runtime, sweep, text_run
from jaxnorm import families as families_lib
from jaxnorm.config import MATMUL_PRECISIONS, NORM_PLACEMENTS, PRESETS, QUICK, READOUTS, Config
from jaxnorm.exits import EXIT_USAGE
from jaxnorm.families import MeasureConfig
from jaxnorm.predictions import Experiment
from jaxnorm.spec import ANALYSIS_DTYPES, ExperimentSpec

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


def build_parser(prog: str, description: str, experiment: Experiment) -> Parser:
  """The options of `experiment`'s script; a sweep (`Experiment.rates`) also takes --rates."""
  p = Parser(
    prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  if experiment.rates:
    p.add_argument(
      "--rates",
      type=_rate_list,
      default=experiment.rates,
      metavar="R1,R2,...",
      help="the learning rates; every model trains at each",
    )
  p.add_argument("--out", default=experiment.default_out, help="output folder")
  p.add_argument(
    "--preset",
    choices=sorted(PRESETS),
    help="start from this named configuration instead of the script's (equal_lr: the "
    "reference with every model at 1e-4; tiny: a shrunken task and model for smoke tests)",
  )
  quick_help = (
    f"smoke-run preset: {QUICK.steps} steps, {QUICK.landscape_points} landscape points, same "
    "task and model"
  )
  steps_help = "training steps per model"
  if experiment.dataset:  # a text data set counts epochs (`text_run`)
    quick = text_run.QUICK
    quick_help = (
      f"a CPU-sized run: {quick.epochs} epochs on {quick.train_examples} training and "
      f"{quick.test_examples} test examples (at most the data's), {QUICK.landscape_points} "
      "landscape points, same model"
    )
    steps_help = "not for a text data set: training counts --epochs"
  p.add_argument("--quick", action="store_true", help=quick_help)
  p.add_argument("--steps", type=_positive_int, help=steps_help)
  p.add_argument("--batch-size", type=_positive_int, help="examples per batch")
  p.add_argument("--seed", type=int, help="seed of every key in the run")
  p.add_argument("--norms", type=_norm_list, help="comma-separated normalizations")
  p.add_argument("--blocks", type=_positive_int, metavar="N", help="Transformer blocks")
  p.add_argument("--heads", type=_positive_int, metavar="H", help="attention heads per block")
  p.add_argument(
    "--norm-placement",
    choices=NORM_PLACEMENTS,
    help="post: norm after each residual sum (the reference's); pre: before each branch, "
    "with a final norm before the readout",
  )
  p.add_argument(
    "--readout",
    choices=READOUTS,
    help="the position read out: last (where the query sits) or first",
  )
  rate_help = (
    "every model's learning rate; drops the configuration's per-normalization rates "
    "(the reference trains No Norm at 5e-4) unless --lr-override sets some"
  )
  override_help = (
    "per-normalization learning rates that replace the common one, e.g. none=5e-4 "
    "(the reference's); an empty string: none"
  )
  if experiment.rates:  # parsed only to be refused in one line (check_sweep); not offered
    rate_help = override_help = argparse.SUPPRESS
  p.add_argument("--learning-rate", type=float, metavar="RATE", help=rate_help)
  p.add_argument("--lr-override", type=_rate_overrides, metavar="NORM=RATE,...", help=override_help)
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
    "(surfaces.png; the values go to results.npz), for every seed",
  )
  p.add_argument(
    "--measures",
    type=_families,
    default=argparse.SUPPRESS,
    metavar="LEVEL|F1,F2,...",
    help=f"what to measure beyond the reference's slice and spectrum: a level, "
    f"{_levels_help()}, 'none', or families from {', '.join(families_lib.FAMILIES)} "
    f"(docs/measures.md; default: "
    f"{','.join(experiment.measures) if experiment.measures else families_lib.DEFAULT_LEVEL})",
  )
  p.add_argument(
    "--no-measures",
    action="store_true",
    help="the same as --measures none",
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
    "--tensorboard",
    metavar="DIR",
    help="write every step's training loss (and the curvature that --curvature-iterations "
    "tracks) to TensorBoard event files in DIR/<norm>/seed_<seed> as training goes "
    "(pip install 'jaxnorm[tensorboard]'; docs/cli.md)",
  )
  p.add_argument(
    "--analysis-dtype",
    choices=ANALYSIS_DTYPES,
    default="float32",
    help="precision of the analysis (slices, spectrum, measures; training stays float32): "
    "float64 where float32 rounding is a visible part of a measure, e.g. slice rises of "
    "a few 1e-7 (docs/precision.md); several times the analysis time on a CPU",
  )
  several = p.add_argument_group(
    "several processes",
    "run over several processes or hosts with jax.distributed (docs/scaling.md: 'Several processes "
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
  if experiment.dataset:
    text_run.add_options(p)
  resume.add_options(p)
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
    "num_blocks": args.blocks,
    "num_heads": args.heads,
    "norm_placement": args.norm_placement,
    "readout": args.readout,
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


def spec_from_args(args: argparse.Namespace, experiment: Experiment) -> ExperimentSpec:
  """The experiment the options describe. Raises ValueError (config.FieldTypeError
  included) for options that make no valid spec."""
  return ExperimentSpec(
    config=config_from_args(args, experiment.config),
    num_seeds=args.seeds,
    name=experiment.name,
    title=experiment.title,
    predictions=experiment.predictions,
    measures=_measure_config(args, experiment.measures),
    surface_points=args.surface,
    seeds_per_call=args.seeds_per_call,
    matched_losses=args.matched_loss or (),
    curvature_iterations=args.curvature_iterations,
    analysis_dtype=args.analysis_dtype,
  )


def _families(text: str) -> str:
  """--measures' value, checked (`families.parse_families`) and kept as given."""
  try:
    families_lib.parse_families(text)
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None
  return text


def _levels_help() -> str:
  return "; ".join(f"{name} ({', '.join(f)})" for name, f in families_lib.LEVELS.items())


def _measure_config(
  args: argparse.Namespace, default: tuple[str, ...] | None = None
) -> MeasureConfig | None:
  """--measures / --no-measures as the spec's `measures` (None: the reference's only);
  without them the families `default` (None: the standard level)."""
  given = getattr(args, "measures", None)
  families = default or families_lib.LEVELS[families_lib.DEFAULT_LEVEL]
  if given is not None:
    families = families_lib.parse_families(given)
  if args.no_measures:
    if given is not None and families is not None:
      raise ValueError(f"--no-measures and --measures {given} contradict each other: give one")
    return None
  return None if families is None else MeasureConfig(families=families)


def _rate_list(text: str) -> tuple[float, ...]:
  try:
    return sweep.check_rates(float(r) for r in _norm_list(text))
  except ValueError as e:
    raise argparse.ArgumentTypeError(str(e)) from None


def _given(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> set[str]:
  """The options (argparse destinations) that `argv` gives, whatever their value."""
  unset = object()
  probe = copy.deepcopy(parser)
  probe.set_defaults(**{dest: unset for dest in vars(parser.parse_args([]))})
  return {dest for dest, value in vars(probe.parse_args(argv)).items() if value is not unset}


def check_replot(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> None:
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


def processes_of(
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


def check_sweep(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
  """A sweep's options set no common learning rate: --rates does."""
  if args.learning_rate is not None or args.lr_override is not None:
    parser.error("--learning-rate and --lr-override do not apply to a sweep: use --rates")
