"""A stopped run resumed with --resume ends bit-identical to one that never stopped, and a
checkpoint of another run, another jaxnorm or damaged is refused in one line (docs/cli.md,
"Resuming a stopped run").

Each run is experiments/exp2.py on the tiny preset (two models; three seeds in groups of
two, so one group is padded; three chunks of 100 steps each), started through faults.py,
which stops it at a chosen point: after the chunk of a model that ends at a given step, or
as orbax finalizes a checkpoint. Where the points are chosen at random, the draw is in the
test's name of the failure (pytest prints the `chain` argument).
"""

import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnorm import resume

ROOT = Path(__file__).resolve().parents[1]
EXP2 = ROOT / "experiments" / "exp2.py"
FAULTS = ROOT / "tests" / "faults.py"
NORMS = ("layernorm", "none")
RUN = ["--preset", "tiny", "--norms", ",".join(NORMS), "--steps", "300", "--seeds", "3"]
RUN += ["--seeds-per-call", "2", "--landscape-points", "3", "--no-measures", "--no-progress"]
# Every chunk's end, for each model: where a stop may land.
POINTS = [f"{norm}@{step}" for norm in NORMS for step in (100, 200, 300)]
pytestmark = pytest.mark.hostile


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  import os

  return {**os.environ, "JAXNORM_CACHE_DIR": str(tmp_path_factory.mktemp("cache"))}


def exp2(out: Path, *args: str, env: dict, fault: str = "") -> subprocess.CompletedProcess:
  start = [sys.executable, str(FAULTS), fault] if fault else [sys.executable]
  return subprocess.run(
    [*start, str(EXP2), *RUN, "--out", str(out), *args],
    capture_output=True,
    text=True,
    env=env,
    timeout=600,
    cwd=ROOT,
  )


def same_run(a: Path, b: Path) -> None:
  """`a` and `b` hold the same results.npz, array for array, and the same weights."""
  with np.load(a / "results.npz") as x, np.load(b / "results.npz") as y:
    assert sorted(x.files) == sorted(y.files)
    for name in x.files:
      assert x[name].dtype == y[name].dtype, name
      np.testing.assert_array_equal(x[name], y[name], err_msg=name, strict=True)
  weights = sorted(p.name for p in a.glob("variables_*.msgpack"))
  assert weights == sorted(p.name for p in b.glob("variables_*.msgpack")) and weights
  for name in weights:
    assert (a / name).read_bytes() == (b / name).read_bytes(), name


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, env) -> Path:
  out = tmp_path_factory.mktemp("whole") / "run"
  done = exp2(out, "--no-checkpoints", env=env)
  assert done.returncode == 0, done.stderr
  return out


@pytest.fixture(scope="module")
def stopped(tmp_path_factory, env) -> Path:
  """A run killed after No Norm's second chunk, saving after every chunk: its output
  folder (none) and checkpoints beside it, LayerNorm's two groups saved at their end."""
  out = tmp_path_factory.mktemp("stopped") / "run"
  killed = exp2(out, "--checkpoint-every", "0", env=env, fault="train:none@200:SIGKILL")
  assert killed.returncode == -9, killed.stderr
  folder = resume.folder_of(out)
  assert (folder / resume.IDENTITY).is_file()
  assert (folder / "layernorm/0/300").is_dir() and (folder / "layernorm/1/300").is_dir()
  return out


def copy_of(stopped: Path, tmp_path: Path) -> Path:
  out = tmp_path / "run"
  shutil.copytree(resume.folder_of(stopped), resume.folder_of(out))
  return out


def _chains() -> list[tuple[str, ...]]:
  """Two stops at random chunk ends (the second after the first), and their signals."""
  draw = random.Random()
  first, second = sorted(draw.sample(range(len(POINTS)), 2))
  return [
    (f"train:{POINTS[first]}:SIGKILL", f"train:{POINTS[second]}:SIGTERM"),
    (f"train:{POINTS[draw.randrange(len(POINTS))]}:SIGINT",),
  ]


