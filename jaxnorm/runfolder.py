"""A run folder holds one whole run or none: staged beside its target, swapped in at once.

Every file of a run is written into a staging folder next to the target,
`<parent>/.<name>.staging-<pid>`, and its manifest `run.json` last (every file's size and
SHA-256, the versions that wrote them). Only then does the staging folder take the
target's place, in one step:

  * on Linux, `renameat2(RENAME_EXCHANGE)` swaps the two folders atomically; the previous
    run, now at the staging name, is then deleted;
  * elsewhere (or on a file system without the exchange), the target is renamed to
    `.<name>.previous-<pid>` and the staging folder to the target: two renames, between
    which the target is briefly missing; the next run into the same target (or `recover`)
    puts the previous run back if a process died in between.

So after an interruption at any instant, SIGKILL included, the target holds exactly the
previous complete run or exactly the new complete run (on Linux), and the next run into
the same target removes whatever staging folder was left behind. Two runs cannot write the
same target at once: a run holds an advisory lock, `<parent>/.<name>.lock` (an empty file
that stays), from `begin` to `commit` or `discard`.

Only whole process interruptions are covered: files are fsync'ed before the swap, but a
power loss can still lose a rename the file system had not written out.

This module needs the standard library only, so a test can drive it in a bare subprocess
(see `fault_point`).
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import threading
from pathlib import Path
from typing import Any

MANIFEST = "run.json"
MANIFEST_FORMAT = 1
# What jaxnorm writes into a run folder; a folder holding anything else is not replaced.
OUTPUT_PATTERNS = (
  MANIFEST,
  "results.npz",
  "summary.json",
  "measures.md",
  "figure2.png",
  "figure2.pdf",
  "surfaces.png",
  "hessian_density.png",
  "curvature.png",
  "variables_*.msgpack",
  ".*.tmp",  # per-file temporaries of versions before run folders were staged
  # A learning-rate sweep (`jaxnorm.sweep`): its tables and figure, and one run per rate
  # (a `SUBRUN_PATTERN` folder, itself a run folder, maybe locked by a --replot of it).
  "sweep.md",
  "sweep.json",
  "sweep.png",
  ".*.lock",
)
SUBRUN_PATTERN = "lr_*"
FAULT_ENV = "JAXNORM_FAULT"


class RunFolderError(ValueError):
  """A run folder that cannot be written or read as asked; the message says why."""


def fault_point(name: str) -> None:
  """A named point where a test can interrupt the process: with the environment variable
  JAXNORM_FAULT="<name>:<SIGNAL>[,<name>:<SIGNAL> ...]" the process sends itself SIGNAL
  (e.g. SIGKILL, SIGINT, SIGTERM) on reaching `name`. Does nothing when it is unset.

  Points: "write:<file>" halfway through writing each file of a run, "commit" just before
  the swap, "swapped" between the two renames of the fallback swap, "committed" after the
  swap, before the previous run is deleted; `pipeline` adds "train:<norm>" after every
  training chunk and "analyze:<norm>" before each analysis.
  """
  wanted = os.environ.get(FAULT_ENV)
  if not wanted:
    return
  for item in wanted.split(","):
    point, _, signal_name = item.strip().rpartition(":")
    if point == name:
      os.kill(os.getpid(), getattr(signal, signal_name))


def write_bytes(path: Path, data: bytes) -> None:
  """Writes `data` to `path` (a file of a staging folder) and fsyncs it."""
  with open(path, "wb") as f:
    half = len(data) // 2
    f.write(data[:half])
    f.flush()
    fault_point(f"write:{path.name}")
    f.write(data[half:])
    f.flush()
    os.fsync(f.fileno())


def foreign_entries(folder: Path) -> list[str]:
  """The entries of `folder` (and of its sub-run folders) that are not what jaxnorm writes
  into a run folder."""
  foreign = []
  for entry in sorted(folder.iterdir()):
    if entry.is_dir() and fnmatch.fnmatchcase(entry.name, SUBRUN_PATTERN):
      foreign += [f"{entry.name}/{name}" for name in foreign_entries(entry)]
    elif entry.is_dir() or not any(fnmatch.fnmatchcase(entry.name, p) for p in OUTPUT_PATTERNS):
      foreign.append(entry.name + ("/" if entry.is_dir() else ""))
  return foreign


def check_target(target: Path) -> None:
  """Raises RunFolderError unless a run can replace `target`: a folder jaxnorm wrote, an
  empty folder, or a path that does not exist yet below folders only."""
  if target.exists() and not target.is_dir():
    raise RunFolderError(f"{target} is a file, not a folder")
  for parent in target.parents:
    if parent.exists():
      if not parent.is_dir():
        raise RunFolderError(f"{target} cannot be created: {parent} is a file")
      break
  if target.is_dir():
    foreign = foreign_entries(target)
    if foreign:
      shown = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
      raise RunFolderError(
        f"{target} holds files jaxnorm did not write ({shown}); a run replaces its whole "
        "folder: choose a new or empty folder"
      )


def _sibling(target: Path, kind: str, pid: int | str = "*") -> Path:
  return target.parent / f".{target.name}.{kind}-{pid}"


def recover(target: Path) -> bool:
  """Puts the previous run back at `target` if a fallback swap was interrupted between
  its two renames (the target missing, `.<name>.previous-<pid>` present). Call it holding
  the target's lock. Returns whether it did."""
  if target.exists():
    return False
  previous = sorted(target.parent.glob(_sibling(target, "previous").name))
  if not previous:
    return False
  os.rename(previous[-1], target)
  return True


