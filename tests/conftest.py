"""Strict numerics for every test (implicit rank promotion raises), XLA's optimizations and
CPU fusion emitters off (compile time), one persistent compilation cache for the session,
and a test suite that writes only into temporary folders: matplotlib's cache and the
compilation cache go to folders made for this session, and no test turns on a compilation
cache of its own outside its own `tmp_path`."""

import atexit
import os
import shutil
import subprocess
import sys
import tempfile

# Before anything imports matplotlib (the test modules do, through jaxnorm).
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="jaxnorm-tests-mpl-")
# Tests check what is computed, not how fast: XLA's optimization passes cost most of their
# compile time (also in the subprocesses, which inherit this). Set it to 0 to test the
# optimized programs; the device check and the benchmarks always run those.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")
# For the same reason, XLA's CPU fusion emitters off: the older emitters compile a program
# in about half the time, to the same results within every tolerance of the suite. A jaxlib
# that does not know the flag stops at its first use, so one small process tries it first,
# once (the workers and subprocesses inherit the outcome). Put
# --xla_cpu_use_fusion_emitters=true in XLA_FLAGS to test with the fusion emitters.
_PROBED = "JAXNORM_TESTS_XLA_FLAGS_PROBED"
if (
  "xla_cpu_use_fusion_emitters" not in os.environ.get("XLA_FLAGS", "") and _PROBED not in os.environ
):
  os.environ[_PROBED] = "1"
  _flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_cpu_use_fusion_emitters=false".strip()
  _probe = [sys.executable, "-c", "import jax; jax.devices('cpu')"]
  if not subprocess.run(
    _probe, env={**os.environ, "XLA_FLAGS": _flags}, capture_output=True
  ).returncode:
    os.environ["XLA_FLAGS"] = _flags

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxnorm.spec import ExperimentSpec  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

# One persistent compilation cache for the session, in a temporary folder of its own that
# the workers share (made by the first process, the controller under pytest-xdist, and
# handed down through the environment): a program compiled once, by any test in any
# worker, is loaded by the others. JAX's in-memory caches serve only the process, and only
# the same traced function: a test's `jax.jit(lambda ...)` of a program another test
# compiled is compiled again. Only programs that take 0.5 s or more to compile are kept,
# as by `runtime.enable_compilation_cache`. Set before anything compiles: JAX decides once
# per process whether to use it.
_CACHE = "JAXNORM_TESTS_COMPILATION_CACHE"
if _CACHE not in os.environ:
  os.environ[_CACHE] = tempfile.mkdtemp(prefix="jaxnorm-tests-xla-")
  atexit.register(shutil.rmtree, os.environ[_CACHE], ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", os.environ[_CACHE])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)


# Each failure's report appended to this file as it happens (under pytest-xdist, by the
# controller only: a worker sees its reports too), so that a run cut off by a time limit
# still says why its tests failed; pytest itself prints the reports only at the end.
# benchmarks/device_check.py sets it.
FAILURE_LOG = "JAXNORM_TESTS_FAILURE_LOG"


_IS_WORKER = False  # whether this process is a pytest-xdist worker (set when configured)


def pytest_configure(config):
  global _IS_WORKER
  _IS_WORKER = hasattr(config, "workerinput")


def pytest_runtest_logreport(report):
  path = os.environ.get(FAILURE_LOG)
  if path and report.failed and not _IS_WORKER:
    with open(path, "a") as f:
      f.write(f"=== {report.nodeid} ({report.when})\n{report.longreprtext}\n\n")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture
def full_precision():
  """float32 products at full precision inside the test, for tests that hold the
  mathematics to float32 tolerances: on NVIDIA GPUs JAX's default float32 matmul is TF32
  (10-bit mantissa), about 1e-3 relative. The library's runs set theirs from
  `Config.matmul_precision` (test_model)."""
  with jax.default_matmul_precision("highest"):
    yield


@pytest.fixture(scope="session")
def measured_result():
  """One small experiment with everything on, shared by the tests of what a run returns,
  saves and summarizes: BatchNorm and No Norm, seeds 3 and 4, every measure (cheap
  estimator settings) and a 3 x 3 surface."""
  from jaxnorm import config, pipeline

  cfg = config.TINY.replace(steps=12, landscape_points=5, norms=("batchnorm", "none"), seed=3)
  from helpers import CHEAP_MEASURES

  spec = ExperimentSpec(cfg, num_seeds=2, measures=CHEAP_MEASURES, surface_points=3, name="t")
  return pipeline.run(spec, progress=False)
