import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jaxnorm import cli, config, results

ROOT = Path(__file__).resolve().parents[1]
EXP2 = ROOT / "experiments" / "exp2.py"


def _run(*args):
  return subprocess.run(
    [sys.executable, str(EXP2), *args], capture_output=True, text=True, cwd=ROOT, timeout=600
  )


def test_quick_run_end_to_end_then_replot(tmp_path):
  out = tmp_path / "run"
  proc = _run(
    "--quick",
    "--steps",
    "4",
    "--landscape-points",
    "5",
    "--no-progress",
    "--no-measures",
    "--out",
    str(out),
  )
  assert proc.returncode == 0, proc.stderr
  for name in (
    "figure2.png",
    "figure2.pdf",
    "results.npz",
    "summary.json",
    "variables_layernorm.msgpack",
    "variables_batchnorm.msgpack",
    "variables_none.msgpack",
  ):
    assert (out / name).is_file(), name
  arrays, summary = results.load(out)
  assert set(arrays) == {"layernorm", "batchnorm", "none"}
  for a in arrays.values():
    assert a["loss"].shape == (4,) and a["landscape"].shape == (5,)
    assert a["spectrum"].shape == (128,)
  assert summary["config"]["steps"] == 4
  assert set(summary["norms"]["none"]) >= {
    "final_loss",
    "landscape_max_rise",
    "spectrum_top_bottom_ratio",
    "seconds",
    "diverged",
  }
  assert "LayerNorm" in proc.stdout and "final loss" in proc.stdout
  (out / "figure2.png").unlink()
  proc = _run("--replot", str(out))
  assert proc.returncode == 0, proc.stderr
  assert (out / "figure2.png").is_file()


@pytest.mark.parametrize(
  "args, words",
  [
    (["--steps", "0"], "--steps"),
    (["--steps", "many"], "--steps"),
    (["--norms", "layernorm,groupnorm"], "groupnorm"),
    (["--landscape-range", "-1"], "landscape_range"),
    (["--batch-size", "1"], "batch_size"),
    (["--replot", "/nonexistent/folder"], "no saved results"),
    (["--bogus"], "--bogus"),
  ],
)
def test_bad_options_exit_2_with_one_line(args, words):
  proc = _run(*args)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and words in lines[0], proc.stderr
  assert "Traceback" not in proc.stderr


def test_divergence_is_reported_and_the_run_goes_on(tmp_path, capsys):
  bad = config.TINY.replace(steps=10, learning_rate_overrides=(("none", 1e6),))
  status = cli.main(
    ["--out", str(tmp_path), "--no-progress", "--no-measures", "--norms", "layernorm,none"],
    prog="t",
    description="",
    default=bad,
    default_out="",
    name="t",
    title="t",
  )
  assert status == cli.EXIT_DIVERGED
  summary = json.loads((tmp_path / "summary.json").read_text())
  assert summary["norms"]["none"]["diverged"]
  assert isinstance(summary["norms"]["none"]["first_nonfinite_step"], int)
  assert not summary["norms"]["layernorm"]["diverged"]
  assert (tmp_path / "figure2.png").is_file()
  assert "No Norm (seed 0) diverged" in capsys.readouterr().err
  arrays, _ = results.load(tmp_path)
  assert np.isfinite(arrays["layernorm"]["loss"]).all()
