"""The learning-rate sweep (`jaxnorm.sweep`, experiments/lr_sweep.py)."""

import dataclasses
import json

import jax
import numpy as np
import pytest

from jaxnorm import (
  cli,
  config,
  exits,
  manifests,
  pipeline,
  report,
  results,
  runfolder,
  stats,
  sweep,
)
from jaxnorm.predictions import Experiment
from jaxnorm.spec import ExperimentSpec

CFG = config.TINY.replace(steps=6, landscape_points=3, norms=("layernorm", "none"))
SPEC = ExperimentSpec(CFG, num_seeds=2, measures=None, name="t")
RATES = (1e-3, 1e-2)


def test_spec_at_puts_every_model_at_the_rate():
  spec = sweep.spec_at(ExperimentSpec(config.PAPER), 3e-4)
  assert {spec.config.learning_rate_for(n) for n in config.PAPER.norms} == {3e-4}


@pytest.mark.parametrize("rates", [(), (1e-3, 0.0), (1e-3, float("nan")), (1e-3, 1e-3)])
def test_bad_rates_are_refused(rates):
  with pytest.raises(ValueError, match="learning rate"):
    sweep.check_rates(rates)


@pytest.fixture(scope="module")
def swept():
  """The whole 2 x 2 grid of each model in one compiled call."""
  return sweep.run(dataclasses.replace(SPEC, seeds_per_call=4), RATES, progress=False)


def test_each_rate_is_the_ordinary_run_at_that_rate(swept):
  assert swept.rates == RATES and len(swept.runs) == 2
  alone = pipeline.run(
    ExperimentSpec(CFG.replace(learning_rate=1e-2, learning_rate_overrides=()), 2, measures=None),
    progress=False,
  )
  # The grid computes 4 runs per call where `alone` computes 2: the same up to rounding.
  for norm in CFG.norms:
    r = swept.runs[1].norms[norm]
    assert r.learning_rate == 1e-2 and r.seeds.tolist() == [0, 1]
    assert swept.runs[1].spec.config.learning_rate_for(norm) == 1e-2
    np.testing.assert_allclose(r.losses, alone.norms[norm].losses, rtol=1e-5)
    np.testing.assert_allclose(r.landscape, alone.norms[norm].landscape, rtol=1e-5)
    np.testing.assert_allclose(r.spectrum, alone.norms[norm].spectrum, rtol=1e-4)
    assert all(leaf.shape[0] == 2 for leaf in jax.tree.leaves(r.variables))
  # Different rates train differently.
  assert not np.array_equal(swept.runs[0].norms["none"].losses, swept.runs[1].norms["none"].losses)


def test_stats_hold_one_entry_per_rate(swept):
  final = stats.by_rate(swept)["none"]["final_loss"]
  assert len(final) == 2 and all(s["n"] == 2 for s in final)
  expected = swept.runs[0].norms["none"].losses[:, -100:].mean(axis=1).mean()
  assert final[0]["mean"] == pytest.approx(expected)
  assert stats.diverged_by_rate(swept) == {"layernorm": [0, 0], "none": [0, 0]}
  text = report.sweep_markdown(swept)
  assert "| lr 0.001 | lr 0.01 |" in text and "| No Norm | 0/2 | 0/2 |" in text


def test_the_command_line_writes_one_run_folder_per_rate_and_replots(tmp_path, capsys):
  args = ["--out", str(tmp_path), "--no-progress", "--no-compilation-cache", "--no-measures"]
  args += ["--seeds", "2", "--norms", "none", "--rates", "1e-3,1e-2"]
  kwargs = dict(experiment=Experiment("t", "", CFG, rates=(1e-3,)), prog="t")
  assert cli.main(args, **kwargs) == 0
  assert "2 rates x 1 models" in capsys.readouterr().out
  info = json.loads((tmp_path / "sweep.json").read_text())
  assert info["rates"] == [1e-3, 1e-2] and info["folders"] == ["lr_0.001", "lr_0.01"]
  assert info["measure_families"] is None  # --no-measures, said in sweep.json and sweep.md
  assert "Measured: the reference's slice and spectrum only" in (tmp_path / "sweep.md").read_text()
  assert "(`--measures none`)" in (tmp_path / "lr_0.01" / "measures.md").read_text()
  for rate, folder in zip(info["rates"], info["folders"], strict=True):
    loaded = results.load(tmp_path / folder)  # an ordinary run folder, checked against its run.json
    assert loaded.norms["none"].learning_rate == rate
  manifest = manifests.manifest(tmp_path)
  assert "lr_0.01/results.npz" in manifest["files"] and "sweep.png" in manifest["files"]
  manifests.verify(tmp_path, tuple(manifest["files"]))
  again = results.load_sweep(tmp_path)
  assert stats.by_rate(again)["none"]["final_loss"] == info["norms"]["none"]["final_loss"]
  (tmp_path / "sweep.png").unlink()
  assert cli.main(["--replot", str(tmp_path)], **kwargs) == 0
  assert (tmp_path / "sweep.png").is_file()
  manifests.verify(tmp_path, tuple(manifests.manifest(tmp_path)["files"]))
  # One rate's run redrawn alone: the sweep's folder stays a sweep jaxnorm may rewrite.
  one = dict(experiment=Experiment("t", "t", CFG), prog="t")
  assert cli.main(["--replot", str(tmp_path / "lr_0.01")], **one) == 0
  assert cli.main(["--replot", str(tmp_path)], **kwargs) == 0
  # A new run into one rate's folder would break the sweep: refused, nothing written.
  before = manifests.manifest(tmp_path)
  with pytest.raises(runfolder.RunFolderError, match="one run of the sweep"):
    runfolder.begin(tmp_path / "lr_0.01")
  assert manifests.manifest(tmp_path) == before
  results.load_sweep(tmp_path)
  sweep_json = tmp_path / "sweep.json"
  sweep_json.write_text(sweep_json.read_text().replace("0.01", "0.02"))
  with pytest.raises(results.ResultsError, match="changed or truncated"):
    results.load_sweep(tmp_path)


@pytest.mark.hostile
def test_a_grid_refuses_a_rate_that_is_0_in_float32_before_any_work(monkeypatch):
  monkeypatch.setattr(pipeline, "run_runs", lambda *args, **kw: pytest.fail("work started"))
  with pytest.raises(ValueError, match="1e-50"):
    sweep.run(SPEC, (1e-3, 1e-50), progress=False)


def test_a_single_rate_option_is_refused_in_a_sweep(tmp_path, capsys):
  kwargs = dict(experiment=Experiment("t", "", CFG, rates=(1e-3,)), prog="t")
  with pytest.raises(SystemExit) as exit_:
    cli.main(["--out", str(tmp_path / "s"), "--learning-rate", "1e-3"], **kwargs)
  assert exit_.value.code == exits.EXIT_USAGE
  assert "--rates" in capsys.readouterr().err
  with pytest.raises(SystemExit):  # and its --help does not offer them
    cli.main(["--help"], **kwargs)
  shown = capsys.readouterr().out
  assert "--rates" in shown and "--learning-rate" not in shown and "--lr-override" not in shown


@pytest.mark.hostile
def test_rates_that_share_a_run_folder_are_refused_naming_it():
  with pytest.raises(
    ValueError, match=r"1\.0000001e-04 -> lr_0\.0001|0\.00010000001 -> lr_0\.0001"
  ):
    sweep.check_rates((1e-4, 1.0000001e-4))
