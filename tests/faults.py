"""Faults injected into a run from outside the library, for the tests of interruptions
(test_faults.py, test_runfolder.py, test_distributed.py).

A fault spec names points of a run and what happens there:
"<point>:<ACTION>[,<point>:<ACTION> ...]", where ACTION is a signal the process sends
itself on reaching the point (SIGKILL, SIGINT, SIGTERM, SIGHUP) or an errno name (ENOSPC)
raised there as OSError. The library knows nothing of them: the functions below replace
or wrap what it calls at each point, in the process that runs it.

  write:<file>    halfway through writing each file of a run, and the traceback a failed
                  run keeps (`runfolder.write_bytes` writes half, fires, writes the rest)
  commit          in `Staging.commit`, just before the swap: before its first rename or
                  exchange (inside the deferral of stop signals, where the library has it)
  swapped         between the two renames of the fallback swap: the target moved aside,
                  the new run not yet in its place
  committed       after the swap and the fsync of the target's folder, before the
                  previous run is deleted
  train:<norm>    after every training chunk (the run's `on_progress`, phase "train")
  train:<norm>@<steps>
                  after the training chunk of <norm> that ends at <steps> steps
  checkpoint      as orbax finalizes each checkpoint (`resume`): its arrays written or
                  being written in a temporary folder, not yet renamed into place
  checkpoint#<n>  the same, at the n-th checkpoint of the run only (1-based)
  analyze:<norm>  before each analysis (`on_progress`, phase "analyze")
  exit            as a script exits with its status (`exits.exit_process`: at its first
                  flush of the standard streams, once it has ignored the stop signals)

    python tests/faults.py SPEC SCRIPT ARGS...

runs SCRIPT as `python SCRIPT ARGS...` would (the same sys.argv, `jaxnorm.quiet` imported
first), with the faults of SPEC injected. A point of SPEC that a run ending normally
never reached ends the process with status 70 (`UNREACHED`) and one line on standard
error: a test whose fault no longer fires fails instead of passing unexercised.

Standard library only at import: the launcher imports jaxnorm after `jaxnorm.quiet`, as
the scripts do, and test_runfolder.py's writers never import JAX.
"""

from __future__ import annotations

import contextlib
import errno
import os
import runpy
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

UNREACHED = 70  # EX_SOFTWARE: a point of the spec the run never reached


class Faults:
  """The points and actions of a spec, and which points a run reached."""

  def __init__(self, spec: str):
    self.items = []
    for item in filter(None, (part.strip() for part in spec.split(","))):
      point, _, action = item.rpartition(":")
      known = hasattr(signal, action) if action.startswith("SIG") else hasattr(errno, action)
      if not point or not known:
        raise ValueError(f"not a fault (<point>:<SIGNAL or ERRNO>): {item!r}")
      self.items.append((point, action))
    self.reached: set[str] = set()

  def fire(self, point: str) -> None:
    """What the spec says happens at `point`: the process signals itself, or OSError."""
    for name, action in self.items:
      if name != point:
        continue
      self.reached.add(point)
      if action.startswith("SIG"):
        os.kill(os.getpid(), getattr(signal, action))
      else:
        code = getattr(errno, action)
        raise OSError(code, os.strerror(code), point)

  def unreached(self) -> list[str]:
    return [point for point, _ in self.items if point not in self.reached]