@pytest.mark.parametrize("chain", _chains())
def test_a_run_stopped_and_resumed_equals_one_never_stopped(chain, uninterrupted, env, tmp_path):
  out = tmp_path / "run"
  folder = resume.folder_of(out)
  for i, fault in enumerate(chain):
    args = ["--checkpoint-every", "0"] + (["--resume"] if i else [])
    stopped = exp2(out, *args, env=env, fault=fault)
    assert stopped.returncode in (-9, 130, 143), (fault, stopped.stderr)
    assert not (out / "results.npz").exists()
    saved = any(p.name.isdigit() for p in folder.glob("*/*/*"))
    if stopped.returncode != -9 and saved:  # a stop it saw: it says how to continue
      told = stopped.stderr.splitlines()[-1]
      assert "--resume continues" in told, stopped.stderr
      # ... from the checkpoints written whole, each named as it lies on disk
      kept = re.findall(r"(\w+) group (\d+): (\d+)", told)
      assert kept and all((folder / n / g / steps).is_dir() for n, g, steps in kept), told
  finished = exp2(out, "--checkpoint-every", "0", "--resume", env=env)
  assert finished.returncode == 0, finished.stderr
  says = "resuming from the checkpoints in" if saved else "nothing to resume"
  assert says in finished.stdout, (saved, finished.stdout)
  same_run(out, uninterrupted)
  assert not resume.folder_of(out).exists()  # a finished run removes its checkpoints


def test_a_run_killed_while_writing_a_checkpoint_resumes_whole(uninterrupted, env, tmp_path):
  out = tmp_path / "run"
  killed = exp2(out, "--checkpoint-every", "0", env=env, fault="checkpoint#3:SIGKILL")
  assert killed.returncode == -9, killed.stderr
  folder = resume.folder_of(out)
  assert list(folder.rglob("*orbax-checkpoint-tmp*")), "the kill landed after the write"
  finished = exp2(out, "--resume", env=env)
  assert finished.returncode == 0, finished.stderr
  same_run(out, uninterrupted)


def test_resuming_a_whole_group_retrains_nothing_of_it(stopped, uninterrupted, env, tmp_path):
  """LayerNorm's groups were saved at their last step: the resumed run never passes its
  step 100 again (faults.py ends it with status 70, its point never reached), and its
  results are those of the run that never stopped."""
  out = copy_of(stopped, tmp_path)
  finished = exp2(out, "--resume", env=env, fault="train:layernorm@100:SIGKILL")
  assert finished.returncode == 70, finished.stderr
  same_run(out, uninterrupted)


def test_checkpoints_are_not_erased_by_a_new_run(stopped, env, tmp_path):
  out = copy_of(stopped, tmp_path)
  before = sorted(p.relative_to(out.parent) for p in resume.folder_of(out).rglob("*"))
  refused = exp2(out, env=env)
  assert refused.returncode == 2, refused.stderr
  assert len(refused.stderr.splitlines()) == 1 and "--resume continues it" in refused.stderr
  assert sorted(p.relative_to(out.parent) for p in resume.folder_of(out).rglob("*")) == before
  refused = exp2(out, "--no-checkpoints", env=env)
  assert refused.returncode == 2 and "--resume continues it" in refused.stderr


@pytest.mark.parametrize(
  "args, says",
  [
    (["--steps", "400"], "steps=300, this run steps=400"),
    (["--seed", "1"], "seed=0, this run seed=1"),
    (["--no-checkpoints"], "--no-checkpoints turns off"),
  ],
)
def test_a_resume_with_other_options_is_refused(stopped, env, tmp_path, args, says):
  out = copy_of(stopped, tmp_path)
  refused = exp2(out, "--resume", *args, env=env)
  assert refused.returncode == 2, refused.stderr
  assert len(refused.stderr.splitlines()) == 1 and says in refused.stderr, refused.stderr
  assert not out.exists()
  assert sorted(p.name for p in tmp_path.iterdir()) == [".run.lock", "run.checkpoints"]


