"""What the benchmark's sections share: PyTorch's device beside JAX's, a program's trace,
lower and XLA compile seconds ahead of time, rounds timed alternately, and the reference's
PyTorch training loop as a timed chunk of steps."""

from __future__ import annotations

import time
from collections.abc import Callable

import jax
import numpy as np

from jaxnorm import config


def torch_device() -> str:
  """ "cuda" when JAX runs on a GPU, else "cpu": both libraries on the same device."""
  return "cuda" if jax.devices()[0].platform == "gpu" else "cpu"


def sync(tree) -> None:
  """Waits until every array of `tree` is computed (JAX dispatches asynchronously)."""
  jax.block_until_ready(tree)


def lower_and_compile(program, *args) -> tuple[float, float, Callable]:
  """(trace and lower seconds, XLA compile seconds, the compiled program) of the jitted
  `program` at `args` (its static arguments included, as `program.lower` takes them); the
  compiled program takes the dynamic arguments only."""
  start = time.perf_counter()
  lowered = program.lower(*args)
  lowered_at = time.perf_counter()
  compiled = lowered.compile()
  return lowered_at - start, time.perf_counter() - lowered_at, compiled


def alternate(runs: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
  """Name -> wall seconds of each of `rounds` rounds of `runs`, run in turn (a, b, c, a, b,
  c, ...), so that whatever disturbs the machine falls on each of them alike. Each run must
  wait for its own work to finish before it returns."""
  seconds: dict[str, list[float]] = {name: [] for name in runs}
  for _ in range(rounds):
    for name, run in runs.items():
      start = time.perf_counter()
      run()
      seconds[name].append(time.perf_counter() - start)
  return seconds


def jax_chunk(program: Callable, states) -> Callable[[], jax.Array]:
  """A run of `program`, states -> (new states, losses), that carries the states from
  call to call (the program may donate them) and returns the losses once computed."""
  carried = [states]

  def run() -> jax.Array:
    carried[0], losses = program(carried[0])
    sync(losses)
    return losses

  return run


def torch_chunk(model, cfg: config.Config, norm: str, steps: int) -> Callable[[], list[float]]:
  """A run of `steps` steps of the reference notebook's training loop
  (`jaxnorm/torch_reference.py`: Adam at the config's rate for `norm`, a fresh batch from
  the per-example generator every step, `loss.item()` every step) on `model`, moved to
  `torch_device()`, after 3 warm-up steps; returns the losses."""
  import torch

  from jaxnorm import torch_reference as ref

  device = torch_device()
  model = model.to(device)
  optimizer = ref.make_optimizer(model, cfg.learning_rate_for(norm))
  rng = np.random.default_rng(0)

  def batches(n):
    return (tuple(t.to(device) for t in ref.generate_batch(cfg, rng)) for _ in range(n))

  def run() -> list[float]:
    losses = ref.train_steps(model, optimizer, batches(steps))
    if device == "cuda":
      torch.cuda.synchronize()
    return losses

  ref.train_steps(model, optimizer, batches(3))
  return run
