"""Experiment 2 over two local CPU processes (`jaxnorm.distributed`: a coordinator on
localhost, Gloo collectives): process 0 writes one run folder, the same as a one-process run
of the same seeds; the other process writes and prints nothing; a process that stops stops
the other, each with one line."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnorm import distributed

SCRIPT = str(Path(__file__).parents[1] / "experiments" / "exp2.py")
FAULTS = str(Path(__file__).parent / "faults.py")
# One model, 4 seeds, one 20-step chunk: 2 seeds per process. (Not BatchNorm: the biases
# before it have zero gradients, and Adam turns their rounding noise, which depends on how
# many seeds a device computes, into steps of the learning rate; see test_seeds.)
ARGS = ["--preset", "tiny", "--norms", "layernorm", "--seeds", "4", "--steps", "20"]
ARGS += ["--no-measures", "--no-progress", "--no-compilation-cache"]
# One CPU device per process, also on a machine with an accelerator (the suite's other XLA
# flags kept: tests/conftest.py).
ENV = dict(os.environ)
ENV["XLA_FLAGS"] = " ".join(
  f for f in os.environ.get("XLA_FLAGS", "").split() if "xla_force_host_platform" not in f
)
ENV["JAX_PLATFORMS"] = "cpu"


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def _start(
  out: Path, process: int | None = None, port: int = 0, fault: str = "", extra=()
) -> subprocess.Popen:
  """Experiment 2 into `out` (as `process` of two); with `fault` (faults.py) injected."""
  several = [] if process is None else ["--coordinator", f"localhost:{port}"]
  several += [] if process is None else ["--num-processes", "2", "--process-id", str(process)]
  start = [sys.executable, FAULTS, fault] if fault else [sys.executable]
  return subprocess.Popen(
    [*start, SCRIPT, *ARGS, "--out", str(out), *several, *extra],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=ENV,
  )


def _finish(proc: subprocess.Popen) -> tuple[int, str, str]:
  out, err = proc.communicate(timeout=300)
  return proc.returncode, out, err


def _without_timing(summary: dict) -> dict:
  summary = {k: v for k, v in summary.items() if k not in ("environment", "seconds")}
  for entry in summary["norms"].values():
    entry.pop("seconds", None)
  return summary


def _assert_close(a, b, where=""):
  """Equal JSON trees, numbers within float32 tolerance (1e-4: ratios of singular values
  and their spread amplify the 1e-6 differences of the arrays)."""
  assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, where
  if isinstance(a, dict):
    assert a.keys() == b.keys(), where
    for k in a:
      _assert_close(a[k], b[k], f"{where}/{k}")
  elif isinstance(a, list):
    assert len(a) == len(b), where
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
      _assert_close(x, y, f"{where}/{i}")
  elif isinstance(a, float):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7, err_msg=where)
  else:
    assert a == b, where


def test_two_processes_write_the_one_process_run(tmp_path):
  port = _free_port()
  first = _start(tmp_path / "run", 0, port)
  second = _start(tmp_path / "elsewhere", 1, port)
  alone = _start(tmp_path / "alone")
  (rc0, out0, err0), (rc1, out1, err1), (rc, _, err) = map(_finish, (first, second, alone))
  assert (rc0, rc1, rc) == (0, 0, 0), err0 + err1 + err
  assert "results ->" in out0 and "LayerNorm" in out0
  assert "results ->" not in out1 and "LayerNorm" not in out1 and "exp2.py" not in err1
  # Exactly one run folder: process 1 did not create the folder it was given.
  assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
    "alone",
    "run",
  ]

  with (
    np.load(tmp_path / "run" / "results.npz") as a,
    np.load(tmp_path / "alone" / "results.npz") as b,
  ):
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
      np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-7, err_msg=name)
    assert a["layernorm/seeds"].tolist() == [0, 1, 2, 3]
  summaries = [json.loads((tmp_path / d / "summary.json").read_text()) for d in ("run", "alone")]
  assert summaries[0]["environment"]["process_count"] == 2
  assert summaries[0]["environment"]["device_count"] == 2
  assert summaries[1]["environment"]["process_count"] == 1
  _assert_close(_without_timing(summaries[0]), _without_timing(summaries[1]))
  files = {p.name for p in (tmp_path / "run").iterdir()}
  assert files == {p.name for p in (tmp_path / "alone").iterdir()}


def test_a_process_that_stops_stops_the_other_with_one_line(tmp_path):
  port = _free_port()
  first = _start(tmp_path / "run", 0, port)
  second = _start(tmp_path / "run", 1, port, fault="train:layernorm:SIGTERM")
  (rc0, _, err0), (rc1, _, err1) = map(_finish, (first, second))
  assert rc1 == 143 and "exp2.py: process 1 of 2: interrupted at step 20" in err1
  assert rc0 == 3, err0
  lines = [line for line in err0.splitlines() if line.startswith("exp2.py:")]
  assert len(lines) == 1 and "process 0 of 2: error" in lines[0]
  assert "another process of the run stopped" in lines[0]
  assert not (tmp_path / "run").exists()  # no run: the traceback is in run.failed
  assert (tmp_path / "run.failed" / "traceback.txt").is_file()


def test_processes_started_with_other_options_are_refused_before_any_work(tmp_path):
  port = _free_port()
  first = _start(tmp_path / "run", 0, port)
  other = subprocess.Popen(
    [sys.executable, SCRIPT, *ARGS, "--steps", "30", "--out", str(tmp_path / "run")]
    + ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", "1"],
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
    env=ENV,
  )
  for rc, _, err in map(_finish, (first, other)):
    assert rc == 2 and "process(es) 1 were started with other options than process 0" in err
  assert not any(tmp_path.iterdir())  # nothing written, not even a lock


@pytest.mark.hostile
def test_a_port_that_only_closed_connections_hold_is_free():
  """The coordinator's port check binds as a server does: the TIME_WAIT connections of an
  earlier coordinator (a server that set SO_REUSEADDR, as gRPC's does) are no refusal."""
  server = socket.socket()
  server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
  server.bind(("127.0.0.1", 0))
  server.listen()
  port = server.getsockname()[1]
  client = socket.create_connection(("127.0.0.1", port))
  accepted, _ = server.accept()
  accepted.close()  # the server side closes first: its port is left in TIME_WAIT
  client.close()
  server.close()
  distributed.check_port_free(f"localhost:{port}")


def test_two_processes_stopped_and_resumed_equal_two_that_never_stopped(tmp_path):
  """Checkpoints after every chunk of 100 steps; process 1 stops after step 200 (process 0
  then fails), both resume with --resume: the same results.npz, bit for bit, as two
  processes that never stopped."""
  three_chunks = ["--steps", "300", "--checkpoint-every", "0"]

  def both(out: Path, *args: str, fault: str = "") -> list[tuple[int, str, str]]:
    port = _free_port()
    procs = [_start(out, 0, port, extra=args), _start(out, 1, port, fault=fault, extra=args)]
    return [_finish(p) for p in procs]

  (rc0, _, err0), (rc1, _, err1) = both(tmp_path / "whole", *three_chunks, "--no-checkpoints")
  assert (rc0, rc1) == (0, 0), err0 + err1
  (rc0, _, err0), (rc1, _, err1) = both(
    tmp_path / "run", *three_chunks, fault="train:layernorm@200:SIGTERM"
  )
  assert (rc0, rc1) == (3, 143), err0 + err1
  assert (tmp_path / "run.checkpoints" / "layernorm" / "0" / "100").is_dir()
  (rc0, out0, err0), (rc1, _, err1) = both(tmp_path / "run", *three_chunks, "--resume")
  assert (rc0, rc1) == (0, 0), err0 + err1
  assert "resuming from the checkpoints" in out0
  with (
    np.load(tmp_path / "run" / "results.npz") as a,
    np.load(tmp_path / "whole" / "results.npz") as b,
  ):
    assert sorted(a.files) == sorted(b.files)
    for name in a.files:
      np.testing.assert_array_equal(a[name], b[name], err_msg=name, strict=True)
  assert not (tmp_path / "run.checkpoints").exists()
