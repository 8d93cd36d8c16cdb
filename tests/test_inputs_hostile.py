"""Hostile input: settings of the wrong type or of a value float32 cannot hold, and run
folders that are missing, malformed, share nothing or share a name, given to the library
and to the tools compare_runs and findings_tables (jaxnorm/compare_runs.py,
jaxnorm/findings_tables.py; tools/*.py and `jaxnorm compare` run them).

The tools are called in-process (`main(argv)` returns or exits with the status) on small
run folders written from hand-made results; one refusal of the command line per script runs
it in a subprocess, refused before anything compiles, for the script's own exit status."""

import dataclasses
import errno
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnorm import (
  cli,
  compare_runs,
  config,
  directions,
  exits,
  findings_tables,
  predictions,
  report,
  results,
  sweep,
)
from jaxnorm import families as families_lib
from jaxnorm.result import ExperimentResult, NormResult
from jaxnorm.spec import SPEC_FIELD_TYPES, ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]


def _result(norms=("layernorm", "none"), seeds=(0, 1), shift: float = 0.0):
  """A hand-made run of `norms` over `seeds`: 12 steps, a 3-point slice, and two measures,
  the adaptive sharpness (No Norm's the largest) and the effective rank."""
  cfg = config.TINY.replace(norms=tuple(norms), seed=seeds[0], steps=12, landscape_points=3)
  spec = ExperimentSpec(cfg, num_seeds=len(seeds), name="t")
  out = {}
  for i, norm in enumerate(norms):
    s = len(seeds)
    rise = np.array([0.1, 0.12, 0.3, 0.31][:s]) * (3.0 if norm == "none" else 1.0) + shift
    out[norm] = NormResult(
      norm=norm,
      learning_rate=cfg.learning_rate_for(norm),
      seeds=np.asarray(seeds),
      losses=np.linspace(2.0, 1.0, 12)[None].repeat(s, 0) + i,
      alphas=np.array([-0.5, 0.0, 0.5]),
      offsets=np.array([-0.5, 0.0, 0.5]),
      landscape=np.array([[1.5, 1.0, 1.4]]).repeat(s, 0),
      base_loss=np.ones(s),
      spectrum=np.array([[3.0, 2.0, 1.0]]).repeat(s, 0),
      measures={"adaptive_sharpness": rise, "effective_rank": 10.0 - rise},
      surface_grid=None,
      surface=None,
      variables=None,
      first_nonfinite_step=-np.ones(s, dtype=np.int64),
      seconds={"train": 1.0, "analysis": 1.0},
    )
  return ExperimentResult(spec, out, 2.0, {})


def _saved(folder: Path, **kwargs) -> str:
  results.save(_result(**kwargs), folder)
  return str(folder)


def _status(script, *argv) -> int:
  """The exit status of `script.main(argv)`, which returns it or exits with it."""
  try:
    return script.main(list(argv))
  except SystemExit as e:
    return e.code


def _one_line_error(capsys, prog: str, kind: str = "error") -> str:
  """What the script wrote: nothing on standard output, one line "<prog>: <kind>: ..." on
  standard error (no usage dump, no traceback). Returns that line."""
  out, err = capsys.readouterr()
  assert out == "" and err.count("\n") == 1, err
  assert err.startswith(f"{prog}: {kind}: ") and "Traceback" not in err
  return err


# --- compare_runs.py ---------------------------------------------------------------------


@pytest.mark.hostile
def test_compare_runs_with_no_normalization_in_common_exits_2(tmp_path, capsys):
  a = _saved(tmp_path / "a", norms=("layernorm",))
  b = _saved(tmp_path / "b", norms=("none",))
  status = _status(compare_runs, a, b, "--labels", "f32,f64")
  err = _one_line_error(capsys, "compare_runs.py")
  assert status == 2
  assert "no normalization in common (f32: LayerNorm; f64: No Norm)" in err


@pytest.mark.hostile
def test_compare_runs_says_which_models_were_left_out(tmp_path, capsys):
  a = _saved(tmp_path / "a", norms=("layernorm", "none"))
  b = _saved(tmp_path / "b", norms=("none", "batchnorm"))
  assert _status(compare_runs, a, b, "--labels", "f32,f64") == 0
  out = capsys.readouterr().out
  assert "Normalizations in one run only, left out: f32: LayerNorm; f64: BatchNorm." in out
  assert "## No Norm (2 seeds)" in out and "## LayerNorm" not in out


