"""The experiment script interrupted or failing at any point leaves one whole run and says
so in one line (docs/cli.md "Run folders and exit statuses").

Each test runs experiments/exp2.py on the tiny preset as a user would and interrupts it
at a named point (started through faults.py, which has the process signal itself there)
or from outside, then checks the exit status, the one line on stderr, and that the output
folder holds exactly the previous run (seed 0) or exactly the new one (seed 1), nothing
else. Every point of a file write is covered, cheaply, in test_runfolder.py. Runs without
a fault, and those interrupted before jaxnorm is imported, start the script itself.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import STOP_AT_JAX

from jaxnorm import cli, config, exits, manifests, plotting, predictions, results

ROOT = Path(__file__).resolve().parents[1]
EXP2 = ROOT / "experiments" / "exp2.py"
FAULTS = ROOT / "tests" / "faults.py"
TINY_RUN = ["--preset", "tiny", "--norms", "none", "--steps", "4", "--landscape-points", "3"]
TINY_RUN += ["--no-measures", "--no-progress"]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The environment of every script run: a compilation cache shared by this module's
  runs (in a temporary folder)."""
  env = dict(os.environ)
  env["JAXNORM_CACHE_DIR"] = str(tmp_path_factory.mktemp("cache"))
  return env


def script(out: Path, *args: str, fault: str = "") -> list[str]:
  """The tiny run's command line; with `fault`, started through faults.py to inject it."""
  start = [sys.executable, str(FAULTS), fault] if fault else [sys.executable]
  return [*start, str(EXP2), *TINY_RUN, "--out", str(out), *args]


def run_script(out: Path, *args: str, env: dict, fault: str = "", **variables: str):
  """The tiny run into `out` with `args`, `fault` injected and environment `variables`."""
  return subprocess.run(
    script(out, *args, fault=fault),
    capture_output=True,
    text=True,
    env={**env, **variables},
    timeout=300,
    cwd=ROOT,
  )


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory, env) -> Path:
  """A complete run of seed 0, copied into each test's output folder."""
  out = tmp_path_factory.mktemp("previous") / "run"
  proc = run_script(out, "--seed", "0", env=env)
  assert proc.returncode == 0, proc.stderr
  return out


def holds_run_of_seed(out: Path) -> int:
  """The seed of the one whole run in `out`; fails on a mixed or partial folder."""
  manifest = manifests.manifest(out)
  assert manifest is not None
  assert sorted(p.name for p in out.iterdir()) == sorted([*manifest["files"], manifests.MANIFEST])
  manifests.verify(out, tuple(manifest["files"]))
  summary = json.loads((out / "summary.json").read_text())
  saved = results.load(out).norms["none"].seeds.tolist()
  assert saved == [summary["config"]["seed"]]
  return summary["config"]["seed"]


def strays(out: Path) -> list[str]:
  return sorted(
    p.name for p in out.parent.iterdir() if p.name not in (out.name, f".{out.name}.lock")
  )


def one_line(stderr: str) -> str:
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in stderr, stderr
  return lines[0]


@pytest.mark.parametrize(
  "fault, status, seed, words",
  [
    ("train:none:SIGINT", exits.EXIT_INTERRUPTED, 0, "interrupted at step 4 of 4 of No Norm"),
    ("train:none:SIGTERM", exits.EXIT_TERMINATED, 0, "still holds the previous run"),
    ("analyze:none:SIGINT", exits.EXIT_INTERRUPTED, 0, "while analyzing No Norm"),
    ("write:results.npz:SIGTERM", exits.EXIT_TERMINATED, 0, "while writing the run folder"),
    ("write:figure2.pdf:SIGINT", exits.EXIT_INTERRUPTED, 0, "still holds the previous run"),
    ("commit:SIGINT", exits.EXIT_INTERRUPTED, 1, "holds the new run"),
    ("write:summary.json:SIGKILL", -signal.SIGKILL, 0, None),
    ("committed:SIGKILL", -signal.SIGKILL, 1, None),
    pytest.param(
      "analyze:none:SIGHUP", exits.EXIT_HUNG_UP, 0, "while analyzing", marks=pytest.mark.hostile
    ),
  ],
)
def test_an_interrupted_run_leaves_one_whole_run(
  tmp_path, env, previous_run, fault, status, seed, words
):
  out = tmp_path / "run"
  shutil.copytree(previous_run, out)
  proc = run_script(out, "--seed", "1", env=env, fault=fault)
  assert proc.returncode == status, proc.stderr
  if words:
    line = one_line(proc.stderr)
    assert line.startswith("exp2.py: interrupted") and words in line and str(out) in line
    assert strays(out) == []  # the staging folder is gone
  assert holds_run_of_seed(out) == seed
  if status == -signal.SIGKILL:  # nothing could clean up: the next run does (in-process)
    args = [*TINY_RUN, "--out", str(out), "--seed", "2", "--no-compilation-cache"]
    assert cli.main(args, predictions.EXP2, prog="exp2.py") == 0
    assert holds_run_of_seed(out) == 2 and strays(out) == []


