"""Strict numerics for every test (implicit rank promotion raises), and a test suite that
writes only into temporary folders: matplotlib's cache goes to one made for this session,
and no test turns on the persistent compilation cache outside its own `tmp_path`."""

import os
import tempfile

# Before anything imports matplotlib (the test modules do, through jaxnorm).
os.environ["MPLCONFIGDIR"] = tempfile.mkdtemp(prefix="jaxnorm-tests-mpl-")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")


@pytest.fixture
def key():
  return jax.random.key(0)
