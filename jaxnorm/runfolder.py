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

This module (with `manifest` and `signals`) needs the standard library only.
"""

from __future__ import annotations

import ctypes
import datetime
import errno
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

from jaxnorm.manifests import (
  MANIFEST,
  MANIFEST_FORMAT,
  RunFolderError,
  manifest,
  run_files,
  sha256,
  unreplaceable,
)
from jaxnorm.signals import signals_deferred

# The mark of a `<target>.failed` folder that a failed run left (an empty file): only such
# a folder is replaced by the next failure's or removed by the next success.
FAILED_MARK = ".failed-run"
# Room a run needs below its folder's path, and beside it, for the longest path it writes
# (`.<name>.staging-<pid>/lr_<rate>/variables_<norm>.msgpack`), in bytes.
LONGEST_RELATIVE_PATH = 128


def write_bytes(path: Path, data: bytes) -> None:
  """Writes `data` to `path` (a file of a staging folder) and fsyncs it."""
  with open(path, "wb") as f:
    f.write(data)
    f.flush()
    os.fsync(f.fileno())


def _mount_points() -> set[str]:
  """The mount points of this process (Linux: /proc/self/mountinfo; elsewhere none)."""
  try:
    lines = Path("/proc/self/mountinfo").read_text().splitlines()
  except OSError:
    return set()
  unescape = lambda field: re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), field)
  return {unescape(line.split()[4]) for line in lines if len(line.split()) > 4}


def _check_name_lengths(target: Path) -> None:
  """Refuses a target whose name, or the name of a folder beside it that a run makes
  (`.<name>.staging-<pid>`, `.<name>.previous-<pid>`, `<name>.failed`), is longer than
  the file system allows."""
  limit = _pathconf(target, "PC_NAME_MAX", 255)
  for part in target.parts:
    if len(os.fsencode(part)) > limit:
      raise RunFolderError(
        f"{target}: a folder name in it is too long ({len(os.fsencode(part))} bytes, at "
        f"most {limit} a name): choose a shorter name"
      )
  path_limit = _pathconf(target, "PC_PATH_MAX", 4096)
  if len(os.fsencode(str(target))) + LONGEST_RELATIVE_PATH > path_limit:
    raise RunFolderError(
      f"{target}: the path is too long ({len(os.fsencode(str(target)))} bytes; the run's "
      f"files inside it need up to {LONGEST_RELATIVE_PATH} more, at most {path_limit} a "
      "path): choose a shorter one"
    )
  longest = max(
    len(os.fsencode(name))
    for name in (target.name, _sibling(target, "previous", 2**22).name, target.name + ".failed")
  )
  if longest > limit:
    raise RunFolderError(
      f"{target}: the folder name is too long ({len(os.fsencode(target.name))} bytes; the "
      f"run also writes {_sibling(target, 'previous').name}, at most {limit} bytes a name): "
      "choose a shorter name"
    )


def _pathconf(target: Path, name: str, default: int) -> int:
  """The file system's limit `name` (os.pathconf) where `target` is, or will be, made."""
  try:
    return os.pathconf(next(p for p in (target, *target.parents) if p.exists()), name)
  except (OSError, ValueError, StopIteration):
    return default


def check_target(target: Path) -> None:
  """Raises RunFolderError, with a one-line reason, unless a run can replace `target` (an
  absolute path): a path that does not exist yet below folders only, an empty folder,
  or a folder that holds one whole run and nothing else (`unreplaceable`). Never the
  working directory or a folder above it, never a mount point (the run's staging folder
  beside it could not take its place)."""
  try:
    _check_name_lengths(target)
    cwd = Path.cwd().resolve()
    if target == cwd or target in cwd.parents:
      raise RunFolderError(
        f"{target} is the working directory or a folder above it, which a run would "
        "replace as a whole: choose a folder below it, e.g. runs/NAME"
      )
    if target.is_symlink():  # still a link after os.path.realpath: a loop
      raise RunFolderError(
        f"{target} is a loop of symbolic links: remove it, or choose another folder"
      )
    if target.exists() and not target.is_dir():
      raise RunFolderError(f"{target} is a file, not a folder")
    for parent in target.parents:
      if parent.exists():
        if not parent.is_dir():
          raise RunFolderError(f"{target} cannot be created: {parent} is a file")
        break
    if not target.is_dir():
      return
    if os.path.ismount(target) or str(target) in _mount_points():
      raise RunFolderError(
        f"{target} is a mount point: a run is written beside its folder and swapped into "
        "its place, which a mount point cannot take: choose a folder inside it"
      )
    problems = unreplaceable(target)
  except OSError as e:
    raise RunFolderError(f"cannot use {target}: {e.strerror or e}") from None
  if problems:
    shown = ", ".join(problems[:5]) + (", ..." if len(problems) > 5 else "")
    raise RunFolderError(
      f"{target} holds files that are not the run jaxnorm wrote there ({shown}), which "
      "rewriting the folder as a whole would lose: move them away, or choose a new folder"
    )