def patch_runfolder(faults: Faults, runfolder: ModuleType) -> None:
  """The points "write:<file>", "commit", "swapped" and "committed" in `runfolder` (the
  module jaxnorm.runfolder, or one loaded from its file)."""
  commits: list[dict] = []  # the Staging being committed, and the points it passed

  def write_bytes(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
      half = len(data) // 2
      f.write(data[:half])
      f.flush()
      faults.fire(f"write:{path.name}")
      f.write(data[half:])
      f.flush()
      os.fsync(f.fileno())

  def before_swap() -> None:
    if commits and not commits[-1]["swapping"]:
      commits[-1]["swapping"] = True
      faults.fire("commit")

  commit = runfolder.Staging.commit

  def committing(self, info) -> None:
    commits.append({"staging": self, "swapping": False, "synced": False})
    try:
      commit(self, info)
    finally:
      commits.pop()

  class Os:
    """runfolder's `os`: os itself, the renames of a commit points of it."""

    def __getattr__(self, name: str):
      return getattr(os, name)

    def rename(self, source, destination) -> None:
      before_swap()
      os.rename(source, destination)
      if commits and Path(source) == commits[-1]["staging"].target:
        faults.fire("swapped")  # the target moved aside, the new run not yet in

  exchange = runfolder.exchange

  def exchanging(a: Path, b: Path) -> bool:
    before_swap()
    return exchange(a, b)

  fsync_dir = runfolder._fsync_dir

  def fsyncing_dir(path: Path) -> None:
    fsync_dir(path)
    if commits and commits[-1]["staging"].committed and not commits[-1]["synced"]:
      commits[-1]["synced"] = True
      faults.fire("committed")

  runfolder.write_bytes = write_bytes
  runfolder.Staging.commit = committing
  runfolder.os = Os()
  if exchange is not None:  # None: the fallback's two renames only
    runfolder.exchange = exchanging
  runfolder._fsync_dir = fsyncing_dir


def patch_pipeline(faults: Faults, pipeline: ModuleType) -> None:
  """ "train:<norm>" and "analyze:<norm>": after the run's own `on_progress`, which
  `pipeline.run` and `sweep.run` hand to `pipeline.run_runs`."""
  run_runs = pipeline.run_runs

  def running(*args, on_progress: Callable[[str, str, int], None], **kwargs):
    def progress(norm: str, phase: str, step: int) -> None:
      on_progress(norm, phase, step)
      faults.fire(f"{phase}:{norm}")
      faults.fire(f"{phase}:{norm}@{step}")

    return run_runs(*args, on_progress=progress, **kwargs)

  pipeline.run_runs = running


def patch_resume(faults: Faults) -> None:
  """ "checkpoint": at the start of orbax's finalization of every checkpoint (in the thread
  that writes it in the background)."""
  import orbax.checkpoint as ocp

  finalize, count = ocp.CheckpointManager._finalize, [0]

  def finalizing(self, *args, **kwargs):
    count[0] += 1
    faults.fire("checkpoint")
    faults.fire(f"checkpoint#{count[0]}")
    return finalize(self, *args, **kwargs)

  ocp.CheckpointManager._finalize = finalizing


class _FiresOnFlush:
  """A standard stream whose first flush first fires `fire()`."""

  def __init__(self, stream, fire: Callable[[], None]):
    self._stream, self._fire = stream, fire

  def flush(self) -> None:
    fire, self._fire = self._fire, None
    if fire is not None:
      fire()
    self._stream.flush()

  def __getattr__(self, name: str):
    return getattr(self._stream, name)


def patch_exits(faults: Faults, exits: ModuleType) -> None:
  """ "exit": `exit_process` reaches it as it flushes the first open standard stream."""
  exit_process = exits.exit_process

  def exiting(status: int):
    name = "stdout" if sys.stdout is not None else "stderr"
    if getattr(sys, name) is not None:
      setattr(sys, name, _FiresOnFlush(getattr(sys, name), lambda: faults.fire("exit")))
    exit_process(status)

  exits.exit_process = exiting


@contextlib.contextmanager
def checked(faults: Faults) -> Iterator[Faults]:
  """Ends the process with `UNREACHED` if the block ends normally (or by sys.exit) with
  a point of `faults` never reached; a run that a fault stopped is left as it is."""
  try:
    yield faults
  except SystemExit:
    _exit_if_unreached(faults)
    raise
  _exit_if_unreached(faults)


def _exit_if_unreached(faults: Faults) -> None:
  missed = faults.unreached()
  if missed:
    for stream in (sys.stdout, sys.stderr):
      with contextlib.suppress(Exception):
        stream.flush()
    os.write(2, f"faults: never reached {', '.join(missed)}\n".encode())
    os._exit(UNREACHED)


def launch(spec: str, script: str, args: list[str]) -> None:
  """Runs `script` with `args` as the main program, with the faults of `spec`."""
  sys.argv = [script, *args]
  sys.path[0] = os.path.dirname(os.path.abspath(script))  # as `python script` has it
  import jaxnorm.quiet  # noqa: F401  first, as every script imports it
  from jaxnorm import exits, pipeline, runfolder

  faults = Faults(spec)
  patch_runfolder(faults, runfolder)
  patch_pipeline(faults, pipeline)
  if any(point.startswith("checkpoint") for point, _ in faults.items):
    patch_resume(faults)
  patch_exits(faults, exits)
  with checked(faults):
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
  launch(sys.argv[1], sys.argv[2], sys.argv[3:])
