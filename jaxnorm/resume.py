"""Checkpoints of a run's training, so that a stopped run can be resumed (`--resume`).

The state of the group of seeds in training (`train.TrainState`, leaves (S, ...)) and what
else it carries from chunk to chunk (`group_train.Saved`) are saved with orbax-checkpoint
(atomic step folders, written in the background) beside the run folder, at the end of the
first chunk that ends `every_s` seconds or more after the last save:

    <target>.checkpoints/
      identity.json               which run they are of (`identity`), written first
      <norm>/<group>/<steps>/     orbax's step folder: "arrays" (`group_train.flatten`) and "meta"

Each group keeps its newest checkpoint only; a group that finished training keeps its
last. A resumed run restores each group's newest checkpoint and continues from it; the
chunks are the same programs on the same states, so the finished run is bit-identical to
one that never stopped. What it redoes: the chunks after the last save, and the analysis
of groups that had finished training (it is not saved).

A checkpoint is refused (`ResumeError`, one line) unless its folder's identity matches
the run's exactly (options, seeds, rates, devices, processes, the jaxnorm source and the
versions of JAX) and every array's bytes match the SHA-256 its meta recorded when it was
saved: a damaged or foreign checkpoint is never used.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

import jaxnorm

# The default seconds of training between two saves; saving costs well under 2% of that
# (BENCHMARKS.md, "Checkpoints").
EVERY_S = 300.0
IDENTITY = "identity.json"
FORMAT = 1


class _WithoutOrbax(logging.Filter):
  """Drops orbax's log records (waits, background failures): `Checkpointer` says what a
  stopped run kept, from the checkpoints written whole."""

  def filter(self, record: logging.LogRecord) -> bool:
    return f"{os.sep}orbax{os.sep}" not in record.pathname


logging.getLogger("absl").addFilter(_WithoutOrbax())


class ResumeError(ValueError):
  """A checkpoint that cannot be used, or a folder that cannot hold them (one line)."""


def folder_of(target: Path) -> Path:
  """Where the checkpoints of a run into `target` live: `<target>.checkpoints`, beside it."""
  return target.with_name(target.name + ".checkpoints")


def source_digest() -> str:
  """SHA-256 of the jaxnorm package's Python source: any change of the code that computes a
  run makes its checkpoints another version's."""
  digest = hashlib.sha256()
  for path in sorted(Path(__file__).parent.glob("*.py")):
    digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
  return digest.hexdigest()


def identity(run: str) -> dict[str, Any]:
  """What a checkpoint must have been saved by to be resumed: the run (`run`, the repr of
  its spec and rates), the jaxnorm that computes it, the JAX that runs it and its devices."""
  return {
    "format": FORMAT,
    "run": run,
    "jaxnorm": jaxnorm.__version__,
    "source": source_digest(),
    "jax": jax.__version__,
    "backend": jax.default_backend(),
    "device": jax.devices()[0].device_kind,
    "device_count": jax.device_count(),
    "process_count": jax.process_count(),
  }


def add_options(parser: argparse.ArgumentParser) -> None:
  """--resume, --checkpoint-every and --no-checkpoints, in a group of their own."""
  g = parser.add_argument_group(
    "checkpoints and resume",
    "the training state is saved beside --out, in OUT.checkpoints, every few minutes; a "
    "stopped run continues from there with --resume, bit-identical to one that never "
    "stopped; a finished run removes them",
  )
  g.add_argument(
    "--resume",
    action="store_true",
    help="continue the stopped run whose checkpoints are beside --out (the same command "
    "and options); without checkpoints there, start from step 0",
  )
  g.add_argument(
    "--checkpoint-every",
    type=_seconds,
    default=EVERY_S,
    metavar="SECONDS",
    help="save a checkpoint at the end of the first training chunk this long after the last "
    "(0: after every chunk)",
  )
  g.add_argument(
    "--no-checkpoints", action="store_true", help="save no checkpoints (nothing to resume)"
  )