def _exchange_linux(a: Path, b: Path) -> bool:
  """Atomically swaps the paths a and b (renameat2 with RENAME_EXCHANGE). False where the
  C library, kernel or file system does not offer it."""
  renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
  if renameat2 is None:
    return False
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
    return False
  raise OSError(code, os.strerror(code), str(a))


# Swapping two folders in one step; tests set it to None to exercise the fallback.
exchange = _exchange_linux if os.uname().sysname == "Linux" else None


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_handled(handler):
  """Within the block, `handler(signum, frame)` handles SIGINT and SIGTERM; the previous
  handlers come back after it. In the main thread only (elsewhere Python cannot set
  handlers, and the block runs as is)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
  try:
    yield
  finally:
    for s, old in previous.items():
      signal.signal(s, old)


@contextlib.contextmanager
def signals_deferred():
  """SIGINT and SIGTERM that arrive within the block take effect when it ends, so a
  Ctrl-C never lands between the swap and the record that it happened.

  Python runs signal handlers in the main thread whichever thread the kernel delivered the
  signal to, so handlers (not a signal mask) defer them: they are noted and raised again
  after the block, under the handlers that were in place before it.
  """
  received: list[int] = []
  with signals_handled(lambda signum, frame: received.append(signum)):
    yield
  if received:
    signal.raise_signal(received[0])


def _fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


class Staging:
  """A run being written: files go into `path`; `commit` swaps it in as `target`,
  `discard` removes it, `keep_as_failed` moves it to `<target>.failed`. Use `begin`."""

  def __init__(self, target: Path, path: Path, lock_fd: int):
    self.target = target
    self.path = path
    self.committed = False
    self.had_previous_run = target.is_dir() and any(target.iterdir())
    self._lock_fd: int | None = lock_fd

  def write(self, name: str, data: bytes) -> Path:
    """Writes the file `name` of the run (a path relative to the run folder)."""
    path = self.path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, data)
    return path

  def write_manifest(self, info: dict[str, Any], folder: str = "") -> None:
    """Writes `folder`/run.json (default: the run's own): every file below `folder`, as
    a path relative to it, with its size and SHA-256, plus `info`."""
    root = self.path / folder
    files = {
      p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
      for p in sorted(root.rglob("*"))
      if p.is_file() and p != root / MANIFEST
    }
    written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest = {"format": MANIFEST_FORMAT, "written": written, **info, "files": files}
    self.write(str(Path(folder) / MANIFEST), json.dumps(manifest, indent=2).encode())

  def commit(self, info: dict[str, Any]) -> None:
    """Writes the manifest (`write_manifest`) and puts the run in the target's place in
    one step; the previous run is then deleted."""
    self.write_manifest(info)
    _fsync_dir(self.path)
    with signals_deferred():
      fault_point("commit")
      if not self.target.exists():
        os.rename(self.path, self.target)
        old = None
      elif exchange is not None and exchange(self.path, self.target):
        old = self.path
      else:
        old = _sibling(self.target, "previous", os.getpid())
        os.rename(self.target, old)
        fault_point("swapped")
        os.rename(self.path, self.target)
      self.committed = True
      _fsync_dir(self.target.parent)
      fault_point("committed")
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
      failed = self.target.with_name(self.target.name + ".failed")
      if failed.is_dir():
        shutil.rmtree(failed, ignore_errors=True)
    self._unlock()

  def discard(self) -> None:
    """Removes the staging folder; the target keeps what it held."""
    if not self.committed:
      shutil.rmtree(self.path, ignore_errors=True)
    self._unlock()

  def keep_as_failed(self) -> Path:
    """Moves what was written to `<target>.failed` (replacing an older one) for a look
    after an error; the target keeps what it held. Returns the new path."""
    failed = self.target.with_name(self.target.name + ".failed")
    shutil.rmtree(failed, ignore_errors=True)
    os.rename(self.path, failed)
    self._unlock()
    return failed

  def _unlock(self) -> None:
    if self._lock_fd is not None:
      os.close(self._lock_fd)  # releases the flock
      self._lock_fd = None


def begin(target: str | os.PathLike) -> Staging:
  """Checks `target` (`check_target`), takes its lock, puts back a previous run an
  interrupted swap left aside, removes staging folders of interrupted runs and creates a
  fresh staging folder. Raises RunFolderError with a one-line reason. A target that is a
  symbolic link is followed: the run replaces the folder it points to."""
  target = Path(os.path.realpath(target))
  check_target(target)
  try:
    target.parent.mkdir(parents=True, exist_ok=True)
    lock_fd = os.open(target.parent / f".{target.name}.lock", os.O_CREAT | os.O_RDWR, 0o666)
  except OSError as e:
    raise RunFolderError(f"cannot write {target}: {e.strerror or e}") from None
  try:
    fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError:
    os.close(lock_fd)
    raise RunFolderError(f"another run is writing {target} right now") from None
  try:
    recover(target)
    check_target(target)
    for kind in ("staging", "previous"):
      for stale in target.parent.glob(_sibling(target, kind).name):
        shutil.rmtree(stale, ignore_errors=True)
    if target.is_dir():
      for temporary in target.glob(".*.tmp"):
        temporary.unlink()
    path = _sibling(target, "staging", os.getpid())
    path.mkdir(mode=0o777)
  except (OSError, RunFolderError) as e:
    os.close(lock_fd)
    if isinstance(e, RunFolderError):
      raise
    raise RunFolderError(f"cannot write {target}: {e.strerror or e}") from None
  return Staging(target, path, lock_fd)


def manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
  """The folder's run.json, or None for a folder written before manifests existed."""
  path = Path(folder) / MANIFEST
  if not path.exists():
    return None
  try:
    info = json.loads(path.read_text())
    if not isinstance(info.get("files"), dict):
      raise ValueError("no file list")
    return info
  except (OSError, ValueError, AttributeError) as e:
    raise RunFolderError(f"{path} is not a run manifest jaxnorm can read ({e})") from None


def verify(folder: str | os.PathLike, names: tuple[str, ...]) -> None:
  """Raises RunFolderError unless each of `names` in `folder` is the file its run.json
  lists (same size and SHA-256). A folder without run.json (written before manifests)
  passes unchecked."""
  folder = Path(folder)
  info = manifest(folder)
  if info is None:
    return
  for name in names:
    listed, path = info["files"].get(name), folder / name
    if listed is None:
      raise RunFolderError(f"{path} is not part of the run that {folder / MANIFEST} lists")
    if not path.is_file():
      raise RunFolderError(f"{path} is missing (listed in {folder / MANIFEST})")
    if path.stat().st_size != listed.get("bytes") or _sha256(path) != listed.get("sha256"):
      raise RunFolderError(
        f"{path} is not the file {folder / MANIFEST} lists (changed or truncated since "
        "the run wrote it)"
      )