def wait_until_stopped(proc: subprocess.Popen) -> None:
  """Returns once `proc` has stopped itself (SIGSTOP); fails if it ends first. The bound
  only ends a hang: the process stops after seconds (a tiny run's first chunk) on any
  machine, and the tests wait for that state, not for a time."""
  deadline = time.monotonic() + 600
  while time.monotonic() < deadline:
    if proc.poll() is not None:
      pytest.fail(f"ended with {proc.returncode} before stopping: {proc.communicate()[1]}")
    if Path(f"/proc/{proc.pid}/stat").read_text().rpartition(")")[2].split()[0] in "Tt":
      return
    time.sleep(0.05)
  pytest.fail("the process did not stop within 600 s")


def test_ctrl_c_from_outside_while_training(tmp_path, env, previous_run):
  """The run stops itself after the first of 1000 training chunks (the next one already
  queued); SIGINT comes from outside as it goes on."""
  out = tmp_path / "run"
  shutil.copytree(previous_run, out)
  cmd = script(out, "--seed", "1", "--steps", "100000", fault="train:none:SIGSTOP")
  proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
  wait_until_stopped(proc)
  proc.send_signal(signal.SIGCONT)
  proc.send_signal(signal.SIGINT)
  proc.send_signal(signal.SIGCONT)  # had it stopped again at the next chunk's end
  stdout, stderr = proc.communicate(timeout=300)
  assert proc.returncode == exits.EXIT_INTERRUPTED
  assert "results ->" in stdout and "interrupted at step" in one_line(stderr)
  assert holds_run_of_seed(out) == 0 and strays(out) == []


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGINT, signal.SIGTERM])
def test_interrupted_while_starting_up_ends_quietly(tmp_path, env, signum):
  """The signal arrives while the script imports JAX."""
  (tmp_path / "site").mkdir()
  (tmp_path / "site" / "sitecustomize.py").write_text(STOP_AT_JAX)
  path = os.pathsep.join(p for p in (str(tmp_path / "site"), env.get("PYTHONPATH")) if p)
  proc = subprocess.Popen(
    script(tmp_path / "run"),
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env={**env, "PYTHONPATH": path},
  )
  wait_until_stopped(proc)
  proc.send_signal(signum)
  proc.send_signal(signal.SIGCONT)
  _, stderr = proc.communicate(timeout=300)
  assert proc.returncode == 128 + signum and "Traceback" not in stderr, stderr
  assert not (tmp_path / "run").exists()


def test_a_failure_after_training_exits_3_and_keeps_what_was_written(tmp_path, monkeypatch, capsys):
  def broken_figure(result):
    raise RuntimeError("no figure today")

  monkeypatch.setattr(plotting, "figure2", broken_figure)
  out = tmp_path / "run"
  status = cli.main(
    ["--out", str(out), *TINY_RUN[:-2], "--no-measures", "--no-progress", "--no-compilation-cache"],
    predictions.Experiment("exp2", "t", config.TINY),
    prog="exp2.py",
  )
  assert status == exits.EXIT_FAILED
  line = one_line(capsys.readouterr().err)
  assert "RuntimeError: no figure today" in line and "writing the run folder" in line
  failed = tmp_path / "run.failed"
  assert str(failed) in line and f"{out} holds no run" in line
  assert not out.exists()
  assert "no figure today" in (failed / "traceback.txt").read_text()
  with np.load(failed / "results.npz") as npz:  # the results were written before the figure
    assert npz["none/loss"].shape == (1, 4)


@pytest.mark.hostile
def test_unwritable_output_and_a_late_ctrl_c_change_neither_the_run_nor_its_status(
  tmp_path, env, previous_run
):
  """Standard output on a full device (`> /dev/full`), and a Ctrl-C as the finished run
  exits: the run is written, the status is 0, one line says that nothing could be
  printed, and no traceback."""
  out = tmp_path / "run"
  shutil.copytree(previous_run, out)
  with open("/dev/full", "w") as full:
    proc = subprocess.run(
      script(out, "--seed", "1", fault="exit:SIGINT"),
      stdout=full,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
      timeout=300,
      cwd=ROOT,
    )
  assert proc.returncode == 0, proc.stderr
  assert "cannot write to standard output" in one_line(proc.stderr)
  assert holds_run_of_seed(out) == 1 and strays(out) == []


@pytest.mark.hostile
def test_a_full_disk_keeps_the_previous_run_and_says_so_in_one_line(tmp_path, env, previous_run):
  """The disk fills while the run is written, and again while the traceback is."""
  out = tmp_path / "run"
  shutil.copytree(previous_run, out)
  fault = "write:results.npz:ENOSPC,write:traceback.txt:ENOSPC"
  proc = run_script(out, "--seed", "1", env=env, fault=fault)
  assert proc.returncode == exits.EXIT_FAILED
  line = one_line(proc.stderr)
  assert "No space left on device" in line and "traceback could not be kept" in line
  assert "still holds the previous run" in line
  assert holds_run_of_seed(out) == 0
  assert not (tmp_path / "run.failed" / "traceback.txt").exists()


