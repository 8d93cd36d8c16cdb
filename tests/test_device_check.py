"""The device check runs end to end in its tiny form (what CI can run without a GPU)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_device_check_runs_every_step_and_prints_one_table(tmp_path):
  # Its steps' time limits are for a GPU machine: here (2-4 minutes on 2 CPU cores, the
  # benchmark step the most) they are raised tenfold, and this test's own limit above their
  # sum, to end only a hang. (Each whole run inside the benchmark, 8-30 s here, keeps the
  # 150 s the script gives it.)
  limits = ["--test-timeout", "1500", "--bench-timeout", "3300"]
  proc = subprocess.run(
    [sys.executable, "benchmarks/device_check.py", "--tiny", *limits, "--out", str(tmp_path)],
    cwd=ROOT,
    capture_output=True,
    text=True,
    timeout=5400,
    # Its tests step runs a few tests: in its own process, not in workers of their own
    # (the -n auto of pyproject.toml), while this suite's workers hold the cores.
    env={**os.environ, "PYTEST_ADDOPTS": "-n 0"},
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  table = (tmp_path / "summary.md").read_text()
  assert "| tests (numerics, devices) | ok |" in table and " passed" in table
  assert "| benchmarks/bench.py | ok |" in table
  for section in ("Compile time per program", "Training step", "Whole Experiment 2"):
    assert section in table, section
  assert "| jaxnorm, warm cache |" in table and "| reference |" in table
  assert "analyze_seeds" in table  # compile times read from the empty-cache run's log
  assert (tmp_path / "logs" / "summary_cold.json").is_file()


def test_a_failing_test_is_logged_as_it_fails(tmp_path):
  """conftest's failure log: the report of a failure is in the file that
  JAXNORM_TESTS_FAILURE_LOG names (device_check.py reads it when its test step is cut off)."""
  (tmp_path / "test_fails.py").write_text("def test_fails():\n  assert 1 == 2, 'the reason'\n")
  log = tmp_path / "failures.log"
  path = os.pathsep.join(p for p in (str(ROOT / "tests"), os.environ.get("PYTHONPATH")) if p)
  proc = subprocess.run(
    [sys.executable, "-m", "pytest", "-p", "conftest", "-p", "no:cacheprovider", "-n", "2"],
    cwd=tmp_path,
    capture_output=True,
    text=True,
    timeout=300,
    env={**os.environ, "PYTHONPATH": path, "JAXNORM_TESTS_FAILURE_LOG": str(log)},
  )
  assert proc.returncode == 1, proc.stdout + proc.stderr
  text = log.read_text()
  assert "=== test_fails.py::test_fails (call)" in text and "the reason" in text
  assert text.count("=== ") == 1  # once, though a worker and the controller both see it
