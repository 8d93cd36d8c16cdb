"""Side-by-side timings of jaxnorm on the current JAX device, written to BENCHMARKS.md.

    python benchmarks/bench.py            # about 10 minutes on 2 CPU cores
    python benchmarks/bench.py --quick    # fewer steps and repeats

Everything is measured in one run, medians over repeats, and reported as ratios next to the
absolute times (absolute seconds on a shared machine are noisy; ratios much less so):

* the machine's dense float32 matrix-product throughput (GFLOP/s), the compute limit;
* per-step training time at the reference configuration for each normalization: jaxnorm's
  exact fast path, its full path (the reference's computation), and the PyTorch reference
  loop (`tests/torch_reference.py`, batch drawn per step as in the notebook) when torch is
  installed; XLA's FLOPs per step and the fraction of the compute limit reached;
* compile time of the training loop, the 40-point landscape slice and the spectrum;
* Experiment 2 at the default configuration, projected from the per-step times measured
  here plus the measured compile and analysis times, against the reference loop;
* K seeds trained at once (vmap) against K single runs.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import config, data, landscape, loss, model, pipeline, spectrum, train

ROOT = Path(__file__).resolve().parents[1]
NORMS = ("layernorm", "batchnorm", "none")


def median_time(fn, repeats: int) -> float:
  """Median wall time of fn() in seconds; fn must block until its result is ready."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def matmul_gflops(repeats: int, n: int = 1024) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  return 2 * n**3 / median_time(lambda: f(a).block_until_ready(), repeats) / 1e9


def step_flops(cfg, norm, fast) -> float:
  m = model.build(cfg, norm)
  state = train.init_state(m, cfg.task, jax.random.key(0), cfg.learning_rate_for(norm))
  tokens, labels = data.batch(jax.random.key(1), cfg)
  f = jax.jit(lambda s, t, y: train.train_step(m, s, t, y, fast))
  cost = f.lower(state, tokens, labels).compile().cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


def jax_train_timing(cfg, norm, fast, chunk, repeats):
  """(compile seconds, seconds per step) of the scanned training loop."""
  m = model.build(cfg, norm)
  state = train.init_state(m, cfg.task, jax.random.key(0), cfg.learning_rate_for(norm))
  steps = jax.jit(train.train_steps, static_argnums=(0, 1, 3, 4), donate_argnums=(2,))
  start = time.perf_counter()
  state, losses = steps(m, cfg.task, state, chunk, fast)
  losses.block_until_ready()
  first = time.perf_counter() - start
  box = [state]

  def run():
    box[0], losses = steps(m, cfg.task, box[0], chunk, fast)
    losses.block_until_ready()

  per_step = median_time(run, repeats) / chunk
  return first - chunk * per_step, per_step


def torch_step_time(cfg, norm, steps):
  sys.path.insert(0, str(ROOT / "tests"))
  import torch  # noqa: F401
  import torch_reference as ref

  torch.set_num_threads(os.cpu_count() or 1)
  m = ref.make_model(cfg, norm, seed=0)
  opt = ref.make_optimizer(m, cfg.learning_rate_for(norm))
  rng = np.random.default_rng(0)
  batches = lambda n: (ref.generate_batch(cfg, rng) for _ in range(n))  # noqa: E731
  ref.train_steps(m, opt, batches(3))  # warm up
  times = []
  for _ in range(3):
    start = time.perf_counter()
    ref.train_steps(m, opt, batches(steps))
    times.append((time.perf_counter() - start) / steps)
  return statistics.median(times)


def analysis_timing(cfg, norm, repeats):
  """(compile s, run s) for the landscape slice and for the spectrum."""
  m = model.build(cfg, norm)
  state = train.init_state(m, cfg.task, jax.random.key(0), 1e-4)
  tokens, labels = data.batch(jax.random.key(1), cfg)
  d = landscape.random_direction(jax.random.key(2), state.params)
  offs = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  slice_fn = jax.jit(
    lambda p, b: landscape.loss_slice(loss.eval_loss_fn(m, b, tokens, labels), p, d, offs)
  )
  spectrum_fn = jax.jit(lambda p, b: spectrum.activation_spectrum(m, p, b, tokens))
  sl = lambda: slice_fn(state.params, state.batch_stats).block_until_ready()  # noqa: E731
  sp = lambda: spectrum_fn(state.params, state.batch_stats).block_until_ready()  # noqa: E731
  out = []
  for f in (sl, sp):
    start = time.perf_counter()
    f()
    first = time.perf_counter() - start
    run = median_time(f, repeats)
    out.append((first - run, run))
  return out


