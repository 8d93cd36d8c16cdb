"""live: `--tensorboard DIR` writes every step's training loss, and the tracked curvature, to
TensorBoard event files as each chunk finishes: read back, they are the run's results.npz
exactly (float32), step by step, for each normalization and seed (and rate, in a sweep);
the option is refused in one line, before any work, without tensorboardX or a folder it
can write."""

import errno
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import TEST_SCRIPT

from jaxnorm import cli, config, exits, live, results, sweep
from jaxnorm.result import rate_folder
from jaxnorm.spec import ExperimentSpec

tensorboardX = pytest.importorskip("tensorboardX", reason="pip install -e '.[tensorboard]'")
from tensorboardX.proto import event_pb2  # noqa: E402
from tensorboardX.record_writer import masked_crc32c  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS = ["--no-progress", "--no-compilation-cache", "--no-measures", "--landscape-points", "3"]


def read_scalars(folder: Path) -> dict[str, tuple[list[int], np.ndarray]]:
  """tag -> (steps, float32 values) of the event files in `folder`, in the order written;
  each record checked as TensorBoard reads it (length, masked CRC-32C of both parts)."""
  files = sorted(folder.glob("events.out.tfevents.*"))
  assert len(files) == 1, files
  data, at, found = files[0].read_bytes(), 0, {}
  while at < len(data):
    header = data[at : at + 8]
    (length,) = struct.unpack("<Q", header)
    assert struct.unpack("<I", data[at + 8 : at + 12])[0] == masked_crc32c(header)
    body = data[at + 12 : at + 12 + length]
    assert struct.unpack("<I", data[at + 12 + length : at + 16 + length])[0] == masked_crc32c(body)
    at += 16 + length
    event = event_pb2.Event.FromString(body)
    for value in event.summary.value:
      found.setdefault(value.tag, []).append((event.step, value.simple_value))
  return {
    tag: ([s for s, _ in pairs], np.float32([v for _, v in pairs])) for tag, pairs in found.items()
  }


def test_a_run_writes_every_step_and_the_curvature_as_its_results_hold(tmp_path):
  out, board = tmp_path / "run", tmp_path / "board"
  args = [
    "--steps",
    "5",
    "--seeds",
    "2",
    "--norms",
    "layernorm,none",
    "--curvature-iterations",
    "2",
  ]
  status = cli.main(
    [*args, *IN_PROCESS, "--tensorboard", str(board), "--out", str(out)], **TEST_SCRIPT
  )
  assert status == 0
  result = results.load(out)
  assert sorted(p.relative_to(board).as_posix() for p in board.glob("*/*")) == [
    "layernorm/seed_0",
    "layernorm/seed_1",
    "none/seed_0",
    "none/seed_1",
  ]
  for norm, r in result.norms.items():
    for i, seed in enumerate(r.seeds):
      scalars = read_scalars(board / norm / f"seed_{seed}")
      steps, losses = scalars["train/loss"]
      assert steps == list(range(5)) and np.array_equal(losses, r.losses[i].astype(np.float32))
      for k, tag in enumerate(["train/lambda_max", "train/preconditioned_sharpness"]):
        at, values = scalars[tag]
        assert at == list(r.trajectory_steps) == [5]
        assert np.array_equal(values, r.trajectory[i, :, k].astype(np.float32))


def test_a_sweep_writes_each_rate_seed_and_chunk(tmp_path):
  """Several chunks (2 + 2 + 1 steps) and one call per (rate, seed) run: each chunk's steps
  follow the last one's, and each run of the grid goes to its rate's folder."""
  cfg = config.TINY.replace(steps=5, norms=("layernorm",), landscape_points=3)
  spec = ExperimentSpec(cfg, num_seeds=1, chunk_size=2, measures=None)
  rates = (1e-3, 2e-3)
  view = live.TensorBoard(tmp_path, spec, rates)
  told = []
  tell = lambda *call: (told.append(call[:3]), view(*call))  # noqa: E731
  swept = sweep.run(spec, rates, progress=False, on_chunk=tell)
  view.close()
  assert [(norm, list(runs), done) for norm, runs, done in told] == [
    ("layernorm", [run], done) for run in (0, 1) for done in (2, 4, 5)
  ]
  for at_rate in swept.runs:
    folder = tmp_path / rate_folder(at_rate.spec.config.learning_rate) / "layernorm" / "seed_0"
    steps, losses = read_scalars(folder)[live.LOSS]
    assert steps == list(range(5))
    assert np.array_equal(losses, at_rate.norms["layernorm"].losses[0].astype(np.float32))
    assert not set(read_scalars(folder)) & set(live.CURVATURE)  # not tracked: not written


