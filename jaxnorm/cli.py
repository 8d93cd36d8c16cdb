"""The command line shared by the experiment scripts: options -> Config -> run -> save ->
plot -> table. Bad options exit with status 2 and one line; a diverged model, with 1."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from jaxnorm import experiment, measures, plotting, report, results, runtime
from jaxnorm.config import QUICK, Config

EXIT_DIVERGED = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
  def error(self, message: str):  # one line, no usage dump, no traceback
    self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
  if value < 1:
    raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
  return value


def _norm_list(text: str) -> tuple[str, ...]:
  return tuple(name.strip() for name in text.split(",") if name.strip())


def build_parser(prog: str, description: str, default_out: str) -> argparse.ArgumentParser:
  p = _Parser(
    prog=prog, description=description, formatter_class=argparse.ArgumentDefaultsHelpFormatter
  )
  p.add_argument("--out", default=default_out, help="output folder")
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
  return p


def config_from_args(args: argparse.Namespace, default: Config) -> Config:
  """`default` (or QUICK's step counts with --quick) with the given options applied."""
  cfg = default
  if args.quick:
    cfg = cfg.replace(steps=QUICK.steps, landscape_points=QUICK.landscape_points)
  changes = {
    "steps": args.steps,
    "batch_size": args.batch_size,
    "seed": args.seed,
    "norms": args.norms,
    "landscape_points": args.landscape_points,
    "landscape_range": args.landscape_range,
  }
  cfg = cfg.replace(**{k: v for k, v in changes.items() if v is not None})
  if args.landscape_cumulative:
    cfg = cfg.replace(landscape_cumulative=True)
  return cfg


def _cell(value) -> str:
  """A scalar, or mean ± 95% CI half-width for a value summarized across seeds."""
  if isinstance(value, dict):
    mean, (low, high) = value["mean"], value["ci95"]
    if mean is None:
      return "nan"
    return f"{mean:.4g}" if low is None else f"{mean:.4g} ± {(high - low) / 2:.2g}"
  return "nan" if value is None else f"{value:.4g}"


def format_table(summary: dict) -> str:
  """Per normalization: final loss, landscape rise, spectrum ratio, train time. With
  several seeds each cell is the mean ± the half-width of its 95% confidence interval."""
  columns = (
    ("final loss", "final_loss"),
    ("landscape rise", "landscape_max_rise"),
    ("s_max/s_min", "spectrum_top_bottom_ratio"),
  )
  width = 22 if summary.get("seeds", 1) > 1 else 15
  header = f"{'normalization':<16}" + "".join(f"{c:>{width}}" for c, _ in columns)
  header += f"{'train s':>10}"
  rows = [header, "-" * len(header)]
  for norm, s in summary["norms"].items():
    cells = "".join(f"{_cell(s[key]):>{width}}" for _, key in columns)
    rows.append(f"{plotting.label(norm):<16}{cells}{s['seconds']['train']:>10.1f}")
  return "\n".join(rows)


def replot(out_dir: str, title: str) -> int:
  arrays, summary = results.load(out_dir)
  paths = plotting.save_figure(plotting.figure2(arrays, title), Path(out_dir) / "figure2")
  print(format_table(summary))
  print("figure:", ", ".join(map(str, paths)))
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
  if args.replot:
    try:
      return replot(args.replot, title)
    except FileNotFoundError as e:
      parser.error(str(e))
  try:
    cfg = config_from_args(args, default)
  except ValueError as e:
    parser.error(str(e))
  out = Path(args.out)
  print(f"{name}: {len(cfg.norms)} models x {cfg.steps} steps; results -> {out.resolve()}")
  runtime.enable_compilation_cache()
  start = time.perf_counter()
  runs = experiment.run(
    cfg, args.seeds, seeds_per_call=args.seeds_per_call, progress=not args.no_progress
  )
  norms = {norm: experiment.summarize(cfg, norm, r) for norm, r in runs.items()}
  if not args.no_measures:
    for norm, r in tqdm(runs.items(), desc="measures", disable=args.no_progress):
      t0 = time.perf_counter()
      per_seed = measures.measure(cfg, norm, r.variables, r.seeds)
      norms[norm]["measures"] = experiment.across_seeds_all(per_seed)
      norms[norm]["seconds"]["measures"] = time.perf_counter() - t0
  summary = {
    "experiment": name,
    "config": results.config_to_dict(cfg),
    "seeds": args.seeds,
    "norms": norms,
    "seconds": {"total": time.perf_counter() - start},
    "environment": results.environment(),
  }
  arrays = {norm: experiment.arrays(cfg, r) for norm, r in runs.items()}
  results.save(out, arrays, summary, {n: experiment.variables(r) for n, r in runs.items()})
  paths = plotting.save_figure(plotting.figure2(arrays, title), out / "figure2")
  print(format_table(summary))
  print("figure:", ", ".join(map(str, paths)))
  if args.surface:
    grids = {n: experiment.surface(cfg, n, r, args.surface) for n, r in runs.items()}
    flat = {
      f"{n}/{k}": v
      for n, g in grids.items()
      for k, v in zip(("alphas", "betas", "loss"), g, strict=True)
    }
    results.atomic_write(out / "surfaces.npz", lambda f: np.savez(f, **flat))
    plotting.save_figure(plotting.surfaces(grids), out / "surfaces", formats=("png",))
    print("2D slices:", out / "surfaces.png")
  if not args.no_measures:
    labels = {n: plotting.label(n) for n in cfg.norms}
    text = report.markdown(summary, list(predictions), labels)
    results.atomic_write(out / "measures.md", lambda f: f.write(text.encode()))
    print("measures:", out / "measures.md")
  diverged = False
  for norm, r in runs.items():
    for seed, step in zip(r.seeds, r.first_nonfinite_step, strict=True):
      if step is not None:
        diverged = True
        print(
          f"WARNING: {plotting.label(norm)} (seed {seed}) diverged: loss non-finite "
          f"from step {step}",
          file=sys.stderr,
        )
  return EXIT_DIVERGED if diverged else 0
