"""Strict numerics for every test (implicit rank promotion raises), XLA's optimizations off
(compile time), and a test suite that writes only into temporary folders: matplotlib's
cache goes to one made for this session, and no test turns on the persistent compilation
cache outside its own `tmp_path`."""

import os
import tempfile

# Before anything imports matplotlib (the test modules do, through jaxnorm).
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="jaxnorm-tests-mpl-")
# Tests check what is computed, not how fast: XLA's optimization passes cost most of their
# compile time (also in the subprocesses, which inherit this). Set it to 0 to test the
# optimized programs; the device check and the benchmarks always run those.
os.environ.setdefault("JAX_DISABLE_MOST_OPTIMIZATIONS", "1")

import jax  # noqa: E402
import pytest  # noqa: E402

from jaxnorm.spec import ExperimentSpec

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(0)


@pytest.fixture(scope="session")
def measured_result():
  """One small experiment with everything on, shared by the tests of what a run returns,
  saves and summarizes: BatchNorm and No Norm, seeds 3 and 4, every measure (cheap
  estimator settings) and a 3 x 3 surface."""
  from jaxnorm import config, measures, pipeline

  cfg = config.TINY.replace(steps=12, landscape_points=5, norms=("batchnorm", "none"), seed=3)
  measure_config = measures.MeasureConfig(lanczos_iterations=6, trace_probes=4, sharpness_samples=4)
  spec = ExperimentSpec(cfg, num_seeds=2, measures=measure_config, surface_points=3, name="t")
  return pipeline.run(spec, progress=False)
