import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import CHEAP_MEASURES, TEST_SCRIPT, cli_kwargs

from jaxnorm import (
  cli,
  config,
  exits,
  manifests,
  options,
  predictions,
  preflight,
  results,
  runfolder,
)
from jaxnorm.predictions import Experiment

ROOT = Path(__file__).resolve().parents[1]
EXP2 = ROOT / "experiments" / "exp2.py"
DATA = Path(__file__).parent / "data"


def _run(*args, env=None):
  return subprocess.run(
    [sys.executable, str(EXP2), *args],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=600,
    env=env,
  )


def test_quick_run_end_to_end_then_replot(tmp_path):
  """The script as a user runs it; the compilation cache goes where $JAXNORM_CACHE_DIR
  says, and nothing is written into the home folder. Two of the three models, one with
  batch statistics and one without any normalization (each model's programs are compiled
  in the run; all three are parsed in test_options.py::
  test_learning_rates_from_the_command_line)."""
  out = tmp_path / "run"
  home, cache = tmp_path / "home", tmp_path / "cache"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
  env.update(HOME=str(home), JAXNORM_CACHE_DIR=str(cache), MPLCONFIGDIR=str(tmp_path / "mpl"))
  proc = _run(
    "--quick",
    "--steps",
    "4",
    "--landscape-points",
    "5",
    "--no-progress",
    "--no-measures",
    "--norms",
    "batchnorm,none",
    "--matmul-precision",
    "high",
    "--out",
    str(out),
    env=env,
  )
  assert proc.returncode == 0, proc.stderr
  assert any(cache.iterdir()) and not any(home.iterdir())
  for name in (
    "figure2.png",
    "figure2.pdf",
    "results.npz",
    "summary.json",
    "variables_batchnorm.msgpack",
    "variables_none.msgpack",
  ):
    assert (out / name).is_file(), name
  loaded = results.load(out)
  assert set(loaded.norms) == {"batchnorm", "none"}
  for r in loaded.norms.values():
    assert r.losses.shape == (1, 4) and r.landscape.shape == (1, 5)
    assert r.spectrum.shape == (1, 128)
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["steps"] == 4 and summary["config"]["matmul_precision"] == "high"
  assert set(summary["norms"]["none"]) >= {
    "final_loss",
    "landscape_max_rise",
    "spectrum_top_bottom_ratio",
    "seconds",
    "diverged",
  }
  assert "BatchNorm" in proc.stdout and "final loss" in proc.stdout
  (out / "figure2.png").unlink()
  assert cli.main(["--replot", str(out)], **TEST_SCRIPT) == 0  # in-process
  assert (out / "figure2.png").is_file()


@pytest.mark.hostile
@pytest.mark.parametrize("folder", ["format1_one_seed", "format1_two_seeds"])
def test_a_folder_without_manifest_loads_with_a_warning_but_is_never_rewritten(
  tmp_path, folder, capsys
):
  shutil.copytree(DATA / folder, tmp_path / "old")
  with pytest.warns(manifests.UncheckedWarning, match="read unchecked"):
    assert "none" in results.load(tmp_path / "old").norms
  before = {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()}
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--replot", str(tmp_path / "old")], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  line = capsys.readouterr().err.strip()
  assert "\n" not in line and "has no run.json" in line
  assert {p.name: p.read_bytes() for p in (tmp_path / "old").iterdir()} == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]  # not even a lock