def _other_version(folder: Path) -> None:
  identity = json.loads((folder / resume.IDENTITY).read_text())
  (folder / resume.IDENTITY).write_text(json.dumps({**identity, "source": "0" * 64}))


def _flipped_array(folder: Path) -> None:
  """One byte of the largest array chunk changed: still a readable file."""
  finished = [p for p in folder.rglob("d/*") if p.is_file() and "checkpoint-tmp" not in str(p)]
  data = max(finished, key=lambda p: p.stat().st_size)
  raw = bytearray(data.read_bytes())
  raw[len(raw) // 2] ^= 0xFF
  data.write_bytes(bytes(raw))


def _truncated_meta(folder: Path) -> None:
  meta = next(folder.rglob("meta/metadata"))
  meta.write_text(meta.read_text()[:10])


def _removed_manifest(folder: Path) -> None:
  for manifest in folder.rglob("manifest.ocdbt"):
    manifest.unlink()


def _swapped_groups(folder: Path) -> None:
  """LayerNorm's group 0 checkpoint in group 1's place: whole, but another group's."""
  shutil.rmtree(folder / "layernorm/1/300")
  shutil.copytree(folder / "layernorm/0/300", folder / "layernorm/1/300")


@pytest.mark.parametrize(
  "damage, says",
  [
    (_swapped_groups, "is not this group's of this run"),
    (_other_version, "another jaxnorm (its version or source)"),
    (_flipped_array, "is damaged (its arrays do not match the SHA-256"),
    (_truncated_meta, "the checkpoint in"),
    (_removed_manifest, "the checkpoint in"),
  ],
)
def test_a_foreign_or_damaged_checkpoint_is_refused(stopped, env, tmp_path, damage, says):
  out = copy_of(stopped, tmp_path)
  damage(resume.folder_of(out))
  refused = exp2(out, "--resume", env=env)
  assert refused.returncode == 2, refused.stderr
  # One line of jaxnorm's; a damaged orbax index can make tensorstore's threads print
  # tracebacks of their own as the process exits (docs/cli.md says so).
  ours = [line for line in refused.stderr.splitlines() if line.startswith("exp2.py: ")]
  assert len(ours) == 1 and says in ours[0], refused.stderr
  assert not out.exists()


@pytest.mark.parametrize("inside", ["run/tb", "run.checkpoints/tb", "run"])
def test_a_live_view_inside_what_the_run_replaces_is_refused(env, tmp_path, inside):
  refused = exp2(tmp_path / "run", "--tensorboard", str(tmp_path / inside), env=env)
  assert refused.returncode == 2 and "lies inside" in refused.stderr, refused.stderr
  assert len(refused.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


def test_a_folder_in_the_checkpoints_place_is_left_alone(env, tmp_path):
  out = tmp_path / "run"
  theirs = resume.folder_of(out)
  theirs.mkdir()
  (theirs / "notes.txt").write_text("mine")
  refused = exp2(out, "--resume", env=env)
  assert refused.returncode == 2 and "did not write" in refused.stderr
  assert (theirs / "notes.txt").read_text() == "mine"


def test_resume_without_checkpoints_starts_from_step_0(uninterrupted, env, tmp_path):
  out = tmp_path / "run"
  finished = exp2(out, "--resume", env=env)
  assert finished.returncode == 0, finished.stderr
  assert "nothing to resume" in finished.stdout
  same_run(out, uninterrupted)


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_checkpoint_interval_must_be_seconds(env, tmp_path, value):
  refused = exp2(tmp_path / "run", "--checkpoint-every", value, env=env)
  assert refused.returncode == 2 and "--checkpoint-every" in refused.stderr