def test_only_the_writing_process_writes_and_a_cut_run_is_closed(tmp_path):
  spec = ExperimentSpec(config.TINY.replace(steps=4), num_seeds=2)
  chunk = (np.arange(2), 2, np.float32([[1 / 3, 2 / 3], [1 / 7, 3 / 7]]), None)
  silent = live.TensorBoard(tmp_path / "other", spec, writes=False)
  silent("none", *chunk)
  assert not (tmp_path / "other").exists()
  view = live.TensorBoard(tmp_path, spec)
  view("none", *chunk)  # 2 of 4 steps: the files stay open, and are flushed
  assert read_scalars(tmp_path / "none" / "seed_1")[live.LOSS][0] == [0, 1]
  view.close()
  view.close()  # closing twice changes nothing
  assert np.array_equal(read_scalars(tmp_path / "none" / "seed_1")[live.LOSS][1], chunk[2][1])


def _refused(tmp_path, capsys, board: str) -> str:
  out = tmp_path / "run"
  before = sorted(tmp_path.rglob("*"))
  with pytest.raises(SystemExit) as exit_:
    cli.main([*IN_PROCESS, "--tensorboard", board, "--out", str(out)], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  stdout, err = capsys.readouterr()
  assert (
    err.count("\n") == 1 and err.startswith("t: error: --tensorboard ") and "Traceback" not in err
  )
  assert "results ->" not in stdout and sorted(tmp_path.rglob("*")) == before  # no work
  return err


def test_without_tensorboardx_the_option_is_refused(tmp_path, capsys, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # `import tensorboardX` fails
  assert "pip install 'jaxnorm[tensorboard]'" in _refused(tmp_path, capsys, str(tmp_path / "tb"))


def test_a_folder_that_cannot_be_written_is_refused(tmp_path, capsys, monkeypatch):
  (tmp_path / "a_file").write_text("x")
  assert "is not a folder" in _refused(tmp_path, capsys, str(tmp_path / "a_file" / "tb"))
  assert "empty string" in _refused(tmp_path, capsys, "")

  def read_only(**kwargs):
    raise OSError(errno.EROFS, "Read-only file system")

  monkeypatch.setattr(live.tempfile, "TemporaryFile", read_only)
  err = _refused(tmp_path, capsys, str(tmp_path / "new" / "tb"))
  assert f"cannot write in {tmp_path} (Read-only file system)" in err


def test_over_two_processes_process_0_writes_every_seed(tmp_path):
  """3 seeds over 2 processes of one CPU device each: 4 rows, the last a padding run that
  no event file tells of; the other process, given a folder of its own, writes none."""
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT)}
  env["XLA_FLAGS"] = " ".join(
    f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform" not in f
  )
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  args = ["--preset", "tiny", "--norms", "layernorm", "--seeds", "3", "--steps", "4"]
  args += [*IN_PROCESS, "--curvature-iterations", "2", "--coordinator", f"localhost:{port}"]

  def start(process: int, tensorboard: bool = True) -> subprocess.Popen:
    board = ["--tensorboard", str(tmp_path / f"board{process}")] if tensorboard else []
    return subprocess.Popen(
      [sys.executable, str(ROOT / "experiments" / "exp2.py"), *args, *board]
      + ["--out", str(tmp_path / f"run{process}"), "--num-processes", "2"]
      + ["--process-id", str(process)],
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      env=env,
    )

  procs = [start(0), start(1)]
  outcomes = [(p.communicate(timeout=600)[1], p.returncode)[::-1] for p in procs]
  assert [rc for rc, _ in outcomes] == [0, 0], outcomes
  r = results.load(tmp_path / "run0").norms["layernorm"]
  assert sorted(p.name for p in (tmp_path / "board0" / "layernorm").iterdir()) == [
    "seed_0",
    "seed_1",
    "seed_2",
  ]
  for i, seed in enumerate(r.seeds):
    scalars = read_scalars(tmp_path / "board0" / "layernorm" / f"seed_{seed}")
    assert np.array_equal(scalars[live.LOSS][1], r.losses[i].astype(np.float32))
    assert np.array_equal(scalars[live.CURVATURE[0]][1], r.trajectory[i, :, 0].astype(np.float32))
  assert not (tmp_path / "board1").exists() and not (tmp_path / "run1").exists()

  # Both with a view or neither: a process without one would not join the gathers.
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  args[-1] = f"localhost:{port}"
  procs = [start(0), start(1, tensorboard=False)]
  for p in procs:
    err = p.communicate(timeout=600)[1]
    assert p.returncode == 2 and "were started with other options than process 0" in err