class _FullDisk(io.StringIO):
  """Standard output on a full disk: every write fails."""

  def write(self, text: str) -> int:
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.hostile
def test_compare_runs_exits_3_when_its_output_cannot_be_written(tmp_path, monkeypatch, capsys):
  """Printing is the tool's whole work: output lost is a failure, not a success."""
  a = _saved(tmp_path / "a", norms=("none",))
  b = _saved(tmp_path / "b", norms=("none",))
  monkeypatch.setattr(sys, "stdout", _FullDisk())
  assert _status(compare_runs, a, b) == exits.EXIT_FAILED
  assert "cannot write to standard output" in capsys.readouterr().err


@pytest.mark.hostile
@pytest.mark.parametrize(
  "manifest, why",
  [
    ({"files": 5}, "no file list"),
    ([{"files": {}}], "is not a run manifest"),
    ("{not json", "is not a run manifest"),
  ],
)
def test_compare_runs_on_a_malformed_run_json_exits_2(tmp_path, capsys, manifest, why):
  a = _saved(tmp_path / "a")
  b = _saved(tmp_path / "b")
  text = manifest if isinstance(manifest, str) else json.dumps(manifest)
  (tmp_path / "b" / "run.json").write_text(text)
  status = _status(compare_runs, a, b)
  err = _one_line_error(capsys, "compare_runs.py")
  assert status == 2 and why in err and "run.json" in err


@pytest.mark.hostile
def test_compare_runs_on_a_missing_folder_exits_2(tmp_path, capsys):
  status = _status(compare_runs, _saved(tmp_path / "a"), str(tmp_path / "nowhere"))
  err = _one_line_error(capsys, "compare_runs.py")
  assert status == 2 and "holds no saved results" in err


def test_compare_runs_usage_errors_are_one_line(tmp_path, capsys):
  a = _saved(tmp_path / "a")
  assert _status(compare_runs, a) == 2  # run_b missing: argparse's error, no usage dump
  _one_line_error(capsys, "compare_runs.py")
  assert _status(compare_runs, a, a, "--labels", "x,x") == 2
  assert "different labels" in _one_line_error(capsys, "compare_runs.py")


def test_compare_runs_fails_unforeseen_errors_with_3_and_one_line(tmp_path, capsys, monkeypatch):
  def broken(*args):
    raise KeyError("a bug\nover two lines")

  monkeypatch.setattr(report, "comparison", broken)  # compare_runs calls jaxnorm.report
  a = _saved(tmp_path / "a")
  status = _status(compare_runs, a, a)
  err = _one_line_error(capsys, "compare_runs.py")
  assert status == 3 and "KeyError" in err


# --- findings_tables.py ------------------------------------------------------------------


def test_column_names_are_the_shortest_distinguishing_ends(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "here").mkdir()
  assert findings_tables.column_names(["runs/x", "runs/y"]) == ["x", "y"]
  assert findings_tables.column_names(["p/a/x", "p/b/x", "q/b/x", "y"]) == [
    "a/x",
    "p/b/x",
    "q/b/x",
    "y",
  ]
  assert findings_tables.column_names(["x", str(tmp_path / "deeper" / "x")]) == [
    f"{tmp_path.name}/x",
    "deeper/x",
  ]
  os.chdir(tmp_path / "here")
  assert findings_tables.column_names(["."]) == ["here"]  # not an empty name
  with pytest.raises(ValueError, match="given twice"):
    findings_tables.column_names(["runs/x", "runs/../runs/x/"])


@pytest.mark.hostile
def test_findings_tables_keeps_a_column_per_run_of_the_same_name(tmp_path, capsys):
  a = _saved(tmp_path / "paper" / "run")
  b = _saved(tmp_path / "equal_lr" / "run", shift=1.0)
  assert _status(findings_tables, a, b) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "| comparison | end, paper/run | end, equal_lr/run |"
  row = next(line for line in lines if "adaptive_sharpness" in line).split(" | ")
  assert len(row) == 3 and row[1] != row[2]  # two runs, two different verdicts