@pytest.mark.parametrize(
  "args, words",
  [
    (["--steps", "0"], "--steps"),
    (["--steps", "many"], "--steps"),
    (["--norms", "layernorm,groupnorm"], "groupnorm"),
    (["--landscape-range", "-1"], "landscape_range"),
    (["--batch-size", "1"], "batch_size"),
    (["--replot", "/nonexistent/folder"], "no saved results"),
    (["--replot", ""], "--replot"),
    (["--matmul-precision", "tf32"], "--matmul-precision"),
    (["--compile-workers", "-1"], "--compile-workers"),
    (["--bogus"], "--bogus"),
  ],
)
def test_bad_options_exit_2_with_one_line(tmp_path, capsys, args, words):
  """In-process: the script's own exit status 2 and one line are shown by
  test_inputs_hostile.py::test_exp2_refuses_a_learning_rate_that_is_0_in_float32."""
  if "--replot" not in args:  # which takes no run options
    args = [*args, "--out", str(tmp_path / "run"), *IN_PROCESS]
  with pytest.raises(SystemExit) as exit_:
    cli.main(args, **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and words in lines[0], err
  assert "Traceback" not in err and not (tmp_path / "run").exists()


IN_PROCESS = ["--no-progress", "--no-compilation-cache"]


def test_divergence_is_reported_and_the_run_goes_on(tmp_path, capsys):
  # No Norm's programs are those of test_faults.py's tiny runs: the rate is data.
  bad = config.TINY.replace(steps=4, landscape_points=3, learning_rate_overrides=(("none", 1e6),))
  status = cli.main(
    ["--out", str(tmp_path), *IN_PROCESS, "--no-measures", "--norms", "layernorm,none"],
    **cli_kwargs(bad),
  )
  assert status == exits.EXIT_DIVERGED
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["norms"]["none"]["diverged"]
  assert isinstance(summary["norms"]["none"]["first_nonfinite_step"][0], int)
  assert not summary["norms"]["layernorm"]["diverged"]
  assert (tmp_path / "figure2.png").is_file()
  assert "No Norm (seed 0) diverged" in capsys.readouterr().err
  assert np.isfinite(results.load(tmp_path).norms["layernorm"].losses).all()


def test_seeds_surface_and_measures_are_written(tmp_path, capsys, monkeypatch, measured_result):
  """The sizes and estimator settings of conftest's `measured_result`, built first: the
  analysis program is the same, and comes from the compilation cache."""
  cfg = config.TINY.replace(steps=12, landscape_points=5)
  experiment = Experiment("t", "t", cfg)
  parsed = options.build_parser("t", "", experiment).parse_args([])
  default = options.spec_from_args(parsed, experiment)
  assert default.measures == options.MeasureConfig()  # what the script measures with
  cheap = CHEAP_MEASURES
  monkeypatch.setattr(
    options, "MeasureConfig", lambda families: cheap if families == cheap.families else None
  )
  args = ["--out", str(tmp_path), *IN_PROCESS, "--surface", "3", "--seeds", "2"]
  args += ["--measures", "all"]
  args += ["--compile-workers", "0", "--curvature-iterations", "4"]
  status = cli.main(
    [*args, "--norms", "none"],
    **cli_kwargs(cfg, [predictions.flatter(("none",), "none", "a prediction")]),
  )
  assert status == 0
  loaded = results.load(tmp_path)
  assert loaded.norms["none"].losses.shape == (2, cfg.steps)
  assert loaded.norms["none"].surface.shape == (2, 3, 3)
  summary = json.loads((tmp_path / "summary.json").read_text())
  final = summary["norms"]["none"]["final_loss"]
  assert final["n"] == 2 and final["ci95"][0] < final["mean"] < final["ci95"][1]
  assert summary["norms"]["none"]["seeds"] == [0, 1]
  assert "±" in capsys.readouterr().out
  assert (tmp_path / "surfaces.png").is_file() and (tmp_path / "curvature.png").is_file()
  assert (tmp_path / "hessian_density.png").is_file()
  text = (tmp_path / "measures.md").read_text()
  assert "| Hessian trace |" in text and "**a prediction**" in text
  assert f"| learning rate | {cfg.learning_rate_for('none'):g} |" in text
  loaded_variables = results.load_variables(tmp_path, "none")
  assert jax.tree.leaves(loaded_variables)[0].shape[0] == 2


def _foreign(tmp_path):
  folder = tmp_path / "mine"
  folder.mkdir()
  (folder / "notes.txt").write_text("mine")
  return folder


def _run_folder(tmp_path) -> Path:
  """A run folder with its run.json: the files of an earlier version's run, committed."""
  staging = runfolder.begin(tmp_path / "old")
  for path in (DATA / "format1_one_seed").iterdir():
    staging.write(path.name, path.read_bytes())
  staging.commit({})
  return tmp_path / "old"


def _truncated_run(tmp_path):
  npz = _run_folder(tmp_path) / "results.npz"
  npz.write_bytes(npz.read_bytes()[:100])
  return tmp_path / "old"


def _changed_byte(tmp_path):
  variables = _run_folder(tmp_path) / "results.npz"
  data = bytearray(variables.read_bytes())
  data[len(data) // 2] ^= 1
  variables.write_bytes(bytes(data))
  return tmp_path / "old"


def _manifest_entry_a_number(tmp_path):
  manifest = _run_folder(tmp_path) / manifests.MANIFEST
  info = json.loads(manifest.read_text())
  info["files"]["results.npz"] = 5
  manifest.write_text(json.dumps(info))
  return tmp_path / "old"


FOLDERS = {
  "foreign": _foreign,
  "truncated": _truncated_run,
  "changed": _changed_byte,
  "bad_manifest": _manifest_entry_a_number,
}


@pytest.mark.parametrize(
  "args, words",
  [
    (["--seed", "4294967296"], "seed"),
    (["--seed", "-1"], "seed"),
    (["--seed", "2147483647", "--seeds", "2"], "2147483648"),
    (["--steps", str(10**12)], "steps"),
    (["--landscape-range", "1e308"], "landscape_range"),
    (["--landscape-range", "nan"], "landscape_range"),
    (["--landscape-points", "1"], "landscape_points"),
    (["--landscape-points", str(10**9)], "landscape_points"),
    (["--surface", "1"], "surface_points"),
    (["--matched-loss", "0.1,-1"], "matched_losses"),
    (["--matched-loss", "0.1,0.1"], "matched_losses"),
    (["--matched-loss", "low"], "--matched-loss"),
    (["--curvature-iterations", "1"], "curvature_iterations"),
    (["--measures", "hessian,curvature"], "'curvature'"),
    (["--measures", ""], "give a level"),
    (["--measures", "all", "--no-measures"], "contradict"),
    (["--replot", "{tmp}", "--measures", "all"], "--measures"),
    (["--surface", "100000"], "surface_points"),
    (["--batch-size", str(10**7)], "GiB"),
    (["--seeds", str(10**6)], "GiB"),
    (["--out", "{tmp}/a_file"], "is a file"),
    (["--out", "{tmp}/a_file/run"], "is a file"),
    (["--out", "/proc/jaxnorm-test/run"], "cannot write"),
    (["--out", "{foreign}"], "notes.txt"),
    (["--replot", "{truncated}"], "truncated"),
    (["--coordinator", "localhost:12355"], "go together"),
    (["--coordinator", "localhost", "--num-processes", "2", "--process-id", "0"], "host:port"),
    (["--coordinator", "h:1", "--num-processes", "2", "--process-id", "2"], "--process-id 2"),
    (["--num-processes", "0"], "--num-processes"),
    (["--distributed", "--process-id", "0"], "drop --coordinator"),
    (["--replot", "{tmp}", "--distributed"], "one process"),
    pytest.param(["--out", ""], "empty string", marks=pytest.mark.hostile),
    pytest.param(["--out", "/proc"], "mount point", marks=pytest.mark.hostile),
    pytest.param(["--out", "{tmp}/" + "x" * 256], "too long", marks=pytest.mark.hostile),
    pytest.param(["--out", "{tmp}/" + "x" * 240], "too long", marks=pytest.mark.hostile),
    pytest.param(["--replot", "{changed}"], "changed or truncated", marks=pytest.mark.hostile),
    pytest.param(["--replot", "{bad_manifest}"], "not a run manifest", marks=pytest.mark.hostile),
    pytest.param(["--replot", "{tmp}", "--norms", "bogus"], "--norms", marks=pytest.mark.hostile),
    pytest.param(["--replot", "{tmp}", "--out", "{tmp}/x"], "--out", marks=pytest.mark.hostile),
    pytest.param(["--replot", "{tmp}", "--seeds", "1"], "--seeds", marks=pytest.mark.hostile),
  ],
)
def test_bad_input_is_refused_in_one_line_before_any_work(tmp_path, capsys, args, words):
  (tmp_path / "a_file").write_text("x")
  paths = {"tmp": tmp_path}
  for name, make in FOLDERS.items():
    if any("{" + name + "}" in a for a in args):
      paths[name] = make(tmp_path)
  args = [a.format(**paths) for a in args]
  if "--replot" not in args:  # which takes no run options
    args += [*IN_PROCESS, *([] if "--out" in args else ["--out", str(tmp_path / "run")])]
  capsys.readouterr()
  before = sorted(tmp_path.rglob("*"))
  with pytest.raises(SystemExit) as exit_:
    cli.main(args, **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  out, err = capsys.readouterr()
  lines = err.strip().splitlines()
  assert len(lines) == 1 and words in lines[0], err
  assert "results ->" not in out  # refused before the run started
  assert sorted(tmp_path.rglob("*")) == before  # nothing written


def test_the_coordinator_defaults_to_jax_coordinator_address(tmp_path, capsys, monkeypatch):
  monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "no-port-here")
  args = ["--num-processes", "2", "--process-id", "1", "--out", str(tmp_path / "run")]
  with pytest.raises(SystemExit) as exit_:
    cli.main([*args, *IN_PROCESS], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  assert "--coordinator 'no-port-here' is invalid" in capsys.readouterr().err


def test_a_compilation_cache_path_that_is_a_file_is_refused(tmp_path, capsys, monkeypatch):
  (tmp_path / "cache").write_text("x")
  monkeypatch.setenv("JAXNORM_CACHE_DIR", str(tmp_path / "cache"))
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--out", str(tmp_path / "run"), "--no-progress"], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  line = capsys.readouterr().err.strip()
  assert "\n" not in line and "--no-compilation-cache" in line
  assert not (tmp_path / "run").exists()


def test_a_slice_too_wide_for_float32_is_reported(tmp_path, capsys):
  args = ["--out", str(tmp_path), *IN_PROCESS, "--no-measures", "--norms", "none"]
  args += ["--steps", "4", "--landscape-points", "3"]  # test_faults.py's programs
  status = cli.main([*args, "--landscape-range", "1e30"], **TEST_SCRIPT)
  assert status == 0
  assert "No Norm: the landscape slice is NaN or infinite at" in capsys.readouterr().err
  assert not np.isfinite(results.load(tmp_path).norms["none"].landscape).all()


@pytest.mark.parametrize(
  "args, words",
  [
    (["--lr-override", "none"], "NORM=RATE"),
    (["--lr-override", "none=fast"], "NORM=RATE"),
    (["--lr-override", "groupnorm=1e-3"], "groupnorm"),
    (["--learning-rate", "-1"], "learning_rate"),
    (["--learning-rate", "inf"], "learning_rate"),
  ],
)
def test_bad_learning_rates_exit_2_with_one_line(tmp_path, capsys, args, words):
  with pytest.raises(SystemExit) as exit_:
    cli.main([*args, "--out", str(tmp_path / "run"), *IN_PROCESS], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and words in lines[0], lines


@pytest.mark.hostile
@pytest.mark.parametrize("out", [".", "..", "/"])
def test_the_working_directory_or_a_folder_above_it_is_never_replaced(
  tmp_path, capsys, monkeypatch, out
):
  work = tmp_path / "work"
  work.mkdir()
  monkeypatch.chdir(work)
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--out", out, *IN_PROCESS], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  assert "working directory" in capsys.readouterr().err
  assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and not any(work.iterdir())


@pytest.mark.hostile
def test_a_compilation_cache_folder_that_cannot_be_written_is_refused(
  tmp_path, capsys, monkeypatch
):
  if os.geteuid() == 0:  # root writes any folder whatever its mode: use one no one can
    cache = Path("/sys/kernel")
  else:
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o555)
  monkeypatch.setenv("JAXNORM_CACHE_DIR", str(cache))
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--out", str(tmp_path / "run"), "--no-progress"], **TEST_SCRIPT)
  assert exit_.value.code == exits.EXIT_USAGE
  line = capsys.readouterr().err.strip()
  assert "\n" not in line and f"compilation cache folder {cache}" in line
  assert not (tmp_path / "run").exists()


@pytest.mark.hostile
@pytest.mark.parametrize("error", [KeyError("k"), OSError(5, "Input/output error"), TypeError()])
def test_an_exception_before_the_run_exits_3_with_one_line(tmp_path, capsys, monkeypatch, error):
  def broken(*args, **kwargs):
    raise error

  monkeypatch.setattr(preflight, "check", broken)
  status = cli.main(["--out", str(tmp_path / "run"), *IN_PROCESS], **TEST_SCRIPT)
  assert status == exits.EXIT_FAILED
  line = capsys.readouterr().err.strip()
  assert "\n" not in line and type(error).__name__ in line and "Traceback" not in line
  assert not (tmp_path / "run").exists()


@pytest.mark.hostile
def test_replot_reads_the_run_only_while_it_holds_the_folders_lock(tmp_path, capsys, monkeypatch):
  folder = _run_folder(tmp_path)
  load = results.load

  def load_under_lock(path):
    with open(tmp_path / f".{folder.name}.lock", "a") as lock:
      with pytest.raises(BlockingIOError):  # another open file of this process holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return load(path)

  monkeypatch.setattr(results, "load", load_under_lock)
  assert cli.main(["--replot", str(folder)], **TEST_SCRIPT) == 0
  assert "No Norm" in capsys.readouterr().out
  manifests.verify(folder, tuple(manifests.manifest(folder)["files"]))
