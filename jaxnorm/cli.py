"""The command line shared by the experiment scripts: options -> ExperimentSpec ->
`pipeline.run` -> save, plot, report -> exit status. Bad options exit with status 2 and
one line; a diverged model, with 1."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from jaxnorm import pipeline, plotting, report, results, runtime
from jaxnorm.config import MATMUL_PRECISIONS, PRESETS, QUICK, Config
from jaxnorm.measures import MeasureConfig

EXIT_DIVERGED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, no usage dump, no traceback
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


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


def build_parser(prog: str, description: str, default_out: str) -> argparse.ArgumentParser:
  p = _Parser(
    prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument("--out", default=default_out, help="output folder")
  p.add_argument(
    "--preset",
    choices=sorted(PRESETS),
    help="start from this named configuration instead of the script's (tiny: a shrunken "
    "task and model for smoke tests)",
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
  )


def _print_outputs(result: pipeline.ExperimentResult, paths: list[Path]) -> None:
  print(report.terminal_table(result))
  print("figure:", ", ".join(map(str, paths)))


def replot(out_dir: str, title: str) -> int:
  result = results.load(out_dir)
  result = result._replace(spec=dataclasses.replace(result.spec, title=title))
  paths = plotting.save_figure(plotting.figure2(result), Path(out_dir) / "figure2")
  _print_outputs(result, paths)
  return 0


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
  """Parses `argv`, runs the experiment, saves results, figure and measures; exit status."""
  parser = build_parser(prog, description, default_out)
  args = parser.parse_args(argv)
  if args.replot is not None:
    if not args.replot:
      parser.error("--replot needs a folder, got an empty string")
    try:
      return replot(args.replot, title)
    except results.ResultsError as e:
      parser.error(str(e))
  try:
    spec = spec_from_args(args, default, name, title, predictions)
  except ValueError as e:
    parser.error(str(e))
  out = Path(args.out)
  cfg = spec.config
  print(f"{name}: {len(cfg.norms)} models x {cfg.steps} steps; results -> {out.resolve()}")
  if not args.no_compilation_cache:
    runtime.enable_compilation_cache()
  result = pipeline.run(spec, progress=not args.no_progress, compile_workers=args.compile_workers)
  results.save(out, result)
  paths = plotting.save_figure(plotting.figure2(result), out / "figure2")
  _print_outputs(result, paths)
  if spec.surface_points:
    plotting.save_figure(plotting.surfaces(result), out / "surfaces", formats=("png",))
    print("2D slices:", out / "surfaces.png")
  if spec.measures is not None:
    text = report.markdown(result)
    results.atomic_write(out / "measures.md", lambda f: f.write(text.encode()))
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
  return EXIT_DIVERGED if diverged else 0