def _check_not_a_sub_run(target: Path) -> None:
  """Raises RunFolderError if `target` is one run of the sweep in its parent folder: a new
  run there would make the sweep's own record of it false."""
  try:
    listed = manifest(target.parent)
  except RunFolderError:
    return  # the parent is no run jaxnorm wrote: nothing of it to keep whole
  if listed and f"{target.name}/{MANIFEST}" in listed["files"]:
    raise RunFolderError(
      f"{target} is one run of the sweep in {target.parent}, which a new run there would "
      "break: choose another folder (or rerun the sweep)"
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


def _fsync_dir(path: Path) -> None:
  fd = os.open(path, os.O_RDONLY)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def _failed(target: Path) -> Path:
  return target.with_name(target.name + ".failed")


def _remove_failed(target: Path) -> None:
  """Removes `<target>.failed` if a failed run left it there (it holds `FAILED_MARK`);
  a folder of that name that jaxnorm did not make stays."""
  failed = _failed(target)
  if failed.is_dir() and not failed.is_symlink() and (failed / FAILED_MARK).is_file():
    shutil.rmtree(failed, ignore_errors=True)


class Staging:
  """A run being written: files go into `path`; `commit` swaps it in as `target`,
  `discard` removes it, `keep_as_failed` moves it to `<target>.failed`. Use `begin`."""

  def __init__(self, target: Path, path: Path, lock_fd: int):
    self.target = target
    self.path = path
    self.committed = False
    self.had_previous_run = target.is_dir() and any(target.iterdir())
    self._lock_fd: int | None = lock_fd
    self._carried: dict[str, dict[str, Any]] = {}

  def carry_over(self, replaced: set[str] = frozenset()) -> None:
    """Puts every file of the target's current run, except the top-level ones named in
    `replaced` and its run.json, into the new one unchanged (hard links, or copies where
    the file system has none): the files its run.json lists, those of a sub-run (a
    sweep's run, maybe rewritten alone since) as the sub-run's own run.json lists them.
    Each must still be that file when the new manifest is written (`write_manifest`
    checks it). Raises RunFolderError for a target without run.json."""
    if manifest(self.target) is None:
      raise RunFolderError(f"{self.target} has no {MANIFEST}: nothing says which are its run's")
    expected, problems = run_files(self.target)
    if problems:
      raise RunFolderError(f"{self.target} does not hold one whole run ({problems[0]})")
    for name, entry in expected.items():
      source, path = self.target / name, self.path / name
      if name in replaced or name == MANIFEST or not source.is_file():
        continue  # a listed file removed since is not part of the new run
      path.parent.mkdir(parents=True, exist_ok=True)
      try:
        os.link(source, path)  # the same bytes; a later change of either shows in both
      except OSError:
        shutil.copy2(source, path)
      self._carried[name] = entry

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
      p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": sha256(p)}
      for p in sorted(root.rglob("*"))
      if p.is_file() and p != root / MANIFEST
    }
    for name, entry in self._carried.items() if not folder else ():
      if files.get(name) != {"bytes": entry["bytes"], "sha256": entry["sha256"]}:
        raise RunFolderError(
          f"{self.target / name} changed while it was carried over from the previous run"
        )
    written = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    manifest = {"format": MANIFEST_FORMAT, "written": written, **info, "files": files}
    self.write(str(Path(folder) / MANIFEST), json.dumps(manifest, indent=2).encode())

  def commit(self, info: dict[str, Any]) -> None:
    """Writes the manifest (`write_manifest`) and puts the run in the target's place in
    one step; the previous run is then deleted."""
    self.write_manifest(info)
    _fsync_dir(self.path)
    with signals_deferred():
      if not self.target.exists():
        os.rename(self.path, self.target)
        old = None
      elif exchange is not None and exchange(self.path, self.target):
        old = self.path
      else:
        old = _sibling(self.target, "previous", os.getpid())
        os.rename(self.target, old)
        os.rename(self.path, self.target)
      self.committed = True
      _fsync_dir(self.target.parent)
      if old is not None:
        shutil.rmtree(old, ignore_errors=True)
      _remove_failed(self.target)
    self._unlock()

  def discard(self) -> None:
    """Removes the staging folder; the target keeps what it held."""
    if not self.committed:
      shutil.rmtree(self.path, ignore_errors=True)
    self._unlock()

  def keep_as_failed(self) -> Path:
    """Moves what was written to `<target>.failed` (replacing one an earlier failure left)
    for a look after an error; the target keeps what it held. Returns the new path.
    Raises OSError if it cannot (e.g. a folder of that name that jaxnorm did not make)."""
    failed = _failed(self.target)
    os.close(os.open(self.path / FAILED_MARK, os.O_CREAT | os.O_WRONLY, 0o666))
    _remove_failed(self.target)
    os.rename(self.path, failed)  # fails if a folder jaxnorm did not make is there
    self._unlock()
    return failed

  def _unlock(self) -> None:
    if self._lock_fd is not None:
      os.close(self._lock_fd)  # releases the flock
      self._lock_fd = None


def begin(target: str | os.PathLike, *, sub_run: bool = False) -> Staging:
  """Checks `target` (`check_target`), takes its lock, puts back a previous run an
  interrupted swap left aside, removes staging folders of interrupted runs and creates a
  fresh staging folder. Raises RunFolderError with a one-line reason. A target that is a
  symbolic link is followed: the run replaces the folder it points to. A run of a sweep
  (a sub-run its folder's run.json lists) is refused unless `sub_run` (a replot of it:
  the same data, which keeps the sweep whole)."""
  if not os.fspath(target):
    raise RunFolderError("the output folder is an empty string: name a folder")
  try:
    target = Path(os.path.realpath(target))
  except (OSError, ValueError) as e:
    raise RunFolderError(f"cannot use {target!r} as a folder: {e}") from None
  check_target(target)
  if not sub_run:
    _check_not_a_sub_run(target)
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