@pytest.mark.hostile
def test_a_replot_never_blesses_a_changed_file(tmp_path, capsys, previous_run):
  """In-process, as the script calls `cli.main` (its exit status 2 in a real process:
  test_inputs_hostile.py::test_exp2_refuses_a_learning_rate_that_is_0_in_float32)."""
  out = tmp_path / "run"
  shutil.copytree(previous_run, out)
  variables = out / "variables_none.msgpack"
  data = bytearray(variables.read_bytes())
  data[len(data) // 2] ^= 1
  variables.write_bytes(bytes(data))
  manifest = (out / manifests.MANIFEST).read_bytes()
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--replot", str(out)], predictions.EXP2, prog="exp2.py")
  assert exit_.value.code == exits.EXIT_USAGE
  assert "variables_none.msgpack (changed or truncated" in one_line(capsys.readouterr().err)
  assert (out / manifests.MANIFEST).read_bytes() == manifest
  with pytest.raises(results.ResultsError, match="changed or truncated"):
    results.load_variables(out, "none")


@pytest.mark.hostile
def test_a_package_that_fails_to_import_exits_3_with_one_line(tmp_path, env):
  (tmp_path / "optax.py").write_text("raise RuntimeError('a broken install')\n")
  path = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
  proc = run_script(tmp_path / "run", env=env, PYTHONPATH=path)
  assert proc.returncode == exits.EXIT_FAILED
  assert "RuntimeError: a broken install" in one_line(proc.stderr)


def _backend_starts(platform: str) -> bool:
  try:
    return bool(jax.devices(platform))
  except RuntimeError:  # unknown backend, or one that failed to start
    return False


@pytest.mark.hostile
@pytest.mark.parametrize("platform", ["tpu", "cuda"])
def test_a_backend_that_cannot_start_is_refused_in_one_line(tmp_path, env, platform):
  if platform == "cuda" and _backend_starts("cuda"):
    pytest.skip("this machine has the CUDA backend")
  proc = run_script(tmp_path / "run", env=env, JAX_PLATFORMS=platform)
  assert proc.returncode == exits.EXIT_USAGE, proc.stderr
  line = one_line(proc.stderr)
  assert f"JAX_PLATFORMS='{platform}'" in line and "cpu" in line
  assert not (tmp_path / "run").exists()


@pytest.fixture
def listening_port():
  """A port another program listens on, for as long as the test runs."""
  with socket.socket() as listener:
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    yield listener.getsockname()[1]


@pytest.mark.hostile
def test_a_coordinator_port_in_use_is_refused_in_one_line(
  tmp_path, monkeypatch, capsys, listening_port
):
  """In-process, as the script calls `cli.main`: the port check comes before JAX's own
  start-up (which would wait for its join timeout). The script's exit status 2 and its one
  line for input refused before the run: test_inputs_hostile.py::
  test_exp2_refuses_a_learning_rate_that_is_0_in_float32; the other refusals of the command
  line, in-process: test_cli.py::test_bad_input_is_refused_in_one_line_before_any_work."""

  def never(*args, **kwargs):
    pytest.fail("jax.distributed.initialize was called on a port in use")

  monkeypatch.setattr(jax.distributed, "initialize", never)
  monkeypatch.chdir(tmp_path)
  args = ["--num-processes", "2", "--process-id", "0", "--coordinator"]
  args += [f"localhost:{listening_port}", "--out", str(tmp_path / "run")]
  with pytest.raises(SystemExit) as exit_:
    cli.main([*TINY_RUN, *args, "--no-compilation-cache"], predictions.EXP2, prog="exp2.py")
  assert exit_.value.code == exits.EXIT_USAGE and "in use" in one_line(capsys.readouterr().err)
  assert list(tmp_path.iterdir()) == []


@pytest.mark.hostile
def test_closed_standard_streams_change_no_exit_status(tmp_path, env):
  """Standard output, then standard error, closed when the script starts (`>&-`)."""
  for closed in (">&-", "2>&-"):
    command = [
      "bash",
      "-c",
      f'exec "$@" {closed}',
      "bash",
      *script(tmp_path / "run", "--seed", "-1"),
    ]
    proc = subprocess.run(command, env=env, timeout=300, cwd=ROOT, capture_output=True)
    assert proc.returncode == exits.EXIT_USAGE, (closed, proc.stderr)
  assert not (tmp_path / "run").exists()


@pytest.mark.hostile
def test_reading_a_folder_without_manifest_warns_in_one_line(env):
  old = Path(__file__).parent / "data" / "format1_one_seed"
  proc = subprocess.run(
    [sys.executable, str(ROOT / "tools" / "compare_runs.py"), str(old), str(old)],
    capture_output=True,
    text=True,
    env=env,
    timeout=300,
    cwd=ROOT,
  )
  assert proc.returncode == 0, proc.stderr
  lines = proc.stderr.strip().splitlines()
  assert lines and all(line.startswith("compare_runs.py: warning:") for line in lines)