def seeds_timing(cfg, norm, k, steps):
  """Seconds for K seeds in one vmapped run, and for K single runs (compile excluded)."""
  cfg = cfg.replace(steps=steps, norms=(norm,))

  def run(num_seeds):
    spec = pipeline.ExperimentSpec(cfg, num_seeds=num_seeds, measures=None, chunk_size=steps)
    pipeline.run_norm(spec, norm, progress=False)

  run(k)
  run(1)
  many = median_time(lambda: run(k), 2)
  one = median_time(lambda: run(1), 2)
  return many, k * one


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


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="fewer steps and repeats")
  parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
  args = parser.parse_args()
  cfg = config.PAPER
  chunk, repeats = (10, 3) if args.quick else (40, 5)
  lines = [
    f"# Benchmarks\n\nMachine: {machine()}\n",
    f"Command: `python benchmarks/bench.py{' --quick' if args.quick else ''}`; "
    f"reference configuration (batch {cfg.batch_size}, D = {cfg.embed_dim}, "
    f"L = {cfg.seq_len}); medians over {repeats} repeats of {chunk} scanned steps.\n",
  ]
  gflops = matmul_gflops(repeats)
  lines.append(f"Dense float32 matmul throughput (1024^3): {gflops:.0f} GFLOP/s.\n")
  try:
    import torch  # noqa: F401

    have_torch = True
  except ImportError:
    have_torch = False
  rows, projected_jax, projected_ref = [], 0.0, 0.0
  for norm in NORMS:
    fast_compile, fast_step = jax_train_timing(cfg, norm, True, chunk, repeats)
    full_compile, full_step = jax_train_timing(cfg, norm, False, chunk, repeats)
    flops_fast, flops_full = step_flops(cfg, norm, True), step_flops(cfg, norm, False)
    ref_step = torch_step_time(cfg, norm, max(chunk // 2, 5)) if have_torch else float("nan")
    (sl_c, sl_r), (sp_c, sp_r) = analysis_timing(cfg, norm, repeats)
    projected_jax += fast_compile + cfg.steps * fast_step + sl_c + sl_r + sp_c + sp_r
    projected_ref += cfg.steps * ref_step
    limit_full = flops_full / (gflops * 1e9)
    rows.append(
      (
        norm,
        fast_step,
        full_step,
        ref_step,
        flops_fast,
        flops_full,
        limit_full,
        fast_compile,
        sl_c,
        sl_r,
        sp_c,
        sp_r,
      )
    )
    print(
      f"{norm}: fast {fast_step * 1e3:.1f} ms, full {full_step * 1e3:.1f} ms, "
      f"torch {ref_step * 1e3:.1f} ms",
      flush=True,
    )
  lines += [
    "## Training step\n",
    "| norm | fast ms/step | full ms/step | PyTorch ms/step | full/fast | PyTorch/fast "
    "| GFLOP fast | GFLOP full | full: compute limit ms | full: fraction of limit |",
    "|---|---|---|---|---|---|---|---|---|---|",
  ]
  for norm, fs, fu, rs, ff, fl, lim, *_ in rows:
    lines.append(
      f"| {norm} | {fs * 1e3:.1f} | {fu * 1e3:.1f} | {rs * 1e3:.1f} | {fu / fs:.1f}x "
      f"| {rs / fs:.1f}x | {ff / 1e9:.3f} | {fl / 1e9:.3f} | {lim * 1e3:.1f} "
      f"| {lim / fu:.2f} |"
    )
  lines += [
    "\n## Compile and analysis (seconds)\n",
    "| norm | train loop compile | slice compile | slice (40 points) | spectrum compile "
    "| spectrum |",
    "|---|---|---|---|---|---|",
  ]
  for norm, *_, fc, slc, slr, spc, spr in rows:
    lines.append(f"| {norm} | {fc:.1f} | {slc:.1f} | {slr:.3f} | {spc:.1f} | {spr:.3f} |")
  lines += [
    "\n## Experiment 2 at the default configuration (3 models x 4000 steps)\n",
    "Projected from the per-step times above plus measured compile and analysis "
    "times (no persistent cache):\n",
    f"- jaxnorm: {projected_jax:.0f} s",
    f"- PyTorch reference loop: {projected_ref:.0f} s (training only)",
    f"- ratio: {projected_ref / projected_jax:.1f}x\n",
  ]
  k, steps = 8, chunk
  many, singles = seeds_timing(cfg, "layernorm", k, steps)
  lines += [
    f"## Seeds (LayerNorm, {steps} steps each, compile excluded)\n",
    f"- {k} seeds in one vmapped run: {many:.2f} s",
    f"- {k} single runs: {singles:.2f} s",
    f"- ratio: {singles / many:.2f}x\n",
  ]
  text = "\n".join(lines) + "\n"
  Path(args.out).write_text(text)
  print(text)
  return 0


if __name__ == "__main__":
  sys.exit(main())
