"""What a checkpoint costs (`resume.Checkpointer.save`, `--resume`), against the time
between two saves.

    python benchmarks/bench_checkpoint.py --out bench_checkpoint.md
    python benchmarks/bench_checkpoint.py --tiny                # a smoke run (seconds)

For each model of the experiments (Experiment 2's one-block model, the deep preset's
6-block model, Experiment 4's text model with its 30,522-token embedding) and each group
size in `--seeds`, a group of freshly initialized training states (`programs.init_states`:
the same shapes as a trained one) is saved `--rounds` times as the training loop saves it
(`group_train`: the state copied to the host, its SHA-256, orbax's write started), each
save timed twice:

- blocking: until `save` returns, the time the training loop waits;
- written: until orbax has finished writing it in the background (`wait_until_finished`),
  an upper bound of what the write can take from training on a machine whose cores the
  training uses.

Each is divided by the seconds between two saves (`--every`, default `resume.EVERY_S`):
the share of a run's time that saving costs. A run saves at most once per chunk, so for a
chunk longer than `--every` the share is smaller still.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import numpy as np

from jaxnorm import config, data, group_train, matched_loss, model, predictions, programs, resume

NUM_CLASSES = 4


def configs(tiny: bool) -> dict[str, config.Config]:
  """The models whose states are saved."""
  if tiny:
    return {"tiny": config.TINY}
  text = data.TextShape("sized", 30522, 128, 256, 256, NUM_CLASSES, "shape only")
  exp4 = predictions.EXP4.config.replace(text=text, num_classes=NUM_CLASSES, steps=1)
  return {"exp2": predictions.EXP2.config, "deep": config.DEEP, "exp4": exp4}


def states(cfg: config.Config, seeds: int):
  """`seeds` fresh training states of the LayerNorm model of `cfg`, on the device."""
  m = model.build_for_training(cfg, "layernorm")
  keys = jax.vmap(jax.random.key)(np.arange(seeds))
  rates = np.full(seeds, 1e-4, np.float32)
  return programs.init_states(m, cfg.task, keys, rates)


def save_times(cfg: config.Config, seeds: int, rounds: int, folder: Path) -> dict:
  """Seconds of each save (blocking, written) and the state's size in MB."""
  state = states(cfg, seeds)
  jax.block_until_ready(state)
  size = sum(x.nbytes for x in jax.tree.leaves(group_train.key_data(state))) / 1e6
  checkpointer = resume.Checkpointer(folder, "bench", every_s=0)
  matched = matched_loss.Checkpoints((), seeds)
  losses = np.zeros((seeds, 100 * rounds), np.float32)
  blocking, written = [], []
  for r in range(rounds):
    start = time.perf_counter()
    saved = group_train.to_saved(100 * (r + 1), state, losses, None, None, matched)
    checkpointer.save("layernorm", 0, saved.done, group_train.flatten(saved))
    blocking.append(time.perf_counter() - start)
    checkpointer.wait()
    written.append(time.perf_counter() - start)
  checkpointer.remove()
  return {"mb": size, "blocking": blocking, "written": written}


def table(rows: dict, every: float) -> list[str]:
  lines = [
    f"| model | seeds | state (MB) | blocking (s) | written (s) | blocking / {every:g} s "
    f"| written / {every:g} s |",
    "|---|---|---|---|---|---|---|",
  ]
  for (name, seeds), r in rows.items():
    b, w = statistics.median(r["blocking"]), statistics.median(r["written"])
    lines.append(
      f"| {name} | {seeds} | {r['mb']:.1f} | {b:.3f} ({min(r['blocking']):.3f}-"
      f"{max(r['blocking']):.3f}) | {w:.3f} ({min(r['written']):.3f}-{max(r['written']):.3f}) "
      f"| {100 * b / every:.2f}% | {100 * w / every:.2f}% |"
    )
  return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--seeds", default="1,8", help="group sizes, comma-separated")
  p.add_argument("--rounds", type=int, default=5, help="saves timed per row (median shown)")
  p.add_argument("--every", type=float, default=resume.EVERY_S, help="seconds between saves")
  p.add_argument("--tiny", action="store_true", help="the tiny model, 2 rounds: a smoke run")
  p.add_argument("--out", help="also write the table to this markdown file")
  args = p.parse_args(argv)
  args.seeds = [int(s) for s in args.seeds.split(",")]
  if args.tiny:
    args.rounds, args.seeds = 2, [1]
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse_args(argv)
  rows = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, cfg in configs(args.tiny).items():
      for seeds in args.seeds:
        folder = Path(tmp) / f"{name}_{seeds}"
        rows[name, seeds] = save_times(cfg, seeds, args.rounds, folder)
        print(f"{name} x{seeds}: done", file=sys.stderr)
  device = jax.devices()[0]
  lines = [
    f"Checkpoint cost, {args.rounds} saves per row, median (min-max); JAX {jax.__version__}, "
    f"{device.platform} ({device.device_kind})",
    "",
    *table(rows, args.every),
  ]
  text = "\n".join(lines)
  print(text)
  if args.out:
    Path(args.out).write_text(text + "\n")
  return 0


if __name__ == "__main__":
  sys.exit(main())
