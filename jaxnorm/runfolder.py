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
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import warnings
import zipfile
from pathlib import Path
from typing import Any

MANIFEST = "run.json"
MANIFEST_FORMAT = 1
# What versions before manifests wrote into a run folder: always `LEGACY_RUN`, the others
# with measures or a surface, `variables_<norm>.msgpack` for the normalizations its
# summary.json lists, and per-file temporaries `.<name>.<random>.tmp` if interrupted.
LEGACY_RUN = ("results.npz", "summary.json", "figure2.png", "figure2.pdf")
LEGACY_FILES = (
  "results.npz",
  "summary.json",
  "measures.md",
  "figure2.png",
  "figure2.pdf",
  "surfaces.png",
)
FAULT_ENV = "JAXNORM_FAULT"
# The mark of a `<target>.failed` folder that a failed run left (an empty file): only such
# a folder is replaced by the next failure's or removed by the next success.
FAILED_MARK = ".failed-run"
# Room a run needs below its folder's path, and beside it, for the longest path it writes
# (`.<name>.staging-<pid>/lr_<rate>/variables_<norm>.msgpack`), in bytes.
LONGEST_RELATIVE_PATH = 128
# What a --replot of one run of a sweep rewrites besides its run.json.
REDRAWN = ("figure2.png", "figure2.pdf")


class RunFolderError(ValueError):
  """A run folder that cannot be written or read as asked; the message says why."""


def fault_point(name: str) -> None:
  """A named point where a test can interrupt the process or fail a write: with the
  environment variable JAXNORM_FAULT="<name>:<ACTION>[,<name>:<ACTION> ...]" the process
  sends itself the signal ACTION (e.g. SIGKILL, SIGINT, SIGTERM, SIGHUP) on reaching
  `name`, or, for an errno name (e.g. ENOSPC), raises that OSError there. Does nothing
  when it is unset.

  Points: "write:<file>" halfway through writing each file of a run (and the traceback a
  failed run keeps), "commit" just before the swap, "swapped" between the two renames of
  the fallback swap, "committed" after the swap, before the previous run is deleted,
  "exit" as a script exits with its status (`cli.exit_process`);
  `pipeline` adds "train:<norm>" after every training chunk and "analyze:<norm>" before
  each analysis.
  """
  wanted = os.environ.get(FAULT_ENV)
  if not wanted:
    return
  for item in wanted.split(","):
    point, _, action = item.strip().rpartition(":")
    if point != name:
      continue
    if action.startswith("SIG"):
      os.kill(os.getpid(), getattr(signal, action))
    else:
      code = getattr(errno, action)
      raise OSError(code, os.strerror(code), name)


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


def _files_below(folder: Path) -> tuple[dict[str, Path], list[str]]:
  """The regular files below `folder` by relative POSIX path, and every other entry
  (symbolic links, sockets, ...; folders with nothing below them) as `name/` or `name`."""
  files, others = {}, []
  for path in sorted(folder.rglob("*")):
    name = path.relative_to(folder).as_posix()
    if path.is_symlink() or not (path.is_file() or path.is_dir()):
      others.append(name)
    elif path.is_file():
      files[name] = path
    elif not any(path.iterdir()):
      others.append(name + "/")
  return files, others


def _legacy_files(folder: Path, files: dict[str, Path]) -> set[str] | None:
  """The files a version before manifests wrote into `folder`, if `files` (what it holds)
  can be such a run, else None: `LEGACY_RUN` all present, a summary.json whose "norms" are
  the normalizations results.npz holds arrays of, and beside them only the rest of
  `LEGACY_FILES`, the variables of those normalizations and per-file temporaries."""
  if not all(name in files for name in LEGACY_RUN):
    return None
  try:
    norms = json.loads((folder / "summary.json").read_text())["norms"]
    with zipfile.ZipFile(folder / "results.npz") as npz:
      in_npz = {name.split("/", 1)[0] for name in npz.namelist() if "/" in name}
  except (OSError, ValueError, KeyError, TypeError, RecursionError, zipfile.BadZipFile):
    return None
  if not isinstance(norms, dict) or not norms or set(norms) != in_npz:
    return None
  return set(LEGACY_FILES) | {f"variables_{norm}.msgpack" for norm in norms}


