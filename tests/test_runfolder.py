"""A run folder holds one whole run or none (`jaxnorm.runfolder`).

The fault-injection tests write runs from bare subprocesses (the standard library and
runfolder.py only, no JAX: milliseconds each), kill them with SIGKILL, SIGINT or SIGTERM at
every point of a write (halfway through each file, before the swap, between the fallback's
two renames, after the swap: the points of faults.py, injected from outside the module) and
check after each kill that the folder holds exactly the previous complete run or exactly
the new one, and that the next run leaves no stray staging folder. End-to-end
interruptions of the experiment script: test_faults.py.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnorm import manifests, runfolder

RUNFOLDER = Path(runfolder.__file__)
TESTS = Path(__file__).parent
FILES = ("variables_none.msgpack", "results.npz", "summary.json", "figure2.png", "measures.md")

# Writes one run tagged `tag` into `target`, with the faults of `fault` (faults.py); with
# fallback=1, without the atomic exchange.
WRITER = """
import importlib.util, signal, sys
# Ctrl-C as in a process started from a terminal, also when pytest runs as a background
# job of a shell, which starts its processes with SIGINT ignored.
signal.signal(signal.SIGINT, signal.default_int_handler)
tests, path, fault, target, tag, fallback, *names = sys.argv[1:]
sys.path.insert(0, tests)
import faults
spec = importlib.util.spec_from_file_location("runfolder", path)
runfolder = importlib.util.module_from_spec(spec)
spec.loader.exec_module(runfolder)
if fallback == "1":
  runfolder.exchange = None
injected = faults.Faults(fault)
faults.patch_runfolder(injected, runfolder)
with faults.checked(injected):
  staging = runfolder.begin(target)
  for name in names:
    staging.write(name, (f"{tag}:{name}:" + "x" * 5000).encode())
  staging.commit({"tag": tag})
