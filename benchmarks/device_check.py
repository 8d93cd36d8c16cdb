"""One short check of jaxnorm on whatever accelerator JAX sees (or the CPU), one table.

    python benchmarks/device_check.py --out runs/device_check     # under 6 minutes on one GPU
    python benchmarks/device_check.py --tiny --out /tmp/check     # the same steps, tiny sizes

Steps, each a separate process bounded in time:
1. the tests that depend on numerics and devices: PyTorch parity (when torch is
   installed), the fast path, seeds and sharding, the pipeline, matmul precision;
2. `benchmarks/bench.py`: compile time per program, the training step against the
   reference's PyTorch loop on the same device, and whole Experiment 2 runs (empty and warm
   compilation cache, `--seeds 8`) against the reference's whole run; not its deep
   section (`--skip deep`: minutes at the deep preset's sizes, beyond this step's limit).
Logs, the benchmark's tables (bench.md) and the whole runs' output (logs/) go to --out; the
last lines printed, also in summary.md, are the summary table and the benchmark's tables.
Exit status 0 when every step finished and passed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = [
  "tests/test_parity.py",
  "tests/test_fastpath.py",
  "tests/test_programs.py",
  "tests/test_pipeline.py",
  "tests/test_model.py",
  "tests/test_loss.py",
]
TINY_TESTS = ["tests/test_model.py", "-k", "precision"]
TINY_BENCH = [
  "--preset",
  "tiny",
  "--norms",
  "none",
  "--steps",
  "5",
  "--chunk",
  "5",
  "--rounds",
  "1",
]
TINY_BENCH += ["--seeds", "2"]


def run_step(name: str, argv: list[str], timeout: float, out: Path) -> tuple[str, float, str]:
  """(status, seconds, combined output) of one step; its log goes to out/<name>.log, and
  the report of each test that fails, as it fails, to out/failures.log (tests/conftest.py)."""
  env = {**os.environ, "PYTHONUNBUFFERED": "1", "XLA_PYTHON_CLIENT_PREALLOCATE": "false"}
  env["JAXNORM_TESTS_FAILURE_LOG"] = str((out / "failures.log").resolve())
  start = time.perf_counter()
  try:
    proc = subprocess.run(
      argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    text, status = proc.stdout + proc.stderr, "ok" if proc.returncode == 0 else "FAILED"
  except subprocess.TimeoutExpired as e:
    text = (e.stdout or b"").decode(errors="replace") + (e.stderr or b"").decode(errors="replace")
    status = f"TIMEOUT after {timeout:.0f} s"
  seconds = time.perf_counter() - start
  (out / f"{name}.log").write_text(text)
  return status, seconds, text


def pytest_summary(text: str) -> str:
  """pytest's closing counts, and the tests that failed (named even in a run cut short)."""
  counts = re.compile(r"\d+ (passed|failed)")
  lines = [line.strip("= ") for line in text.splitlines() if counts.search(line)]
  failed = sorted(set(re.findall(r"FAILED (tests/\S+)", text)))
  summary = lines[-1] if lines else f"cut short after {text.count(' PASSED')} passed"
  return summary + (f"; failed: {', '.join(failed)}" if failed else "")


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--out", required=True, help="folder for the logs and tables")
  p.add_argument("--tiny", action="store_true", help="tiny sizes: seconds on a CPU")
  p.add_argument("--test-timeout", type=float, default=150)
  p.add_argument("--bench-timeout", type=float, default=330)
  args = p.parse_args()
  out = Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  # -v: one line per test as it ends, so a step cut short still names its failures.
  tests = [sys.executable, "-m", "pytest", "-v", "-p", "no:benchmark"]
  tests += TINY_TESTS if args.tiny else TESTS
  if not args.tiny and importlib.util.find_spec("xdist"):
    tests += ["-n", "4"]
  bench = [sys.executable, "benchmarks/bench.py", "--out", str(out / "bench.md")]
  bench += ["--logs", str(out / "logs"), "--timeout", "150", "--skip", "deep"]
  bench += TINY_BENCH if args.tiny else []
  rows = []
  status, seconds, text = run_step("tests", tests, args.test_timeout, out)
  rows.append(("tests (numerics, devices)", status, seconds, pytest_summary(text)))
  status, seconds, text = run_step("bench", bench, args.bench_timeout, out)
  rows.append(("benchmarks/bench.py", status, seconds, f"tables: {out / 'bench.md'}"))
  lines = ["| step | status | seconds | result |", "|---|---|---|---|"]
  lines += [f"| {name} | {status} | {s:.0f} | {result} |" for name, status, s, result in rows]
  if (out / "bench.md").is_file():
    lines += ["", (out / "bench.md").read_text()]
  summary = "\n".join(lines)
  (out / "summary.md").write_text(summary + "\n")
  print(summary)
  return 0 if all(row[1] == "ok" for row in rows) else 1


if __name__ == "__main__":
  sys.exit(main())
