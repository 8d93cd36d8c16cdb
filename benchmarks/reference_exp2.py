"""The reference notebook's Experiment 2, end to end, in PyTorch: the yardstick that
`benchmarks/bench.py` times jaxnorm against.

Its own code (`jaxnorm/torch_reference.py`): per model, the notebook's training loop with its
per-example batch generator and a `loss.item()` every step, then its cumulative 40-point
landscape slice and its hooked activation spectrum. Batches are made on the CPU and moved
to the device every step, as in the notebook.

    python benchmarks/reference_exp2.py --device cuda --steps 4000
    python benchmarks/reference_exp2.py --preset tiny --steps 5     # a smoke run

Prints one JSON line: wall seconds per phase and in total, device, versions.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

from jaxnorm import config
from jaxnorm import torch_reference as ref


def run(cfg: config.Config, device: str, steps: int) -> dict:
  rng = np.random.default_rng(0)
  seconds = {"train": 0.0, "landscape": 0.0, "spectrum": 0.0}
  final = {}
  start_all = time.perf_counter()
  for norm in cfg.norms:
    model = ref.make_model(cfg, norm, seed=0).to(device)
    optimizer = ref.make_optimizer(model, cfg.learning_rate_for(norm))
    batches = (tuple(t.to(device) for t in ref.generate_batch(cfg, rng)) for _ in range(steps))
    start = time.perf_counter()
    losses = ref.train_steps(model, optimizer, batches)
    seconds["train"] += time.perf_counter() - start
    start = time.perf_counter()
    X, Y = (t.to(device) for t in ref.generate_batch(cfg, rng))
    alphas = np.linspace(-cfg.landscape_range, cfg.landscape_range, cfg.landscape_points)
    ref.loss_landscape(model, ref.random_direction(model), X, Y, alphas, cumulative=True)
    seconds["landscape"] += time.perf_counter() - start
    start = time.perf_counter()
    X, _ = (t.to(device) for t in ref.generate_batch(cfg, rng))
    ref.activation_spectrum(model, X)
    seconds["spectrum"] += time.perf_counter() - start
    final[norm] = float(np.mean(losses[-100:]))
  if device.startswith("cuda"):
    torch.cuda.synchronize()
  seconds["total"] = time.perf_counter() - start_all
  return {
    "seconds": seconds,
    "steps": steps,
    "norms": list(cfg.norms),
    "final_loss": final,
    "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
    "torch": torch.__version__,
    "threads": torch.get_num_threads(),
  }


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, ...")
  p.add_argument("--steps", type=int, default=config.PAPER.steps, help="training steps per model")
  p.add_argument("--preset", default="paper", choices=sorted(config.PRESETS))
  p.add_argument("--norms", help="comma-separated subset of layernorm,batchnorm,none")
  args = p.parse_args()
  cfg = config.PRESETS[args.preset]
  if args.norms:
    cfg = cfg.replace(norms=tuple(args.norms.split(",")))
  print(json.dumps(run(cfg, args.device, args.steps)))
  return 0


if __name__ == "__main__":
  sys.exit(main())