"""


def write_run(target: Path, tag: str, fault: str = "", fallback: bool = False):
  args = [str(TESTS), str(RUNFOLDER), fault, str(target), tag, "1" if fallback else "0", *FILES]
  return subprocess.run(
    [sys.executable, "-c", WRITER, *args], capture_output=True, text=True, timeout=60
  )


def run_tag(target: Path) -> str:
  """The tag of the one whole run `target` holds; fails the test on anything else."""
  manifest = json.loads((target / manifests.MANIFEST).read_text())
  assert sorted(p.name for p in target.iterdir()) == sorted([*FILES, manifests.MANIFEST])
  manifests.verify(target, FILES)
  tags = {(target / name).read_text().split(":")[0] for name in FILES}
  assert tags == {manifest["tag"]}, f"files of different runs: {tags}"
  return manifest["tag"]


def strays(target: Path) -> list[str]:
  lock = f".{target.name}.lock"
  return sorted(p.name for p in target.parent.iterdir() if p.name not in (target.name, lock))


POINTS = [f"write:{name}" for name in (*FILES, manifests.MANIFEST)] + ["commit", "committed"]


@pytest.mark.parametrize("fallback", [False, True], ids=["exchange", "two-renames"])
def test_a_killed_write_leaves_the_previous_or_the_new_run_and_nothing_after_the_next(
  tmp_path, fallback
):
  points = POINTS + (["swapped"] if fallback else [])
  for i, point in enumerate(points):
    for signal_name in ("SIGKILL", "SIGINT", "SIGTERM"):
      target = tmp_path / f"{i}-{signal_name}" / "run"
      assert write_run(target, "old", fallback=fallback).returncode == 0
      proc = write_run(target, "new", f"{point}:{signal_name}", fallback)
      signum = getattr(signal, signal_name)
      died = proc.returncode in (-signum, 1)  # 1: KeyboardInterrupt's traceback
      assert died, (point, signal_name, proc.returncode, proc.stderr)
      if point == "swapped" and signal_name == "SIGKILL":  # between the two renames
        runfolder.begin(target).discard()  # the next run takes the lock, puts the old back
        assert run_tag(target) == "old" and strays(target) == []
        continue
      # The swap defers SIGINT and SIGTERM until it is done; SIGKILL cannot be deferred.
      in_swap = point in ("commit", "swapped") and signal_name != "SIGKILL"
      expected = "new" if point == "committed" or in_swap else "old"
      assert run_tag(target) == expected, (point, signal_name)
      assert write_run(target, "next", fallback=fallback).returncode == 0
      assert run_tag(target) == "next"
      assert strays(target) == [], (point, signal_name)


def test_a_first_run_killed_leaves_no_folder_and_the_next_run_cleans_up(tmp_path):
  target = tmp_path / "run"
  proc = write_run(target, "new", "write:results.npz:SIGKILL")
  assert proc.returncode == -signal.SIGKILL
  assert not target.exists() and len(strays(target)) == 1  # the staging folder
  assert write_run(target, "next").returncode == 0
  assert run_tag(target) == "next" and strays(target) == []


def test_commit_replaces_every_file_and_drops_those_the_new_run_lacks(tmp_path):
  target = tmp_path / "run"
  staging = runfolder.begin(target)
  staging.write("measures.md", b"old")
  staging.write("results.npz", b"old")
  staging.commit({})
  staging = runfolder.begin(target)
  staging.write("results.npz", b"new")
  assert (target / "measures.md").read_bytes() == b"old"  # nothing changes before commit
  staging.commit({})
  assert sorted(p.name for p in target.iterdir()) == ["results.npz", "run.json"]
  assert (target / "results.npz").read_bytes() == b"new"
  assert strays(target) == []


def test_discard_keeps_the_previous_run(tmp_path):
  target = tmp_path / "run"
  staging = runfolder.begin(target)
  staging.write("results.npz", b"old")
  staging.commit({})
  staging = runfolder.begin(target)
  staging.write("results.npz", b"new")
  staging.discard()
  assert (target / "results.npz").read_bytes() == b"old" and strays(target) == []


def test_files_are_created_with_the_umask_permissions(tmp_path):
  old = os.umask(0o022)
  try:
    staging = runfolder.begin(tmp_path / "run")
    staging.write("results.npz", b"x")
    staging.commit({})
  finally:
    os.umask(old)
  assert (tmp_path / "run" / "results.npz").stat().st_mode & 0o777 == 0o644


def test_two_runs_cannot_write_one_folder_at_once(tmp_path):
  first = runfolder.begin(tmp_path / "run")
  with pytest.raises(runfolder.RunFolderError, match="another run"):
    runfolder.begin(tmp_path / "run")
  first.discard()
  runfolder.begin(tmp_path / "run").discard()  # free again


@pytest.mark.parametrize(
  "case", ["file", "below a file", "foreign files", "unwritable", "link loop"]
)
def test_a_target_that_cannot_take_a_run_is_refused_before_anything_is_written(tmp_path, case):
  (tmp_path / "a_file").write_text("mine")
  (tmp_path / "mine").mkdir()
  (tmp_path / "mine" / "notes.txt").write_text("mine")
  (tmp_path / "loop").symlink_to("loop")
  target, words = {
    "link loop": (tmp_path / "loop", "loop of symbolic links"),
    "file": (tmp_path / "a_file", "is a file"),
    "below a file": (tmp_path / "a_file" / "run", "is a file"),
    "foreign files": (tmp_path / "mine", "notes.txt"),
    "unwritable": (Path("/proc/jaxnorm-test/run"), "cannot write"),
  }[case]
  before = sorted(p.name for p in tmp_path.rglob("*"))
  with pytest.raises(runfolder.RunFolderError, match=words):
    runfolder.begin(target)
  assert sorted(p.name for p in tmp_path.rglob("*")) == before


def legacy_run(target: Path, norms=("none",)) -> None:
  """A run folder as versions before manifests wrote it (no run.json)."""
  target.mkdir()
  np.savez(target / "results.npz", **{f"{n}/loss": np.zeros(3) for n in norms})
  (target / "summary.json").write_text(json.dumps({"norms": {n: {} for n in norms}}))
  for name in ("figure2.png", "figure2.pdf", *(f"variables_{n}.msgpack" for n in norms)):
    (target / name).write_bytes(b"old")


def test_temporaries_of_earlier_versions_are_removed(tmp_path):
  target = tmp_path / "run"
  legacy_run(target)
  (target / ".results.npz.abc.tmp").write_bytes(b"half")
  runfolder.begin(target).discard()
  assert ".results.npz.abc.tmp" not in [p.name for p in target.iterdir()]


def commit_run(target: Path, files: dict[str, bytes]) -> None:
  staging = runfolder.begin(target)
  for name, data in files.items():
    staging.write(name, data)
  staging.commit({})


@pytest.mark.hostile
@pytest.mark.parametrize("target", ["", ".", "..", "/"])
def test_the_working_directory_and_the_folders_above_it_are_never_a_target(
  tmp_path, monkeypatch, target
):
  work = tmp_path / "work"
  work.mkdir()
  monkeypatch.chdir(work)
  with pytest.raises(runfolder.RunFolderError, match="empty string|working directory"):
    runfolder.begin(target)
  assert work.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


@pytest.mark.hostile
@pytest.mark.parametrize(
  "foreign",
  [
    "lr_backup/measures.md",  # a sub-folder no run.json lists, named like a sweep's run
    "variables_mine.msgpack",  # named like a run's file, but not the run's
    ".mine.lock",
    "notes.txt",
    "empty_folder/",
  ],
)
def test_a_folder_is_replaced_only_when_it_holds_the_run_its_manifest_lists(tmp_path, foreign):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"r", "summary.json": b"{}"})
  mine = target / foreign.rstrip("/")
  if foreign.endswith("/"):
    mine.mkdir()
  else:
    mine.parent.mkdir(exist_ok=True)
    mine.write_bytes(b"a user's data")
  with pytest.raises(runfolder.RunFolderError, match=foreign.split("/")[0]):
    runfolder.begin(target)
  assert mine.exists()
  mine.unlink() if mine.is_file() else None
  if mine.parent != target:
    mine.parent.rmdir()
  elif mine.is_dir():
    mine.rmdir()
  runfolder.begin(target).discard()  # the run alone again: replaceable


@pytest.mark.hostile
def test_a_file_changed_since_the_run_wrote_it_is_not_replaced(tmp_path):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"0123", "summary.json": b"{}"})
  (target / "results.npz").write_bytes(b"3210")  # same size, a user's bytes
  with pytest.raises(runfolder.RunFolderError, match="results.npz .changed or truncated"):
    runfolder.begin(target)
  assert (target / "results.npz").read_bytes() == b"3210"


@pytest.mark.hostile
def test_a_sweep_folder_checks_each_run_against_its_own_manifest(tmp_path):
  target = tmp_path / "sweep"
  staging = runfolder.begin(target)
  staging.write("lr_0.1/results.npz", b"r")
  staging.write_manifest({}, "lr_0.1")
  staging.write("sweep.md", b"s")
  staging.commit({})
  # A replot of one rate's run: its lock beside it.
  sub = runfolder.begin(target / "lr_0.1", sub_run=True)
  sub.carry_over({"figure2.png"})
  sub.write("figure2.png", b"redrawn")
  sub.commit({})
  runfolder.begin(target).discard()  # the sub-run matches its own (new) manifest
  (target / "lr_0.1" / "mine.txt").write_text("mine")
  with pytest.raises(runfolder.RunFolderError, match="lr_0.1/mine.txt"):
    runfolder.begin(target)
  (target / "lr_0.1" / "mine.txt").unlink()
  # Another run written into the sub-folder (refused unless forced: see test_sweep).
  other = runfolder.begin(target / "lr_0.1", sub_run=True)
  other.write("results.npz", b"another run")
  other.commit({})
  with pytest.raises(runfolder.RunFolderError, match="lr_0.1/results.npz .not the file"):
    runfolder.begin(target)


@pytest.mark.hostile
def test_a_sweep_run_whose_manifest_is_gone_is_checked_against_the_sweeps(tmp_path):
  target = tmp_path / "sweep"
  staging = runfolder.begin(target)
  staging.write("lr_0.1/results.npz", b"r")
  staging.write("lr_0.1/measures.md", b"m")
  staging.write_manifest({}, "lr_0.1")
  staging.commit({})
  (target / "lr_0.1" / manifests.MANIFEST).unlink()
  runfolder.begin(target).discard()  # the sweep's run.json still vouches for every file
  (target / "lr_0.1" / "measures.md").write_text("my notes")
  with pytest.raises(runfolder.RunFolderError, match="lr_0.1/measures.md .changed"):
    runfolder.begin(target)


@pytest.mark.hostile
def test_a_folder_without_manifest_is_replaced_only_with_what_earlier_versions_wrote(tmp_path):
  target = tmp_path / "old"
  legacy_run(target)
  (target / ".results.npz.x1.tmp").write_bytes(b"half")
  runfolder.begin(target).discard()
  (target / "variables_mine.msgpack").write_bytes(b"mine")
  with pytest.raises(runfolder.RunFolderError, match="variables_mine.msgpack"):
    runfolder.begin(target)


@pytest.mark.hostile
@pytest.mark.parametrize(
  "mine", [{"measures.md": b"notes"}, {"figure2.png": b"mine"}, {"summary.json": b"{}"}]
)
def test_a_folder_without_manifest_that_is_not_a_whole_earlier_run_is_kept(tmp_path, mine):
  target = tmp_path / "notes"
  target.mkdir()
  for name, data in mine.items():
    (target / name).write_bytes(data)
  with pytest.raises(runfolder.RunFolderError, match="not the run jaxnorm wrote"):
    runfolder.begin(target)
  assert {p.name: p.read_bytes() for p in target.iterdir()} == mine


@pytest.mark.hostile
def test_an_earlier_runs_summary_cannot_vouch_for_a_users_variables(tmp_path):
  target = tmp_path / "old"
  legacy_run(target)
  summary = json.loads((target / "summary.json").read_text())
  summary["norms"]["mine"] = {}  # names a model results.npz has no arrays of
  (target / "summary.json").write_text(json.dumps(summary))
  (target / "variables_mine.msgpack").write_bytes(b"mine")
  with pytest.raises(runfolder.RunFolderError):
    runfolder.begin(target)


@pytest.mark.hostile
@pytest.mark.parametrize(
  "files",
  [
    5,
    [],
    {"results.npz": 5},
    {"results.npz": {"bytes": "1", "sha256": "0" * 64}},
    {"results.npz": {"bytes": 1, "sha256": "xyz"}},
    {"../outside": {"bytes": 1, "sha256": "0" * 64}},
  ],
  ids=["number", "list", "entry-number", "size-string", "bad-digest", "outside"],
)
def test_a_manifest_of_the_wrong_shape_is_refused_in_one_line(tmp_path, files):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"r"})
  (target / manifests.MANIFEST).write_text(json.dumps({"format": 1, "files": files}))
  for call in (lambda: runfolder.begin(target), lambda: manifests.verify(target, ("results.npz",))):
    with pytest.raises(runfolder.RunFolderError, match="not a run manifest") as raised:
      call()
    assert "\n" not in str(raised.value)


@pytest.mark.hostile
def test_a_mount_point_is_refused_before_any_work():
  mounts = runfolder._mount_points()
  assert "/proc" in mounts or not Path("/proc/self/mountinfo").exists()
  with pytest.raises(runfolder.RunFolderError, match="mount point"):
    runfolder.check_target(Path("/proc"))


@pytest.mark.hostile
@pytest.mark.parametrize("length", [256, 240])
def test_a_name_too_long_for_the_run_or_its_siblings_is_refused_in_one_line(tmp_path, length):
  with pytest.raises(runfolder.RunFolderError, match="too long"):
    runfolder.begin(
      tmp_path / ("x" * length) / "run" if length > 255 else tmp_path / ("x" * length)
    )
  assert list(tmp_path.iterdir()) == []


@pytest.mark.hostile
def test_a_carried_file_that_changed_is_not_blessed(tmp_path):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"0123", "figure2.png": b"old"})
  staging = runfolder.begin(target)
  staging.carry_over({"figure2.png"})  # results.npz carried, the figure redrawn
  (target / "results.npz").write_bytes(b"3210")  # changed through the shared link
  staging.write("figure2.png", b"new")
  with pytest.raises(runfolder.RunFolderError, match="changed while it was carried"):
    staging.commit({})
  staging.discard()


@pytest.mark.hostile
def test_a_folder_named_like_a_failed_run_that_no_run_made_is_kept(tmp_path):
  target, mine = tmp_path / "run", tmp_path / "run.failed"
  mine.mkdir()
  (mine / "notes.txt").write_text("mine")
  staging = runfolder.begin(target)
  staging.write("results.npz", b"half")
  with pytest.raises(OSError):
    staging.keep_as_failed()
  staging.discard()
  commit_run(target, {"results.npz": b"whole"})  # a success removes only a failed run's
  assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
  mine.joinpath("notes.txt").unlink()
  mine.rmdir()
  staging = runfolder.begin(target)
  staging.write("results.npz", b"half")
  assert staging.keep_as_failed() == mine and (mine / runfolder.FAILED_MARK).is_file()
  commit_run(target, {"results.npz": b"whole"})
  assert not mine.exists()


@pytest.mark.hostile
def test_a_manifest_nested_too_deep_to_parse_is_refused_in_one_line(tmp_path):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"r"})
  (target / manifests.MANIFEST).write_text("[" * 100_000 + "]" * 100_000)
  with pytest.raises(runfolder.RunFolderError, match="not a run manifest"):
    runfolder.begin(target)


@pytest.mark.hostile
def test_a_path_too_long_as_a_whole_is_refused_before_any_work(tmp_path):
  target = tmp_path.joinpath(*["d" * 200] * 20)  # every name fits, the whole path does not
  with pytest.raises(runfolder.RunFolderError, match="path is too long"):
    runfolder.begin(target)
  assert list(tmp_path.iterdir()) == []


def test_a_listed_file_removed_since_is_left_out_of_the_carried_run(tmp_path):
  target = tmp_path / "run"
  commit_run(target, {"results.npz": b"r", "variables_none.msgpack": b"v", "figure2.png": b"f"})
  (target / "variables_none.msgpack").unlink()
  staging = runfolder.begin(target)
  staging.carry_over({"figure2.png"})
  staging.write("figure2.png", b"redrawn")
  staging.commit({})
  assert sorted(manifests.manifest(target)["files"]) == ["figure2.png", "results.npz"]