@pytest.mark.hostile
def test_findings_tables_refuses_a_folder_given_twice(tmp_path, capsys):
  a = _saved(tmp_path / "a")
  status = _status(findings_tables, a, f"{tmp_path}/./a/")
  err = _one_line_error(capsys, "findings_tables.py")
  assert status == 2 and f"{tmp_path}/./a/ is given twice (as {a})" in err


@pytest.mark.hostile
@pytest.mark.parametrize("manifest", [{"files": 5}, ["results.npz"]])
def test_findings_tables_on_bad_folders_exits_2(tmp_path, capsys, manifest):
  a = _saved(tmp_path / "a")
  status = _status(findings_tables, a, str(tmp_path / "missing"))
  assert "holds no saved results" in _one_line_error(capsys, "findings_tables.py")
  assert status == 2
  (tmp_path / "a" / "run.json").write_text(json.dumps(manifest))
  status = _status(findings_tables, a)
  assert "run.json" in _one_line_error(capsys, "findings_tables.py")
  assert status == 2


def test_findings_tables_without_a_judgeable_comparison_exits_2(tmp_path, capsys):
  """A run of LayerNorm alone (no baseline to compare with, no BatchNorm) gives no row."""
  status = _status(findings_tables, _saved(tmp_path / "a", norms=("layernorm",)))
  err = _one_line_error(capsys, "findings_tables.py")
  assert status == 2 and "no prediction of exp2.py can be judged" in err and "LayerNorm" in err


def test_findings_tables_keeps_the_column_of_a_run_without_verdicts(tmp_path, capsys):
  a = _saved(tmp_path / "a")
  b = _saved(tmp_path / "b", norms=("layernorm",))  # nothing to judge: a column of n/a
  assert _status(findings_tables, a, b) == 0
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == "| comparison | end, a | end, b |"
  assert all(line.endswith("| n/a |") for line in lines[2:])


# --- settings of the wrong type ----------------------------------------------------------

# Per field of ExperimentSpec, values of the wrong type (each refused naming the field).
SPEC_WRONG_TYPES = {
  "config": ["tiny", config.TINY.__dict__, None],
  "num_seeds": [True, 2.0, "2", None],
  "name": [None, 3, b"exp2"],
  "title": [None, ("a",)],
  "predictions": [predictions.flatter(("layernorm",), "none", "x"), ["x"], ("x",)],
  "measures": ["default", True],
  "surface_points": [True, 3.0],
  "seeds_per_call": [False, 2.5],
  "chunk_size": [1.5, True],
  "matched_losses": [0.5, [0.5], (True,), ("0.5",)],
  "curvature_iterations": [False, 2.0],
  "analysis_dtype": [np.float64, None],
}


def test_every_spec_field_has_wrong_types_to_try():
  fields = {f.name for f in dataclasses.fields(ExperimentSpec)}
  assert set(SPEC_WRONG_TYPES) == fields == set(SPEC_FIELD_TYPES)


@pytest.mark.hostile
@pytest.mark.parametrize(
  "field, value", [(f, v) for f, values in SPEC_WRONG_TYPES.items() for v in values]
)
def test_spec_fields_of_the_wrong_type_are_refused_by_name(field, value):
  changes = {"config": config.TINY, field: value}
  with pytest.raises(TypeError, match=rf"ExperimentSpec\.{field}(\[\d+\])?=") as e:
    ExperimentSpec(**changes)
  assert isinstance(e.value, ValueError)  # as every other invalid setting


MEASURE_WRONG_TYPES = {
  "lanczos_iterations": [True, 20.0, "20"],
  "lanczos_tol": [True, "0.01", None],
  "trace_probes": [np.float64(4)],
  "sharpness_rho": [False, "0.05"],
  "sharpness_samples": [None],
  "filter_policy_1d": [None, ["zero"], 0],
  "slice_directions": [8.0],
  "lanczos_restarts": [True, 8.0, "8"],
  # A string is not a tuple of names (not even "hessian"), nor an empty tuple, nor a family
  # that does not exist.
  "families": ["hessian", (), ("hessian", "curvature"), None, ("standard",)],
}


def test_every_measure_config_field_has_wrong_types_to_try():
  assert set(MEASURE_WRONG_TYPES) == {
    f.name for f in dataclasses.fields(families_lib.MeasureConfig)
  }


