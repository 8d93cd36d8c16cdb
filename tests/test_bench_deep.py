"""The deep section of the benchmark (benchmarks/bench_deep.py): what it measures at tiny
sizes, the checks that it compares the same model, and its table."""

import importlib

import numpy as np
import pytest
from helpers import ROOT

from jaxnorm import config

CFG = config.TINY.replace(norms=("layernorm",))


@pytest.fixture
def bench_deep(monkeypatch):
  """benchmarks/bench_deep.py as a module, its folder on the path (as `python
  benchmarks/bench.py` has it: it imports its sibling `timing`)."""
  monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
  return importlib.import_module("bench_deep")


def test_two_blocks_are_timed_both_ways_beside_pytorch(bench_deep):
  times = bench_deep.deep_times(CFG, "layernorm", depth=2, chunk=2, rounds=3)
  assert (times.norm, times.depth) == ("layernorm", 2)
  assert set(times.step_s) == {"scan", "unrolled", "pytorch"}
  for way, seconds in times.step_s.items():
    assert len(seconds) == 3 and all(s > 0 for s in seconds), way
  assert set(times.train_compile) == set(times.analysis_compile) == {"scan", "unrolled"}
  for lower_s, compile_s in times.train_compile.values():
    assert lower_s > 0 and compile_s > 0
  for analysis_s in times.analysis_compile.values():  # timed where the analysis builds
    assert isinstance(analysis_s, str) or min(analysis_s) > 0
  lines = bench_deep.table([times])
  assert len(lines) == 3 and lines[2].startswith("| layernorm | 2 |")


def test_one_block_has_one_way_and_its_analysis_compiles(bench_deep):
  times = bench_deep.deep_times(CFG, "layernorm", depth=1, chunk=2, rounds=1)
  assert set(times.step_s) == {"scan", "pytorch"}
  assert set(times.train_compile) == set(times.analysis_compile) == {"scan"}
  lower_s, compile_s = times.analysis_compile["scan"]
  assert lower_s > 0 and compile_s > 0


def test_a_pytorch_model_of_another_size_is_refused(bench_deep, monkeypatch):
  from jaxnorm import torch_reference as ref

  make = ref.make_deep_model
  monkeypatch.setattr(
    ref, "make_deep_model", lambda cfg, norm, seed: make(cfg.replace(num_blocks=1), norm, seed)
  )
  with pytest.raises(ValueError, match="parameters"):
    bench_deep.deep_times(CFG, "layernorm", depth=2, chunk=2, rounds=1)


def test_losses_that_differ_are_refused(bench_deep):
  losses = np.array([2.0, 1.5, 1.0])
  bench_deep.check_same_losses({"scan": losses, "unrolled": losses * (1 + 1e-6)})
  with pytest.raises(ValueError, match="unrolled"):
    bench_deep.check_same_losses({"scan": losses, "unrolled": losses * 1.01})


def test_the_table_gives_medians_their_ratio_and_why_a_program_is_missing(bench_deep):
  one = bench_deep.DeepTimes(
    "l2",
    1,
    {"scan": [4e-3, 1e-3, 2e-3], "pytorch": [0.01, 0.03, 0.05]},
    {"scan": (0.5, 2.0)},
    {"scan": (1.25, 4.0)},
  )
  two = bench_deep.DeepTimes(
    "l2",
    2,
    {"scan": [2e-3, 2e-3], "unrolled": [1e-3, 3e-3], "pytorch": [0.02, 0.04]},
    {"scan": (0.5, 2.0), "unrolled": (1.0, 6.0)},
    {"scan": "fails: KeyError: 'x'", "unrolled": "fails: KeyError: 'x'"},
  )
  header, rule, *rows = bench_deep.table([one, two])
  assert header.count("|") == rule.count("|") == rows[0].count("|") == rows[1].count("|")
  assert rows[0] == (
    "| l2 | 1 | 2.00 | - | 30.00 | 15.0x | - | 0.50 / 2.00 | - | 1.25 / 4.00 | - |"
  )
  assert rows[1] == (
    "| l2 | 2 | 2.00 | 2.00 | 30.00 | 15.0x | 15.0x | 0.50 / 2.00 | 1.00 / 6.00 "
    "| fails: KeyError: 'x' | fails: KeyError: 'x' |"
  )


def test_a_failure_keeps_the_table_whole(bench_deep):
  cell = bench_deep.failure(ValueError("a | b\nsecond line"))
  assert cell == "fails: ValueError: a / b"
  assert bench_deep.failure(KeyError("x" * 200)).startswith("fails: KeyError: 'xxx")
  assert len(bench_deep.failure(KeyError("x" * 200))) == len("fails: KeyError: ") + 80