def _seconds(text: str) -> float:
  try:
    value = float(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
  if not value >= 0 or value == float("inf"):
    raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
  return value


def _digest(flat: dict[str, np.ndarray]) -> str:
  digest = hashlib.sha256()
  for name in sorted(flat):
    x = np.ascontiguousarray(flat[name])
    digest.update(f"{name}:{x.dtype.str}:{x.shape}\0".encode())
    digest.update(x.tobytes())
  return digest.hexdigest()


class Checkpointer:
  """Saves and restores the checkpoints of one run into `folder` (`folder_of(target)`).

  `open` checks the folder before any work; `restore` hands each group its newest
  checkpoint; `due` and `save` are called by the training loop after each chunk; `finish`
  waits for the writes in flight; `remove` deletes the folder once the run is written.
  Over several processes every process calls `due` and `save` at the same chunks (they
  are collectives); only the one with `writes` writes, every process reads.
  """

  def __init__(self, folder: Path, run: str, every_s: float = EVERY_S, writes: bool = True):
    self.folder = Path(folder)
    self.identity = identity(run)
    self._run = hashlib.sha256(json.dumps(self.identity, sort_keys=True).encode()).hexdigest()
    self.every_s = every_s
    self.writes = writes
    self.last_save = time.monotonic()
    self.seconds = 0.0  # spent in `save`, blocking the training loop
    self.saves = 0
    self.saved_to: dict[tuple[str, int], int] = {}  # each group's checkpoint read by `open`
    self.found: list[tuple] = []  # (norm, group, steps, SHA-256) of each, for processes to compare
    self._managers: dict[tuple[str, int], ocp.CheckpointManager] = {}
    self._restored: dict[tuple[str, int], tuple[int, dict[str, np.ndarray]]] = {}

  def open(self, resume: bool) -> int:
    """Checks the folder before the run starts; returns how many groups have a checkpoint.

    Raises ResumeError (one line): without `resume`, if the folder holds checkpoints (a
    stopped run, which a new one would erase); with it, if they are of another run or
    another jaxnorm, or any of them is damaged; either way if the path is taken by
    something else. With `resume` every checkpoint is read and verified here.
    """
    folder = self.folder
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
      raise ResumeError(f"{folder} is in the way of this run's checkpoints: move it away")
    if folder.is_dir() and not (folder / IDENTITY).is_file() and any(folder.iterdir()):
      raise ResumeError(f"{folder} holds files jaxnorm did not write: move it away")
    if not folder.is_dir() or not (folder / IDENTITY).is_file():
      return 0
    if not any(p.name.isdigit() for p in folder.glob("*/*/*")):  # no checkpoint was finished
      if self.writes:
        shutil.rmtree(folder, ignore_errors=True)
      return 0
    if not resume:
      raise ResumeError(
        f"{folder} holds the checkpoints of a stopped run into this folder: --resume "
        "continues it; remove that folder to start over"
      )
    try:
      found = json.loads((folder / IDENTITY).read_text())
    except (OSError, ValueError) as e:
      raise ResumeError(f"{folder / IDENTITY} cannot be read ({e}): remove {folder}") from None
    if not isinstance(found, dict):
      raise ResumeError(f"{folder / IDENTITY} is damaged: remove {folder} to start over")
    if found != self.identity:
      raise ResumeError(f"{folder} {_difference(found, self.identity)}")
    for group in sorted(p for p in folder.glob("*/*") if p.is_dir()):
      key = (group.parent.name, int(group.name)) if group.name.isdigit() else None
      if key is None:
        raise ResumeError(f"{group} is not a checkpoint of this run: remove {folder}")
      read = self._read(key)
      if read is not None:  # else only a write that never finished: the group starts over
        self._restored[key] = read
        self.saved_to[key] = read[0]
        self.found.append((*key, read[0], _digest(read[1])))
    return len(self._restored)

  def _manager(self, key: tuple[str, int]) -> ocp.CheckpointManager:
    if key not in self._managers:
      this = jax.process_index()
      if self.writes:
        (self.folder / key[0] / str(key[1])).mkdir(parents=True, exist_ok=True)
      self._managers[key] = ocp.CheckpointManager(
        self.folder / key[0] / str(key[1]),
        options=ocp.CheckpointManagerOptions(
          max_to_keep=1,
          create=False,
          cleanup_tmp_directories=self.writes,  # what a stopped write left
          enable_async_checkpointing=True,
          multiprocessing_options=ocp.options.MultiprocessingOptions(
            primary_host=this, active_processes={this}
          ),
        ),
        item_names=("arrays", "meta"),
      )
    return self._managers[key]

  def _read(self, key: tuple[str, int]) -> tuple[int, dict[str, np.ndarray]] | None:
    """Group `key`'s newest finished checkpoint, verified, as (steps done, arrays); None
    where no write of it finished."""
    where = self.folder / key[0] / str(key[1])
    try:
      manager = self._manager(key)
      step = manager.latest_step()
      if step is None:
        return None
      with _quiet_failed_reads():
        read = manager.restore(
          step,
          args=ocp.args.Composite(arrays=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore()),
        )
      flat = {name: np.asarray(x) for name, x in read["arrays"].items()}
      meta = read["meta"]
    except Exception as e:  # orbax and tensorstore raise many kinds on damaged files
      first = (str(e).splitlines() or [""])[0][:200]
      raise ResumeError(
        f"the checkpoint in {where} cannot be read ({type(e).__name__}: {first}): "
        f"remove {self.folder} to start over"
      ) from None
    expected = {"done": step, "group": list(key), "run": self._run}
    if not isinstance(meta, dict) or any(meta.get(k) != v for k, v in expected.items()):
      raise ResumeError(
        f"the checkpoint in {where} is not this group's of this run: remove {self.folder}"
      )
    if meta.get("sha256") != _digest(flat):
      raise ResumeError(
        f"the checkpoint in {where} is damaged (its arrays do not match the SHA-256 saved "
        f"with them): remove {self.folder} to start over"
      )
    return step, flat

  def restore(self, norm: str, group: int) -> tuple[int, dict[str, np.ndarray]] | None:
    """Group `group` of `norm`'s newest checkpoint, read and verified by `open`, as (steps
    done, its arrays by name); None if it has none."""
    return self._restored.pop((norm, group), None)

  def due(self) -> bool:
    """Whether the chunk just finished should be saved: `every_s` seconds have passed since
    the last save (decided by process 0 for every process)."""
    due = time.monotonic() - self.last_save >= self.every_s
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(np.asarray(due)))
    return due

  def save(self, norm: str, group: int, done: int, flat: dict[str, np.ndarray]) -> None:
    """Saves the host arrays `flat` as group `group` of `norm`'s newest checkpoint, after
    `done` steps; orbax writes them in the background, into a temporary folder renamed into
    place once whole (only where `writes`)."""
    start = time.monotonic()
    if self.writes:
      if not (self.folder / IDENTITY).is_file():
        self.folder.mkdir(parents=True, exist_ok=True)
        temporary = self.folder / f".{IDENTITY}.tmp"
        temporary.write_text(json.dumps(self.identity, indent=2))
        temporary.replace(self.folder / IDENTITY)
      meta = {"done": done, "sha256": _digest(flat), "group": [norm, group], "run": self._run}
      try:  # a write that failed (a full disk) costs this checkpoint only, never the run
        self._manager((norm, group)).save(
          done,
          args=ocp.args.Composite(arrays=ocp.args.StandardSave(flat), meta=ocp.args.JsonSave(meta)),
        )
      except Exception as e:
        first = (str(e).splitlines() or [""])[0][:200]
        print(f"warning: checkpoint not saved ({type(e).__name__}: {first})", file=sys.stderr)
    self.saves += 1
    self.last_save = time.monotonic()
    self.seconds += self.last_save - start

  def tell_stopped(self, prog: str) -> None:
    """After a stop: waits for the writes in flight, then says, in one line on standard
    error, which checkpoints were written whole (each group's steps)."""
    with contextlib.suppress(Exception):
      self.wait()
    saved = {}
    for key, manager in self._managers.items():
      with contextlib.suppress(Exception):
        manager.reload()  # the steps on disk, the writes just ended included
        saved[key] = manager.latest_step()
    saved = {key: step for key, step in saved.items() if step is not None}
    self.close()
    if not saved or not (self.folder / IDENTITY).is_file():
      return
    kept = ", ".join(f"{norm} group {g}: {steps}" for (norm, g), steps in sorted(saved.items()))
    print(
      f"{prog}: training saved in {self.folder} (steps: {kept}): the same command with "
      "--resume continues from there",
      file=sys.stderr,
    )

  def wait(self) -> None:
    """Waits until the writes in flight end (before the process ends, or another
    Checkpointer reads the folder)."""
    for manager in self._managers.values():
      manager.wait_until_finished()

  def close(self) -> None:
    """Ends orbax's managers (their threads), before the process ends."""
    for manager in self._managers.values():
      with contextlib.suppress(Exception):
        manager.close()
    self._managers.clear()

  def remove(self) -> None:
    """Deletes the checkpoints, once the run they are of is written (after `wait`; a write
    that failed, say on a full disk, no longer matters)."""
    with contextlib.suppress(Exception):
      self.wait()
    self.close()
    if self.writes and (self.folder / IDENTITY).is_file():
      shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def _quiet_failed_reads(linger_s: float = 0.5) -> Iterator[None]:
  """Standard error (the file descriptor) to /dev/null while orbax reads: when a read fails,
  tensorstore's callbacks for the reads still in flight find orbax's event loop closed and
  print tracebacks from its threads; they are given `linger_s` to end. A refusal stays one line."""
  sys.stderr.flush()
  saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 2)
  try:
    yield
  except BaseException:
    time.sleep(linger_s)
    raise
  finally:
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)


def _difference(found: dict, expected: dict) -> str:
  """What makes the checkpoints of `found` another run's than `expected`, in words."""
  if found.get("format") != expected["format"]:
    return f"holds checkpoints of format {found.get('format')!r}, not {expected['format']}"
  for key in ("jaxnorm", "source", "jax", "backend", "device", "device_count", "process_count"):
    if found.get(key) != expected[key]:
      theirs, ours = (str(x)[:12] for x in (found.get(key), expected[key]))
      return (
        f"holds checkpoints written with {key} {theirs}, this run has {ours}: another "
        "jaxnorm (its version or source), JAX or machine cannot resume them; remove that "
        "folder to start over"
      )
  pairs = r"(\w+)=([^,()]*)"
  theirs, ours = re.findall(pairs, found.get("run", "")), re.findall(pairs, expected["run"])
  for (name, value), (our_name, our_value) in zip(theirs, ours, strict=False):
    if name == our_name and value != our_value:
      return (
        f"holds the checkpoints of another run ({name}={value}, this run {name}={our_value}): "
        "resume with the stopped run's options, or remove that folder to start over"
      )
  return (
    "holds the checkpoints of a run with other options: resume with the stopped run's "
    "options, or remove that folder to start over"
  )