@pytest.mark.parametrize(
  "field, value", [(f, v) for f, values in MEASURE_WRONG_TYPES.items() for v in values]
)
def test_measure_config_fields_of_the_wrong_type_are_refused_by_name(field, value):
  with pytest.raises(ValueError, match=rf"MeasureConfig\.{field}="):
    families_lib.MeasureConfig(**{field: value})


def test_measure_config_values_and_policies():
  assert families_lib.MeasureConfig(trace_probes=np.int64(4)).trace_probes.__class__ is int
  for policy in directions.POLICIES_1D:  # the policies the filter-normalized slice knows
    assert families_lib.MeasureConfig(filter_policy_1d=policy).filter_policy_1d == policy
  for field, value in [("lanczos_tol", 0.0), ("sharpness_rho", float("inf")), ("lanczos_tol", -1)]:
    with pytest.raises(ValueError, match=rf"MeasureConfig\.{field}=.* finite and > 0"):
      families_lib.MeasureConfig(**{field: value})


# --- learning rates float32 cannot hold --------------------------------------------------


@pytest.mark.hostile
@pytest.mark.parametrize(
  "rate, becomes", [(5e-324, "0"), (1e-50, "0"), (1e-40, "0"), (1e39, "inf")]
)
def test_sweep_refuses_rates_that_are_0_or_inf_in_float32(rate, becomes):
  """1e-40 is a float32 subnormal, which XLA flushes to 0 in the training program."""
  why = f"in float32, where it would be {becomes}"
  with pytest.raises(
    ValueError, match=rf"learning rate {re.escape(repr(rate))} is invalid: .*{why}"
  ):
    sweep.check_rates((1e-3, rate))


def test_sweep_rates_are_numbers():
  assert sweep.check_rates([np.float32(0.5), 1, config.FLOAT32_TINY]) == (
    0.5,
    1.0,
    1.1754943508222875e-38,
  )
  for rates, where in [
    ("1e-3", "rates"),
    ((1e-3, True), r"rates\[1\]"),
    (("1e-3",), r"rates\[0\]"),
  ]:
    with pytest.raises(TypeError, match=rf"{where}="):
      sweep.check_rates(rates)


def _refused_before_running(tmp_path, script: str, *args: str) -> str:
  """Runs experiments/<script> with `args` and --out in `tmp_path`: exit status 2, one
  line on standard error, nothing written. Returns that line. (The tiny preset without
  measures or compilation cache: were the input not refused, the run would end soon.)"""
  out = tmp_path / "out"
  small = ["--preset", "tiny", "--steps", "2", "--no-measures", "--no-compilation-cache"]
  proc = subprocess.run(
    [sys.executable, f"experiments/{script}", *small, *args, "--out", str(out)],
    cwd=ROOT,
    text=True,
    capture_output=True,
    timeout=120,
  )
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
  assert proc.stderr.startswith(f"{script}: error: ") and proc.stdout == ""
  assert not out.exists()
  return proc.stderr


@pytest.mark.hostile
def test_exp2_refuses_a_learning_rate_that_is_0_in_float32(tmp_path):
  err = _refused_before_running(tmp_path, "exp2.py", "--learning-rate", "1e-50")
  assert "Config.learning_rate=1e-50 is invalid" in err and "float32" in err


@pytest.mark.hostile
def test_exp2_refuses_a_normalization_overridden_twice(tmp_path, capsys):
  """In-process, as the script calls `cli.main` (its exit status in a process: above)."""
  args = ["--preset", "tiny", "--no-measures", "--no-compilation-cache", "--no-progress"]
  args += ["--lr-override", "none=1e-4,none=5e-4", "--out", str(tmp_path / "out")]
  with pytest.raises(SystemExit) as exit_:
    cli.main(args, predictions.EXP2, prog="exp2.py")
  assert exit_.value.code == 2
  out, err = capsys.readouterr()
  assert err.count("\n") == 1 and err.startswith("exp2.py: error: ") and out == ""
  assert "Config.learning_rate_overrides=" in err and "names 'none' more than once" in err
  assert not (tmp_path / "out").exists()


@pytest.mark.hostile
def test_lr_sweep_refuses_a_rate_that_is_0_in_float32(tmp_path):
  err = _refused_before_running(tmp_path, "lr_sweep.py", "--rates", "1e-4,5e-324")
  assert "argument --rates: learning rate 5e-324 is invalid" in err
