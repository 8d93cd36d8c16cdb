"""Run manifests: `run.json` lists every file of a run folder with its size and SHA-256,
and the checks built on it. `verify` checks files before they are read; `unreplaceable`
says which files below a folder are not a run's (the files a run may replace)."""

from __future__ import annotations

import hashlib
import json
import os
import re
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
# What a --replot of one run (of a sweep too) rewrites besides its run.json: Figure 2,
# and the layer figures where the run has their data.
REDRAWN = tuple(
  f"{stem}.{ext}" for stem in ("figure2", "layers", "isotropy_depth") for ext in ("png", "pdf")
)


class RunFolderError(ValueError):
  """A run folder that cannot be written or read as asked; the message says why."""


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


def run_files(folder: Path) -> tuple[dict[str, dict[str, Any]], list[str]]:
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
    own, own_problems = run_files(folder / sub)
    problems += [f"{sub}/{problem}" for problem in own_problems]
    for name, entry in own.items():
      if name not in (MANIFEST, *REDRAWN) and recorded.get(name) != entry:
        problems.append(f"{sub}/{name} (not the file of the run {folder / MANIFEST} lists)")
    digest = {"bytes": own_manifest.stat().st_size, "sha256": sha256(own_manifest)}
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
  expected, run_problems = run_files(folder)
  problems += run_problems
  locks = {f".{sub}.lock" for sub in _subruns(expected) if "/" not in sub}
  for name, path in files.items():
    if name == MANIFEST or (name in locks and path.stat().st_size == 0):
      continue
    entry = expected.get(name)
    if entry is None:
      problems.append(name)
    elif path.stat().st_size != entry["bytes"] or sha256(path) != entry["sha256"]:
      problems.append(f"{name} (changed or truncated since the run wrote it)")
  return sorted(set(problems))


def _subruns(listed: dict[str, Any]) -> set[str]:
  """The sub-folders that a run.json's file list holds runs of (their run.json listed)."""
  return {name[: -len(MANIFEST) - 1] for name in listed if name.endswith("/" + MANIFEST)}


def sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


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
    if path.stat().st_size != listed["bytes"] or sha256(path) != listed["sha256"]:
      raise RunFolderError(
        f"{path} is not the file {folder / MANIFEST} lists (changed or truncated since "
        "the run wrote it)"
      )