def _run_files(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
  """Every file of the run in `folder` (which has a run.json) with its expected size and
  SHA-256, and what stops the run from being whole (empty: nothing).

  The files are those its run.json lists. A sub-run (a learning-rate sweep's run at one
  rate, its run.json listed) may have been redrawn alone since (`--replot` of it rewrites
  its figure and run.json): its files are as its own run.json lists them (its run.json as
  it is now), and every other file of it must still be the one the folder's run.json
  lists, or the sub-run is not the run the folder holds (say, another run written into
  the sub-folder). A sub-run whose run.json is gone is checked against the folder's.
  Raises RunFolderError for a run.json jaxnorm cannot read."""
  listed = manifest(folder)["files"]
  subruns = _subruns(listed)
  files = {n: e for n, e in listed.items() if not any(n.startswith(d + "/") for d in subruns)}
  problems = []
  for sub in sorted(subruns):
    recorded = {n[len(sub) + 1 :]: e for n, e in listed.items() if n.startswith(sub + "/")}
    own_manifest = folder / sub / MANIFEST
    if not own_manifest.is_file() or own_manifest.is_symlink():
      files.update({f"{sub}/{n}": e for n, e in recorded.items() if n != MANIFEST})
      continue
    own, own_problems = _run_files(folder / sub)
    problems += [f"{sub}/{problem}" for problem in own_problems]
    for name, entry in own.items():
      if name not in (MANIFEST, *REDRAWN) and recorded.get(name) != entry:
        problems.append(f"{sub}/{name} (not the file of the run {folder / MANIFEST} lists)")
    digest = {"bytes": own_manifest.stat().st_size, "sha256": _sha256(own_manifest)}
    files.update({f"{sub}/{n}": e for n, e in own.items()})
    files[f"{sub}/{MANIFEST}"] = digest
  return files, problems


def unreplaceable(folder: Path) -> list[str]:
  """Why a run may not replace the existing folder `folder`: the entries that are not
  what a jaxnorm run left there (empty: it may).

  A folder with a run.json may be replaced when every file below it is one of its run
  (`_run_files`: the files its run.json lists, a sweep's runs as their own run.json
  lists them), unchanged; beside a sub-run, only the empty lock a replot of it leaves.
  A folder without run.json (written before manifests) may be replaced only when it holds
  what such a version wrote (`_legacy_files`). Raises RunFolderError for a run.json
  jaxnorm cannot read.
  """
  files, problems = _files_below(folder)
  if not files and not problems:
    return []  # empty
  if manifest(folder) is None:
    allowed = _legacy_files(folder, files)
    if allowed is None:
      return sorted([*problems, *files] or ["(not a run of an earlier version)"])
    for name in files:
      temporary = name.endswith(".tmp") and any(name.startswith(f".{a}.") for a in allowed)
      if name not in allowed and not temporary:
        problems.append(name)
    return sorted(problems)
  expected, run_problems = _run_files(folder)
  problems += run_problems
  locks = {f".{sub}.lock" for sub in _subruns(expected) if "/" not in sub}
  for name, path in files.items():
    if name == MANIFEST or (name in locks and path.stat().st_size == 0):
      continue
    entry = expected.get(name)
    if entry is None:
      problems.append(name)
    elif path.stat().st_size != entry["bytes"] or _sha256(path) != entry["sha256"]:
      problems.append(f"{name} (changed or truncated since the run wrote it)")
  return sorted(set(problems))


def _subruns(listed: dict[str, Any]) -> set[str]:
  """The sub-folders that a run.json's file list holds runs of (their run.json listed)."""
  return {name[: -len(MANIFEST) - 1] for name in listed if name.endswith("/" + MANIFEST)}


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


# A closed terminal (SIGHUP), Ctrl-C (SIGINT) and SIGTERM stop a run alike.
STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_handled(handler):
  """Within the block, `handler(signum, frame)` handles the `STOP_SIGNALS`; the previous
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
  """Stop signals that arrive within the block take effect when it ends, so a
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
    expected, problems = _run_files(self.target)
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
      p.relative_to(root).as_posix(): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
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


def begin(target: str | os.PathLike) -> Staging:
  """Checks `target` (`check_target`), takes its lock, puts back a previous run an
  interrupted swap left aside, removes staging folders of interrupted runs and creates a
  fresh staging folder. Raises RunFolderError with a one-line reason. A target that is a
  symbolic link is followed: the run replaces the folder it points to."""
  if not os.fspath(target):
    raise RunFolderError("the output folder is an empty string: name a folder")
  try:
    target = Path(os.path.realpath(target))
  except (OSError, ValueError) as e:
    raise RunFolderError(f"cannot use {target!r} as a folder: {e}") from None
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


def _manifest_problem(info: Any) -> str | None:
  """What is wrong with the shape of a parsed run.json (None: nothing)."""
  if not isinstance(info, dict):
    return f"a JSON {type(info).__name__}, not an object"
  files = info.get("files")
  if not isinstance(files, dict):
    return "no file list ('files' is not an object)"
  for name, entry in files.items():
    parts = name.split("/")
    if name.startswith("/") or any(part in ("", ".", "..") for part in parts):
      return f"the listed path {name!r} is not a path inside the folder"
    if not isinstance(entry, dict):
      return f"the entry of {name!r} is not an object"
    size, digest = entry.get("bytes"), entry.get("sha256")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
      return f"the size of {name!r} is not a byte count"
    if not isinstance(digest, str) or not re.fullmatch("[0-9a-f]{64}", digest):
      return f"the SHA-256 of {name!r} is not 64 hexadecimal digits"
  return None


def manifest(folder: str | os.PathLike) -> dict[str, Any] | None:
  """The folder's run.json, or None for a folder without one (written before manifests,
  or whose manifest was removed). Raises RunFolderError for a run.json that is not a
  manifest of the expected shape."""
  path = Path(folder) / MANIFEST
  if not path.exists():
    return None
  try:
    info = json.loads(path.read_text())
  except (OSError, ValueError, RecursionError) as e:
    raise RunFolderError(
      f"{path} is not a run manifest jaxnorm can read ({type(e).__name__}: {e})"
    ) from None
  problem = _manifest_problem(info)
  if problem:
    raise RunFolderError(f"{path} is not a run manifest jaxnorm can read ({problem})")
  return info


class UncheckedWarning(UserWarning):
  """Files read from a folder without run.json, so unchecked."""


def verify(folder: str | os.PathLike, names: tuple[str, ...]) -> None:
  """Raises RunFolderError unless each of `names` in `folder` is the file its run.json
  lists (same size and SHA-256). A folder without run.json passes unchecked with an
  `UncheckedWarning`: it may be read, but never rewritten (`--replot` refuses it)."""
  folder = Path(folder)
  info = manifest(folder)
  if info is None:
    warnings.warn(
      f"{folder} has no {MANIFEST} (written before manifests, or removed since): its files "
      "are read unchecked",
      UncheckedWarning,
      stacklevel=3,
    )
    return
  for name in names:
    listed, path = info["files"].get(name), folder / name
    if listed is None:
      raise RunFolderError(f"{path} is not part of the run that {folder / MANIFEST} lists")
    if not path.is_file():
      raise RunFolderError(f"{path} is missing (listed in {folder / MANIFEST})")
    if path.stat().st_size != listed["bytes"] or _sha256(path) != listed["sha256"]:
      raise RunFolderError(
        f"{path} is not the file {folder / MANIFEST} lists (changed or truncated since "
        "the run wrote it)"
      )
