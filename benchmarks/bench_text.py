"""Experiment 4's training step, jaxnorm against the reference's PyTorch loop, and what the
full run would take.

    python benchmarks/bench_text.py --out bench_text.md      # Experiment 4's sizes
    python benchmarks/bench_text.py --tiny                   # a smoke run (seconds)

Experiment 4 (`predictions.EXP4`) trains three 6-block post-norm Transformers (D = 128, 4
heads, no positional encoding, position 0 read out into 4 classes) on AG News, 30,522-token
vocabulary (distilbert-base-uncased), 128 tokens per text, batch 256, Adam at 2e-4, 15 epochs
of 469 steps: 7,035 steps per model. The cost of a step does not depend on the text, so the
data here are random token ids and labels of the real shapes, N examples held in memory
(`--examples`): by default AG News' 120,000 training rows, because jaxnorm draws each
epoch's permutation of all N rows on the device (once an epoch, `train.train_epoch_steps_seeds`),
a cost that grows with N (4 batches in the smoke run).

For each normalization (`--norms`, default layernorm, l2, none):

- jaxnorm: the training program a run compiles (`programs.train_text_chunk`, one seed,
  `--chunk` steps per call, `model.build_for_training`: the blocks unrolled), compiled ahead
  of time (trace and lower / XLA compile seconds, reported apart); each step takes its
  batch from the epoch's permutation of the N rows (drawn on the device when the epoch or the
  call starts) and gathers it from the token array.
- PyTorch: the reference's model (`torch_reference.make_deep_model`), Adam
  (`make_optimizer`) and step (`train_steps`: forward, `nn.CrossEntropyLoss`, backward,
  optimizer step, `loss.item()`) on a (B, L) int64 batch gathered from an int64 token tensor
  in memory with a fresh `torch.randperm` of the N rows each epoch (what the reference's
  shuffling DataLoader gives; the gather counted, no Python DataLoader); PyTorch's default
  thread count, on the device JAX uses (`timing.torch_device`).
- Both after warm-up (jaxnorm: its first chunk; PyTorch: 3 steps), timed in `--rounds`
  interleaved rounds of `--chunk` steps (jaxnorm, PyTorch, jaxnorm, ...; `timing.alternate`):
  ms per step, the median round and the range of rounds; the ratio of the medians.

Then the estimate of the full reference run: 15 epochs x ceil(120,000 / B) steps (7,035 at
B = 256) times each model's median step, summed over the models, for each framework; the
training steps alone. And each model's parameter count (the PyTorch model must have as
many: else it is refused, before anything is timed) and FLOPs of one step: XLA's cost
analysis of one jitted `train.weighted_train_step` (the chunk is a loop, whose body XLA
counts once) and the matrix products of that step's jaxpr, 2 m n k each, a scan's body
times its length (`matmul_flops`), beside the "about 270 GFLOP per training step" estimated for
Experiment 4.

Nothing else should run on the machine meanwhile.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import bench
import bench_deep
import jax
import jax.numpy as jnp
import numpy as np
import profile_step
import timing

from jaxnorm import config, data, keys, predictions, programs, train
from jaxnorm import model as model_lib

# Experiment 4's data and schedule: AG News' training split, the epochs the paper trains.
AGNEWS_TRAIN = 120_000
EPOCHS = 15
NUM_CLASSES = 4
# What Experiment 4's step was estimated to cost (forward and backward of the 6 blocks).
ESTIMATED_GFLOP = 270
# The default sizes (Experiment 4's) and the smoke run's.
FULL = {"batch_size": 256, "max_length": 128, "vocab": 30522, "blocks": 6, "embed_dim": 128}
FULL |= {"heads": 4, "chunk": 5, "rounds": 3}
TINY = {"batch_size": 8, "max_length": 16, "vocab": 100, "blocks": 2, "embed_dim": 16}
TINY |= {"heads": 2, "chunk": 2, "rounds": 2}
TORCH_WARMUP_STEPS = 3


def text_config(args: argparse.Namespace) -> config.Config:
  """Experiment 4's config (`predictions.EXP4.config`) at the sizes of `args`, on random
  text of N = `args.examples` rows (its steps: one epoch, which a text config needs whole)."""
  n = args.examples
  shape = data.TextShape(
    "random", args.vocab, args.max_length, n, args.batch_size, NUM_CLASSES, "random token ids"
  )
  return predictions.EXP4.config.replace(
    text=shape,
    num_classes=NUM_CLASSES,  # the reference's readout size (None would mean its vocabulary)
    norms=tuple(args.norms),
    batch_size=args.batch_size,
    num_blocks=args.blocks,
    embed_dim=args.embed_dim,
    num_heads=args.heads,
    steps=-(-n // args.batch_size),
  )


def random_text(cfg: config.Config, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
  """(tokens (N, L) int64 in [0, vocab), labels (N,) int64 in [0, classes)): the same rows
  for both frameworks."""
  rng = np.random.default_rng(seed)
  t = cfg.text
  return (
    rng.integers(0, t.vocab_size, (t.num_train, t.seq_len), dtype=np.int64),
    rng.integers(0, t.num_classes, t.num_train, dtype=np.int64),
  )


def text_arrays(cfg: config.Config, tokens: np.ndarray, labels: np.ndarray) -> data.TextArrays:
  """The rows as jaxnorm holds them (int32, on the device); the test split is the first B
  rows (training never reads it)."""
  b = cfg.text.num_test
  return data.TextArrays(
    *(jnp.asarray(a, jnp.int32) for a in (tokens, labels, tokens[:b], labels[:b]))
  )


def full_run_steps(batch_size: int) -> int:
  """Steps per model of the full run: 15 epochs of ceil(120,000 / B) batches."""
  return EPOCHS * -(-AGNEWS_TRAIN // batch_size)


def step_flops(cfg: config.Config, norm: str, states, arrays: data.TextArrays):
  """(XLA's FLOPs of one training step or None where its cost analysis gives none, FLOPs
  of the step's matrix products, 2 m n k each) of one seed's step on one batch."""
  m = model_lib.build_for_training(cfg, norm)
  one = jax.tree.map(lambda a: a[0], states)
  batch = data.training_batch(one.data_key, 0, cfg.task, arrays)
  step = jax.jit(lambda s, t, y, w: train.weighted_train_step(m, s, t, y, w))
  with jax.default_matmul_precision(cfg.matmul_precision):
    try:
      cost = step.lower(one, *batch).compile().cost_analysis()
      cost = cost[0] if isinstance(cost, list) else cost
      xla = float(cost["flops"]) if cost and cost.get("flops", -1) > 0 else None
    except Exception:  # noqa: BLE001 - a backend without a cost analysis: the jaxpr's count stays
      xla = None
    products = matmul_flops(jax.make_jaxpr(step)(one, *batch))
  return xla, float(products)


def matmul_flops(jaxpr) -> int:
  """FLOPs of every `dot_general` of a (closed) jaxpr, 2 m n k each
  (`profile_step.dot_flops`), sub-jaxprs included, a scan's body times its length (the
  blocks' scan: `profile_step.dot_products` counts its body once)."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      total += profile_step.dot_flops(eqn)
    times = eqn.params["length"] if eqn.primitive.name == "scan" else 1
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
          total += times * matmul_flops(sub)
  return total


def torch_text_chunk(
  model, cfg: config.Config, norm: str, tokens: np.ndarray, labels: np.ndarray, steps: int
) -> Callable[[], list[float]]:
  """A run of `steps` steps of the reference's loop (`torch_reference.train_steps`) on
  `model`, moved to `timing.torch_device()`, each on the next batch of B rows gathered from
  the int64 tensors on the device in the order of a `torch.randperm` of the N rows drawn
  each epoch, after `TORCH_WARMUP_STEPS` warm-up steps; returns the losses."""
  import torch

  from jaxnorm import torch_reference as ref

  device = timing.torch_device()
  model = model.to(device)
  optimizer = ref.make_optimizer(model, cfg.learning_rate_for(norm))
  tokens_t = torch.from_numpy(tokens).to(device)
  labels_t = torch.from_numpy(labels).to(device)
  n, b = tokens.shape[0], cfg.batch_size
  generator = torch.Generator().manual_seed(0)

  def stream() -> Iterator[tuple]:
    while True:
      order = torch.randperm(n, generator=generator).to(device)
      for start in range(0, n, b):
        rows = order[start : start + b]
        yield tokens_t[rows], labels_t[rows]

  batches = stream()

  def take(k: int) -> Iterator[tuple]:
    return (next(batches) for _ in range(k))

  def run() -> list[float]:
    losses = ref.train_steps(model, optimizer, take(steps))
    if device == "cuda":
      torch.cuda.synchronize()
    return losses

  ref.train_steps(model, optimizer, take(TORCH_WARMUP_STEPS))
  return run


def text_times(cfg: config.Config, norm: str, chunk: int, rounds: int) -> dict:
  """What is measured of `norm`: "jaxnorm", "pytorch" -> seconds per step of each round;
  "compile": (trace and lower s, XLA compile s); "parameters"; "xla_flops" (or None),
  "dot_flops" of one step. Raises ValueError when the PyTorch model's parameter count
  differs from jaxnorm's, or a warm-up loss is not finite."""
  from jaxnorm import torch_reference as ref

  tokens, labels = random_text(cfg)
  arrays = text_arrays(cfg, tokens, labels)
  m = model_lib.build_for_training(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  with jax.default_matmul_precision(cfg.matmul_precision):
    states = programs.init_states(m, cfg.task, k.train, lr)
  count = bench_deep.parameter_count(states.params)
  torch_model = ref.make_deep_model(cfg, norm, seed=0)
  torch_count = sum(p.numel() for p in torch_model.parameters())
  if torch_count != count:
    raise ValueError(
      f"{norm}: the PyTorch model has {torch_count} parameters, jaxnorm's {count}: they are "
      "not the same model"
    )
  xla_flops, dot_flops = step_flops(cfg, norm, states, arrays)
  with jax.default_matmul_precision(cfg.matmul_precision):
    *compile_s, program = timing.lower_and_compile(
      programs.train_text_chunk, m, cfg.task, states, chunk, 0, k.curvature, arrays
    )
  jax_run = timing.jax_chunk(lambda s: program(s, k.curvature, arrays)[:2], states)
  torch_run = torch_text_chunk(torch_model, cfg, norm, tokens, labels, chunk)
  for name, run in (("jaxnorm", jax_run), ("PyTorch", torch_run)):  # warm up
    losses = np.asarray(run(), np.float64)
    if not np.all(np.isfinite(losses)):
      raise ValueError(f"{norm}: {name}'s warm-up losses are not finite: {losses}")
  seconds = timing.alternate({"jaxnorm": jax_run, "pytorch": torch_run}, rounds)
  out = {side: [s / chunk for s in round_s] for side, round_s in seconds.items()}
  return out | {
    "compile": tuple(compile_s),
    "parameters": count,
    "xla_flops": xla_flops,
    "dot_flops": dot_flops,
  }


def _ms_cell(step_s: list[float]) -> str:
  ms = [s * 1e3 for s in step_s]
  return f"{statistics.median(ms):.2f} ({min(ms):.2f}-{max(ms):.2f})"


def table(rows: dict[str, dict]) -> list[str]:
  """The Markdown table of times: one line per normalization."""
  lines = [
    "| norm | jaxnorm ms/step | PyTorch ms/step | ratio | jaxnorm compile s |",
    "|---|---|---|---|---|",
  ]
  for norm, r in rows.items():
    ratio = statistics.median(r["pytorch"]) / statistics.median(r["jaxnorm"])
    lines.append(
      f"| {norm} | {_ms_cell(r['jaxnorm'])} | {_ms_cell(r['pytorch'])} | {ratio:.2f}x "
      "| {:.2f} / {:.2f} |".format(*r["compile"])
    )
  return lines


def size_table(rows: dict[str, dict]) -> list[str]:
  """The Markdown table of each model's size and FLOPs per step, and the rate jaxnorm's
  step achieves at XLA's count (the jaxpr's where XLA gives none)."""
  lines = [
    "| norm | parameters | GFLOP/step, XLA | GFLOP/step, matrix products | jaxnorm GFLOP/s |",
    "|---|---|---|---|---|",
  ]
  for norm, r in rows.items():
    xla = "-" if r["xla_flops"] is None else f"{r['xla_flops'] / 1e9:.4g}"
    flops = r["dot_flops"] if r["xla_flops"] is None else r["xla_flops"]
    rate = flops / statistics.median(r["jaxnorm"]) / 1e9
    lines.append(
      f"| {norm} | {r['parameters']:,} | {xla} | {r['dot_flops'] / 1e9:.4g} | {rate:.1f} |"
    )
  return lines


def estimate(rows: dict[str, dict], batch_size: int, full_sizes: bool) -> list[str]:
  """The full run's training time in each framework: its steps times each model's median
  step, summed."""
  steps = full_run_steps(batch_size)
  hours = {
    side: steps * sum(statistics.median(r[side]) for r in rows.values()) / 3600
    for side in ("jaxnorm", "pytorch")
  }
  compile_s = sum(sum(r["compile"]) for r in rows.values())
  sizes = "" if full_sizes else " at the sizes measured here (not Experiment 4's)"
  return [
    f"Estimate of the full reference run{sizes}: {len(rows)} models ({', '.join(rows)}) x "
    f"{steps:,} steps ({EPOCHS} epochs x {-(-AGNEWS_TRAIN // batch_size):,} batches of "
    f"{batch_size}) x each model's median step: jaxnorm {hours['jaxnorm']:.2f} h, PyTorch "
    f"{hours['pytorch']:.2f} h ({hours['pytorch'] / hours['jaxnorm']:.2f}x). Training steps "
    f"only: the analysis (the layer-wise measures, the test-set evaluation) is NOT included, "
    f"nor jaxnorm's compile time ({compile_s:.1f} s for these programs).",
  ]


def _gflop_range(flops: list[float]) -> str:
  low, high = f"{min(flops) / 1e9:.4g}", f"{max(flops) / 1e9:.4g}"
  return low if low == high else f"{low}-{high}"


def flops_note(rows: dict[str, dict]) -> str:
  xla = [r["xla_flops"] for r in rows.values() if r["xla_flops"] is not None]
  dots = [r["dot_flops"] for r in rows.values()]
  source = (
    f"XLA's cost analysis gives {_gflop_range(xla)} GFLOP"
    if xla
    else "XLA's cost analysis gives no FLOP count on this backend"
  )
  return (
    f"FLOPs per training step: {source} (one jitted step; the compiled chunk is a loop whose "
    f"body XLA counts once); its matrix products, counted from the step's jaxpr (2 m n k "
    f"each), {_gflop_range(dots)} GFLOP; Experiment 4's estimate: "
    f"about {ESTIMATED_GFLOP} GFLOP per training step."
  )


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--norms", default="layernorm,l2,none", help="comma-separated")
  p.add_argument("--rounds", type=int, help=f"interleaved rounds (default {FULL['rounds']})")
  p.add_argument("--chunk", type=int, help=f"steps per timed call (default {FULL['chunk']})")
  p.add_argument("--batch-size", type=int, help=f"B (default {FULL['batch_size']})")
  p.add_argument(
    "--max-length", type=int, help=f"L, tokens per text (default {FULL['max_length']})"
  )
  p.add_argument("--vocab", type=int, help=f"vocabulary (default {FULL['vocab']})")
  p.add_argument("--blocks", type=int, help=f"post-norm blocks (default {FULL['blocks']})")
  p.add_argument("--embed-dim", type=int, help=f"D (default {FULL['embed_dim']})")
  p.add_argument("--heads", type=int, help=f"attention heads (default {FULL['heads']})")
  p.add_argument(
    "--examples",
    type=int,
    help=f"N, rows held in memory (default {AGNEWS_TRAIN:,}; --tiny: 4 batches)",
  )
  p.add_argument("--out", help="also write the report to this Markdown file")
  p.add_argument(
    "--tiny", action="store_true", help="a smoke run: tiny sizes (any size given still counts)"
  )
  args = p.parse_args(argv)
  for name, value in (TINY if args.tiny else FULL).items():
    if getattr(args, name) is None:
      setattr(args, name, value)
  if args.examples is None:
    args.examples = 4 * args.batch_size if args.tiny else AGNEWS_TRAIN
  args.norms = [n for n in args.norms.split(",") if n]
  return args


def main(argv: list[str] | None = None) -> int:
  import torch

  args = parse_args(argv)
  command = sys.argv[1:] if argv is None else argv
  cfg = text_config(args)
  full_sizes = args.examples == AGNEWS_TRAIN and all(
    getattr(args, k) == v for k, v in FULL.items() if k not in ("chunk", "rounds")
  )
  start = time.perf_counter()
  lines = [
    f"Machine: {bench.machine()}; PyTorch {torch.__version__} on {timing.torch_device()}, "
    f"{torch.get_num_threads()} threads ({os.cpu_count()} cores).",
    "",
    f"Command: `python benchmarks/bench_text.py {' '.join(command)}`.",
    "",
    f"Experiment 4's training step ({cfg.num_blocks} {cfg.norm_placement}-norm blocks, D = "
    f"{cfg.embed_dim}, {cfg.num_heads} heads, vocabulary {cfg.vocab_size:,}, L = "
    f"{cfg.seq_len}, batch {cfg.batch_size}, {NUM_CLASSES} classes read out at position 0; "
    f"random tokens, N = {args.examples:,} rows in memory; matmul precision "
    f"{cfg.matmul_precision}): ms per step, median (range) of {args.rounds} interleaved "
    f"rounds of {args.chunk} steps; ratio: PyTorch / jaxnorm medians; jaxnorm compile: trace "
    "and lower / XLA compile seconds of its training program (one seed):",
    "",
  ]
  rows = {}
  for norm in args.norms:
    rows[norm] = text_times(cfg, norm, args.chunk, args.rounds)
    print(table({norm: rows[norm]})[-1], flush=True)
  lines += table(rows) + [""]
  lines += estimate(rows, args.batch_size, full_sizes) + [""]
  lines += size_table(rows) + ["", flops_note(rows), ""]
  lines.append(f"Wall time of this benchmark: {time.perf_counter() - start:.0f} s.")
  report = "\n".join(lines)
  print(report)
  if args.out:
    Path(args.out).write_text(report + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
