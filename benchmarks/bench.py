"""jaxnorm against the reference notebook's PyTorch code on the same device, side by side.

    python benchmarks/bench.py                          # the reference configuration
    python benchmarks/bench.py --steps 400              # shorter whole runs
    python benchmarks/bench.py --preset tiny --steps 5 --rounds 1 --skip deep   # a smoke run
    python benchmarks/bench.py --skip whole,compile,measures,step --depths 1,2,4,6  # deep only

Everything is measured in one run, on whatever device JAX uses (PyTorch on CUDA when JAX is
on a GPU, else the CPU), and printed as Markdown tables (also written to --out):

1. Whole Experiment 2, each as a fresh process, in this order: `experiments/exp2.py` with an
   empty persistent compilation cache, the reference (`benchmarks/reference_exp2.py`),
   `exp2.py` again with the cache it just filled, and `exp2.py --seeds K` with an empty
   cache; and the XLA compile time of each program inside the first (JAX_LOG_COMPILES=1).
2. Compile time of every program of a run, per normalization: trace and lower, then XLA
   compile, ahead of time (`jit(...).lower(...).compile()`), persistent cache off; before
   anything else has compiled in this process.
3. What each measure costs, per normalization: one seed's analysis program with each
   selection of measures (`jaxnorm.families`: the reference's slice and spectrum alone, each
   family beside them, each level, a 2D slice), run and compile seconds, and the tracked
   curvature's cost per training chunk (`measure_prices`).
4. Training step, per normalization: jaxnorm's compiled chunk of steps (`programs.train_chunk`,
   one seed) against the notebook's loop (`jaxnorm/torch_reference.py`: per-example batch
   generator, `loss.item()` every step), timed alternately in R rounds (jaxnorm, PyTorch,
   jaxnorm, PyTorch, ...); the minimum of the rounds.
5. The deep model (`config.DEEP`, `--depths`; `benchmarks/bench_deep.py`): its training step
   with the blocks as one scan and unrolled, against the deep PyTorch reference, alternately,
   the median round; the compile time of its training and analysis programs both ways.

Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_deep
import jax
import jax.numpy as jnp
import timing

from jaxnorm import analysis, config, families, keys, landscape, programs
from jaxnorm import model as model_lib
from jaxnorm import spec as spec_lib

ROOT = Path(__file__).resolve().parents[1]


def machine() -> str:
  cpu = platform.processor() or "unknown CPU"
  try:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
      if line.startswith("model name"):
        cpu = line.split(":", 1)[1].strip()
        break
  except OSError:
    pass
  dev = jax.devices()[0]
  return (
    f"{dev.platform} device: {dev.device_kind}; host: {cpu}, {os.cpu_count()} cores; "
    f"jax {jax.__version__}, Python {platform.python_version()}"
  )


def step_times(cfg: config.Config, norm: str, chunk: int, rounds: int) -> tuple[float, float]:
  """(jaxnorm, PyTorch) seconds per training step: minimum over alternating rounds."""
  from jaxnorm import torch_reference as ref

  m = model_lib.build(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)

  def train(states):
    with jax.default_matmul_precision(cfg.matmul_precision):
      return programs.train_chunk(m, cfg.task, states, chunk)

  with jax.default_matmul_precision(cfg.matmul_precision):
    jaxnorm_run = timing.jax_chunk(train, programs.init_states(m, cfg.task, k.train, lr))
  jaxnorm_run()  # compile, warm up
  torch_run = timing.torch_chunk(ref.make_model(cfg, norm, seed=0), cfg, norm, chunk)
  seconds = timing.alternate({"jaxnorm": jaxnorm_run, "torch": torch_run}, rounds)
  return min(seconds["jaxnorm"]) / chunk, min(seconds["torch"]) / chunk


def compile_times(cfg: config.Config, norm: str, chunk: int) -> dict[str, tuple[float, float]]:
  """Program name -> (trace and lower seconds, XLA compile seconds) for one seed."""
  m = model_lib.build(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  out = {}
  with jax.default_matmul_precision(cfg.matmul_precision):
    state = jax.eval_shape(lambda: programs.init_states(m, cfg.task, k.train, lr))
    for name, program, args in (
      ("init_states", programs.init_states, (m, cfg.task, k.train, lr)),
      ("train_chunk", programs.train_chunk, (m, cfg.task, state, chunk)),
      (
        "analyze_seeds",
        analysis.analyze_seeds,
        (m, cfg.task, families.MeasureConfig(), state.params, state.batch_stats, k, alphas, alphas),
      ),
    ):
      out[name] = timing.lower_and_compile(program, *args)[:2]
  return out


def measure_prices(
  cfg: config.Config, norm: str, steps: int, rounds: int, surface: int, chunk: int
) -> dict[str, tuple[float, float]]:
  """Row -> (run seconds, XLA compile seconds) of one seed's analysis program for each
  selection of measures (`families.LEVELS`, each family with the reference's slice and
  spectrum, a 2D slice), at a model trained `steps` steps; run time is the minimum over
  `rounds` calls. Also "curvature over training": one `chunk`-step training program with
  the tracked curvature (20 Lanczos steps) against the plain one, both timed alike."""
  m = model_lib.build(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  with jax.default_matmul_precision(cfg.matmul_precision):
    state = programs.init_states(m, cfg.task, k.train, lr)
    for _ in range(max(steps // chunk, 0)):
      state, _ = programs.train_chunk(m, cfg.task, state, chunk)
  offsets, alphas, grid = programs.slice_axes(spec_lib.ExperimentSpec(cfg, surface_points=surface))
  selections = {"reference's slice and spectrum (--measures none)": (None, None)}
  selections |= {
    f"family {f}": (families.MeasureConfig(families=(f,)), None) for f in families.FAMILIES
  }
  selections |= {
    f"level {name}": (families.MeasureConfig(families=f), None)
    for name, f in families.LEVELS.items()
  }
  selections[f"2D slice, {surface} x {surface} (--surface {surface})"] = (None, grid)
  out, done = {}, {}
  for name, (measure_config, surface_grid) in selections.items():
    if (measure_config, surface_grid is None) in done:  # the same program as an earlier row
      out[name] = out[done[measure_config, surface_grid is None]]
      continue
    done[measure_config, surface_grid is None] = name
    args = (state.params, state.batch_stats, k, offsets, alphas, surface_grid)
    with jax.default_matmul_precision(cfg.matmul_precision):
      start = time.perf_counter()
      compiled = analysis.analyze_seeds.lower(m, cfg.task, measure_config, *args).compile()
      compile_s = time.perf_counter() - start
      run_s = []
      for _ in range(rounds):
        start = time.perf_counter()
        timing.sync(compiled(*args))
        run_s.append(time.perf_counter() - start)
    out[name] = (min(run_s), compile_s)
    print(f"  {norm}: {name}: run {min(run_s):.2f} s, compile {compile_s:.2f} s", flush=True)
  tracked = _curvature_price(cfg, m, state, k, chunk, rounds)
  out[f"curvature over training, per {chunk}-step chunk (--curvature-iterations 20)"] = tracked
  return out


def _curvature_price(cfg, m, state, k, chunk: int, rounds: int) -> tuple[float, float]:
  """(run, compile) seconds the tracked curvature adds to one training chunk."""
  times = {}
  for iterations in (0, 20):
    with jax.default_matmul_precision(cfg.matmul_precision):
      if iterations:
        program = programs.train_chunk_tracked
        extra = (chunk, True, iterations, k.curvature)
      else:
        program, extra = programs.train_chunk, (chunk, True)
      start = time.perf_counter()
      compiled = program.lower(m, cfg.task, state, *extra).compile()
      compile_s = time.perf_counter() - start
      dynamic = (k.curvature,) if iterations else ()
      run_s = []
      for _ in range(rounds):
        copy = jax.tree.map(jnp.copy, state)  # the program donates its states
        timing.sync(copy)
        start = time.perf_counter()
        timing.sync(compiled(copy, *dynamic))
        run_s.append(time.perf_counter() - start)
    times[iterations] = (min(run_s), compile_s)
  return times[20][0] - times[0][0], times[20][1] - times[0][1]


def _timed_process(
  name: str, argv: list[str], env: dict[str, str], timeout: float, logs: Path | None
) -> float | str:
  """Wall seconds of a fresh process, or why it has none; its output goes to logs/name.log."""
  start = time.perf_counter()
  try:
    proc = subprocess.run(
      argv, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout, check=False
    )
  except subprocess.TimeoutExpired:
    return f"timed out after {timeout:.0f} s"
  seconds = time.perf_counter() - start
  if logs is not None:
    (logs / f"{name}.log").write_text(proc.stdout + proc.stderr)
  if proc.returncode != 0:
    return f"exit status {proc.returncode}"
  return seconds


def compile_log(text: str) -> dict[str, float]:
  """Program -> summed XLA compile seconds, from a JAX_LOG_COMPILES=1 log."""
  total: dict[str, float] = {}
  for name, seconds in re.findall(r"Finished XLA compilation of (\S+) in ([0-9.e+-]+) sec", text):
    total[name] = total.get(name, 0.0) + float(seconds)
  return total


def whole_runs(args, tmp: Path, logs: Path | None) -> dict[str, float | str]:
  """Wall seconds of whole fresh processes (see the module docstring, item 1)."""
  env = {**os.environ, "PYTHONUNBUFFERED": "1"}
  exp2 = [sys.executable, "experiments/exp2.py", "--no-progress", "--steps", str(args.steps)]
  exp2 += ["--preset", args.preset] + (["--norms", args.norms] if args.norms else [])
  reference = [sys.executable, "benchmarks/reference_exp2.py", "--device", timing.torch_device()]
  reference += ["--steps", str(args.steps), "--preset", args.preset]
  reference += ["--norms", args.norms] if args.norms else []
  t = args.timeout
  cold = {**env, "JAXNORM_CACHE_DIR": str(tmp / "cache"), "JAX_LOG_COMPILES": "1"}
  warm = {**cold, "JAX_LOG_COMPILES": "0"}
  seeds_env = {**env, "JAXNORM_CACHE_DIR": str(tmp / "cache_seeds")}
  runs = {
    "jaxnorm, empty cache": _timed_process(
      "exp2_cold", exp2 + ["--out", str(tmp / "a")], cold, t, logs
    ),
    "reference": _timed_process("reference", reference, env, t, logs),
    "jaxnorm, warm cache": _timed_process(
      "exp2_warm", exp2 + ["--out", str(tmp / "b")], warm, t, logs
    ),
  }
  if args.seeds:
    runs[f"jaxnorm --seeds {args.seeds}, empty cache"] = _timed_process(
      "exp2_seeds", exp2 + ["--seeds", str(args.seeds), "--out", str(tmp / "c")], seeds_env, t, logs
    )
  return runs


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="paper", choices=sorted(config.PRESETS))
  p.add_argument("--norms", help="comma-separated; default: the preset's")
  p.add_argument("--steps", type=int, help="training steps of the whole runs (default: preset's)")
  p.add_argument("--chunk", type=int, default=100, help="steps per timed training chunk")
  p.add_argument("--rounds", type=int, default=5, help="alternating rounds per step timing")
  p.add_argument("--seeds", type=int, default=8, help="K of the --seeds K whole run (0: none)")
  p.add_argument("--timeout", type=float, default=900, help="seconds allowed per whole run")
  p.add_argument(
    "--skip",
    default="",
    help="comma-separated sections to skip: step,compile,whole,measures,deep",
  )
  p.add_argument(
    "--depths",
    default=str(config.DEEP.num_blocks),
    help="comma-separated block counts of the deep section (default: the deep preset's)",
  )
  p.add_argument(
    "--price-steps", type=int, default=400, help="training steps before the measures are priced"
  )
  p.add_argument("--out", help="also write the report to this Markdown file")
  p.add_argument("--logs", help="folder for the whole runs' output (and summary.json files)")
  args = p.parse_args()
  cfg = config.PRESETS[args.preset]
  if args.norms:
    cfg = cfg.replace(norms=tuple(args.norms.split(",")))
  args.steps = args.steps or cfg.steps
  skip = set(args.skip.split(",")) - {""}

  def save(lines: list[str]) -> None:
    """Writes the tables so far to --out: a run cut short still leaves its finished ones."""
    if args.out:
      Path(args.out).write_text("\n".join(lines) + "\n")

  lines = [
    f"Machine: {machine()}; PyTorch device: {timing.torch_device()}.",
    "",
    f"Command: `python benchmarks/bench.py {' '.join(sys.argv[1:])}`; preset {args.preset} "
    f"(batch {cfg.batch_size}, D = {cfg.embed_dim}, L = {cfg.seq_len}), "
    f"matmul precision {cfg.matmul_precision}.",
    "",
  ]
  if "whole" not in skip:
    logs = Path(args.logs) if args.logs else None
    if logs:
      logs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
      runs = whole_runs(args, Path(tmp), logs)
      if logs and (Path(tmp) / "a" / "summary.json").is_file():
        shutil.copy(Path(tmp) / "a" / "summary.json", logs / "summary_cold.json")
    ref_s = runs["reference"]
    lines += [
      f"Whole Experiment 2 ({len(cfg.norms)} models x {args.steps} steps, measures on for "
      "jaxnorm; fresh processes, wall seconds):",
      "",
      "| run | seconds | reference / this |",
      "|---|---|---|",
    ]
    for name, s in runs.items():
      ratio = f"{ref_s / s:.2f}x" if isinstance(s, float) and isinstance(ref_s, float) else "-"
      lines.append(f"| {name} | {s if isinstance(s, str) else f'{s:.1f}'} | {ratio} |")
    if logs and (logs / "exp2_cold.log").is_file():
      compiled = compile_log((logs / "exp2_cold.log").read_text())
      top = sorted(compiled.items(), key=lambda kv: -kv[1])[:6]
      lines += [
        "",
        f"XLA compile seconds inside the empty-cache run (JAX_LOG_COMPILES=1; all programs: "
        f"{sum(compiled.values()):.1f} s, overlapping in threads): "
        + ", ".join(f"{name} {sec:.1f}" for name, sec in top),
      ]
    lines.append("")
    save(lines)
  if "compile" not in skip:
    lines += [
      "Compile time per program (s; trace + lower / XLA compile; one seed, measures at the "
      f"default level, {families.DEFAULT_LEVEL}):",
      "",
      "| norm | init_states | train_chunk | analyze_seeds |",
      "|---|---|---|---|",
    ]
    for norm in cfg.norms:
      times = compile_times(cfg, norm, args.chunk)
      cells = " | ".join(f"{a:.2f} / {b:.2f}" for a, b in times.values())
      lines.append(f"| {norm} | {cells} |")
      print(lines[-1], flush=True)
    lines.append("")
    save(lines)
  if "measures" not in skip:
    prices = {
      norm: measure_prices(cfg, norm, args.price_steps, args.rounds, 15, args.chunk)
      for norm in cfg.norms
    }
    rows = list(next(iter(prices.values())))
    lines += [
      "What each measure costs (s; run / trace, lower and XLA compile of one seed's analysis "
      f"program, the "
      f"minimum of {args.rounds} runs, persistent cache off; models trained "
      f"{args.price_steps} steps). A family's row is the analysis with only that family "
      "beside the reference's slice and spectrum (subtract the first row for the family's "
      'own cost); "batch_stats" alone adds only the loss with batch statistics, its cost '
      "is level all against level all without it (`--measures isotropy,slices,sharpness,"
      "hessian`), which the rows of levels bound:",
      "",
      "| measures | " + " | ".join(cfg.norms) + " |",
      "|---|" + "---|" * len(cfg.norms),
    ]
    for row in rows:
      cells = " | ".join(f"{prices[n][row][0]:.2f} / {prices[n][row][1]:.2f}" for n in cfg.norms)
      lines.append(f"| {row} | {cells} |")
    lines.append("")
    save(lines)
  if "step" not in skip:
    lines += [
      f"Training step (ms; minimum of {args.rounds} alternating rounds of {args.chunk} steps):",
      "",
      "| norm | jaxnorm | reference PyTorch loop | ratio |",
      "|---|---|---|---|",
    ]
    for norm in cfg.norms:
      jax_s, torch_s = step_times(cfg, norm, args.chunk, args.rounds)
      lines.append(f"| {norm} | {jax_s * 1e3:.2f} | {torch_s * 1e3:.2f} | {torch_s / jax_s:.1f}x |")
      print(lines[-1], flush=True)
    lines.append("")
    save(lines)
  if "deep" not in skip:
    deep = config.DEEP.replace(norms=cfg.norms) if args.norms else config.DEEP
    depths = [int(d) for d in args.depths.split(",")]
    lines += bench_deep.section(deep, depths, args.chunk, args.rounds) + [""]
    save(lines)
  save(lines)
  print("\n".join(lines))
  print(json.dumps({"done": True}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
