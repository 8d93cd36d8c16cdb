"""Training watched as it runs, in TensorBoard (`--tensorboard DIR`; `pip install
'jaxnorm[tensorboard]'`, which brings tensorboardX): each training chunk's losses, and the
curvature where the run tracks it (`--curvature-iterations`), are written to event files
as the chunk finishes and flushed, so that `tensorboard --logdir DIR` draws them live.

    jaxnorm exp2 --curvature-iterations 20 --tensorboard runs/tb
    tensorboard --logdir runs/tb    # meanwhile, elsewhere (pip install tensorboard)

One event-file run per (normalization, seed): DIR/<norm>/seed_<seed>, and for a sweep
DIR/lr_<rate>/<norm>/seed_<seed> (the rate's folder named as the sweep's run folders),
with the scalars

    train/loss                      every step's training loss, at its 0-based step (as
                                    results.npz's N/loss)
    train/lambda_max                the Hessian's largest eigenvalue at the end of each
                                    chunk, at the steps done (N/trajectory, at
                                    N/trajectory_steps; `trajectory.top_eigenvalues`)
    train/preconditioned_sharpness  Adam's preconditioned sharpness there

Only process 0 of a run over several processes writes. A new file is begun in each run's
folder at every run: a second run into the same DIR is drawn on top of the first.
"""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from jaxnorm.programs import Runs
from jaxnorm.result import rate_folder
from jaxnorm.spec import ExperimentSpec

EXTRA = "tensorboard"  # pyproject.toml's optional dependencies that bring tensorboardX
LOSS = "train/loss"
CURVATURE = ("train/lambda_max", "train/preconditioned_sharpness")


def check(folder: str) -> None:
  """Raises ValueError, in one line, unless tensorboardX imports and `folder` can be
  written (or, if it does not exist yet, the folder it will be made in). Makes nothing."""
  try:
    import tensorboardX  # noqa: F401
  except ImportError as e:
    raise ValueError(
      f"--tensorboard needs tensorboardX ({e}): pip install 'jaxnorm[{EXTRA}]'"
    ) from None
  if not folder:
    raise ValueError("--tensorboard needs a folder, got an empty string")
  path = Path(folder).absolute()
  existing = next(p for p in (path, *path.parents) if p.exists())
  if not existing.is_dir():
    raise ValueError(f"--tensorboard {folder}: {existing} is not a folder")
  try:
    with tempfile.TemporaryFile(dir=existing):
      pass
  except OSError as e:
    raise ValueError(
      f"--tensorboard {folder}: cannot write in {existing} ({e.strerror or e})"
    ) from None


class TensorBoard:
  """`pipeline.run`'s `on_chunk` (and `sweep.run`'s, with its `rates`): writes each chunk
  of the runs of `spec` to DIR `folder`; writes nothing where `writes` is False (the
  processes of a distributed run other than process 0, which must still be told of each
  chunk: the pipeline gathers the chunk from every process for it). `close()` when done."""

  def __init__(
    self, folder: str | Path, spec: ExperimentSpec, rates: Sequence[float] = (), writes=True
  ):
    runs = Runs.of(spec, rates or None)
    at = [rate_folder(r) for r in runs.rates] if rates else [""] * len(runs.seeds)
    # Run k of `on_chunk`'s `runs`: (the folder of its normalizations, its own folder's name).
    self._places = [(Path(folder, f), f"seed_{s}") for f, s in zip(at, runs.seeds, strict=True)]
    self._steps, self._writes, self._open = spec.config.steps, writes, {}
    if writes:
      from tensorboardX import RecordWriter
      from tensorboardX.proto import event_pb2, summary_pb2

      self._record, self._event, self._summary = RecordWriter, event_pb2.Event, summary_pb2.Summary

  def __call__(
    self,
    norm: str,
    runs: np.ndarray,
    steps_done: int,
    losses_RxN: np.ndarray,
    curvature_Rx2: np.ndarray | None,
  ) -> None:
    if not self._writes:
      return
    first = steps_done - losses_RxN.shape[1]
    curvatures = [()] * len(runs) if curvature_Rx2 is None else curvature_Rx2
    for run, losses_N, curvature_2 in zip(runs, losses_RxN, curvatures, strict=True):
      writer = self._writer(norm, int(run))
      for step, loss in enumerate(losses_N, start=first):
        writer.write(self._scalar(LOSS, loss, step))
      for tag, value in zip(CURVATURE[: len(curvature_2)], curvature_2, strict=True):
        writer.write(self._scalar(tag, value, steps_done))
      writer.flush()
      if steps_done == self._steps:
        self._open.pop((norm, int(run))).close()

  def close(self) -> None:
    """Closes the files of runs cut short (an interruption, a failure)."""
    while self._open:
      self._open.popitem()[1].close()

  def _writer(self, norm: str, run: int):
    """The open event file of `norm`'s run `run`, begun (with its folder) if need be."""
    if (norm, run) not in self._open:
      base, name = self._places[run]
      folder = base / norm / name
      folder.mkdir(parents=True, exist_ok=True)
      file = f"events.out.tfevents.{time.time():.0f}.{socket.gethostname()}.{os.getpid()}"
      writer = self._open[norm, run] = self._record(str(folder / file))
      header = self._event(wall_time=time.time(), file_version="brain.Event:2")
      writer.write(header.SerializeToString())
    return self._open[norm, run]

  def _scalar(self, tag: str, value, step: int) -> bytes:
    summary = self._summary(value=[self._summary.Value(tag=tag, simple_value=float(value))])
    return self._event(wall_time=time.time(), step=step, summary=summary).SerializeToString()
