import dataclasses
import json
import shutil
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import CHEAP_MEASURES, norm_result

from jaxnorm import (
  cli,
  config,
  loading,
  manifests,
  model,
  options,
  pipeline,
  plotting,
  predictions,
  results,
  runfolder,
)
from jaxnorm import families as families_lib
from jaxnorm.result import ExperimentResult, Matched
from jaxnorm.spec import ExperimentSpec

DATA = Path(__file__).parent / "data"


@pytest.fixture
def result(measured_result):
  """Two norms, two seeds, every measure and a surface (conftest)."""
  return measured_result


def test_save_and_load_round_trip(tmp_path, result):
  results.save(result, tmp_path)
  loaded = results.load(tmp_path)
  assert loaded.spec.config == result.spec.config and loaded.spec.num_seeds == 2
  for field in ("name", "title", "surface_points", "curvature_iterations", "chunk_size"):
    assert getattr(loaded.spec, field) == getattr(result.spec, field), field
  for field in ("matched_losses", "analysis_dtype", "predictions"):
    assert getattr(loaded.spec, field) == getattr(result.spec, field), field
  assert list(loaded.norms) == list(result.norms)
  for norm, r in result.norms.items():
    again = loaded.norms[norm]
    for field in ("seeds", "losses", "alphas", "offsets", "landscape", "base_loss", "spectrum"):
      np.testing.assert_array_equal(getattr(again, field), getattr(r, field), err_msg=field)
    np.testing.assert_array_equal(again.surface, r.surface)
    for saved, kept in zip(again.hessian_density, r.hessian_density, strict=True):
      np.testing.assert_array_equal(saved, kept)
    np.testing.assert_array_equal(again.first_nonfinite_step, r.first_nonfinite_step)
    assert again.measures.keys() == r.measures.keys()
    for name in r.measures:
      np.testing.assert_array_equal(again.measures[name], r.measures[name])
    assert again.learning_rate == r.learning_rate
    np.testing.assert_array_equal(again.layer_spectra, r.layer_spectra)
    assert again.layer_measures.keys() == r.layer_measures.keys() != set()
    for name in r.layer_measures:
      np.testing.assert_array_equal(again.layer_measures[name], r.layer_measures[name])
  assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_variables_reload_and_give_the_same_model(tmp_path, result):
  results.save(result, tmp_path)
  cfg = result.spec.config
  for norm, r in result.norms.items():
    loaded = results.load_variables(tmp_path, norm)
    jax.tree.map(np.testing.assert_array_equal, loaded, r.variables)
    m = model.build(cfg, norm)
    tokens = np.zeros((2, cfg.seq_len), np.int32)
    seed1 = lambda v: jax.tree.map(lambda x: x[1], v)  # noqa: E731
    np.testing.assert_array_equal(
      m.apply(seed1(loaded), tokens, train=False), m.apply(seed1(r.variables), tokens, train=False)
    )


@pytest.mark.parametrize("folder, seeds", [("format1_one_seed", 1), ("format1_two_seeds", 2)])
def test_folders_of_format_1_still_load(folder, seeds):
  old = DATA / folder
  with pytest.warns(manifests.UncheckedWarning):  # no run.json: read unchecked
    loaded = results.load(old)
  info = json.loads((old / "summary.json").read_text())
  with np.load(old / "results.npz") as npz:
    old_loss = npz["none/loss"]
  r = loaded.norms["none"]
  assert loaded.spec.num_seeds == seeds and r.seeds.tolist() == list(range(seeds))
  np.testing.assert_array_equal(r.losses.reshape(old_loss.shape), old_loss)
  assert r.losses.shape == (seeds, 20) and r.landscape.shape == (seeds, 5)
  value = info["norms"]["none"]["measures"]["effective_rank"]
  expected = value["values"] if seeds > 1 else [value]
  np.testing.assert_allclose(r.measures["effective_rank"], expected)
  assert r.first_nonfinite_step.tolist() == [-1] * seeds


def _layered(seeds: int, blocks: int, rng) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """Random layer arrays: spectra (S, N + 1, 16), one per-layer, one per-block and one
  boolean per-block measure."""
  return np.sort(rng.uniform(0.1, 5, (seeds, blocks + 1, 16)))[..., ::-1], {
    "effective_rank": rng.uniform(1, 16, (seeds, blocks + 1)),
    "block_hessian_trace": rng.normal(size=(seeds, blocks)),
    "block_hessian_top_converged": rng.uniform(size=(seeds, blocks)) > 0.5,
  }


def _one_norm_run(r, level=0.5) -> ExperimentResult:
  spec = ExperimentSpec(
    config.TINY.replace(norms=("layernorm",)),
    num_seeds=len(r.seeds),
    measures=families_lib.MeasureConfig(families=("isotropy", "hessian")),
    matched_losses=(level,) if r.matched else (),
    name="t",
  )
  return ExperimentResult(spec, {"layernorm": r}, 0.0, {})


def test_the_layer_arrays_round_trip_with_their_keys(tmp_path):
  rng = np.random.default_rng(0)
  spectra, layer = _layered(2, 3, rng)
  m_spectra, m_layer = _layered(2, 3, rng)
  base = norm_result("layernorm", seeds=2, rng=rng)
  matched = Matched(0.5, np.array([10, -1]), base.landscape, base.base_loss, base.spectrum, {})
  r = base._replace(
    layer_spectra=spectra,
    layer_measures=layer,
    matched=(matched._replace(layer_spectra=m_spectra, layer_measures=m_layer),),
  )
  results.save(_one_norm_run(r), tmp_path)
  with np.load(tmp_path / "results.npz") as npz:
    names = set(npz.files)
  assert {"layernorm/layer_spectra", "layernorm/matched/0/layer_spectra"} <= names
  assert {f"layernorm/layer_measure/{n}" for n in layer} <= names
  assert {f"layernorm/matched/0/layer_measure/{n}" for n in m_layer} <= names
  again = results.load(tmp_path).norms["layernorm"]
  for got, want in ((again, r), (again.matched[0], r.matched[0])):
    np.testing.assert_array_equal(got.layer_spectra, want.layer_spectra)
    assert got.layer_measures.keys() == want.layer_measures.keys()
    for name, value in want.layer_measures.items():
      assert got.layer_measures[name].dtype == value.dtype, name
      np.testing.assert_array_equal(got.layer_measures[name], value)
  info = json.loads((tmp_path / "summary.json").read_text())["norms"]["layernorm"]
  np.testing.assert_allclose(
    info["layer_measures"]["effective_rank"], layer["effective_rank"].mean(0)
  )


def test_a_folder_without_layer_arrays_loads_them_as_none(tmp_path):
  """What a run saved before the layer-wise dissection holds: no layer arrays, so None
  (not an empty dict, which is a run that measured none)."""
  base = norm_result("layernorm", seeds=2)
  matched = Matched(0.5, np.array([10, -1]), base.landscape, base.base_loss, base.spectrum, {})
  results.save(_one_norm_run(base._replace(matched=(matched,))), tmp_path)
  with np.load(tmp_path / "results.npz") as npz:
    assert not [n for n in npz.files if "/layer_" in n or "layer_measure/" in n]
  again = results.load(tmp_path).norms["layernorm"]
  assert again.layer_spectra is None and again.layer_measures is None
  assert again.matched[0].layer_spectra is None and again.matched[0].layer_measures is None
  for folder in ("format1_one_seed", "format1_two_seeds"):
    with pytest.warns(manifests.UncheckedWarning):
      old = results.load(DATA / folder).norms["none"]
    assert old.layer_spectra is None and old.layer_measures is None
  unmeasured = base._replace(layer_spectra=np.ones((2, 2, 3)), layer_measures={})
  results.save(_one_norm_run(unmeasured), tmp_path / "unmeasured")
  again = results.load(tmp_path / "unmeasured").norms["layernorm"]
  assert again.layer_measures == {} and again.layer_spectra.shape == (2, 2, 3)


def test_a_runs_measure_families_are_read_back_and_older_runs_had_them_all():
  """summary.json's measure_config: a run of today gives back its families; one written
  before families existed (no "families", or no measure_config at all but measures in
  results.npz) measured every family; null means the reference's measures only."""
  today = families_lib.MeasureConfig(families=("hessian",), trace_probes=4)
  saved = json.loads(json.dumps(dataclasses.asdict(today)))  # as summary.json holds it
  assert loading._measure_config({"measure_config": saved}, measured=True) == today
  del saved["families"]
  older = families_lib.MeasureConfig(families=families_lib.FAMILIES, trace_probes=4)
  assert loading._measure_config({"measure_config": saved}, measured=True) == older
  every = families_lib.MeasureConfig(families=families_lib.FAMILIES)
  assert loading._measure_config({}, measured=True) == every
  assert loading._measure_config({}, measured=False) is None
  assert loading._measure_config({"measure_config": None}, measured=False) is None


def test_load_from_an_empty_folder_says_what_is_missing(tmp_path):
  with pytest.raises(results.ResultsError, match="results.npz"):
    results.load(tmp_path)


def test_load_of_foreign_files_is_a_results_error(tmp_path):
  shutil.copy(DATA / "format1_one_seed" / "summary.json", tmp_path)
  (tmp_path / "results.npz").write_bytes(b"not an npz file")
  with pytest.raises(results.ResultsError, match="cannot read"):
    with pytest.warns(manifests.UncheckedWarning):
      results.load(tmp_path)


def test_a_diverged_seed_is_saved_as_null_and_loads_as_nan(tmp_path, result):
  r = result.norms["none"]
  bad = r._replace(measures={**r.measures, "effective_rank": np.array([np.nan, 3.0])})
  results.save(result._replace(norms={"none": bad}), tmp_path)
  info = json.loads((tmp_path / "summary.json").read_text())
  assert info["norms"]["none"]["effective_rank"]["values"] == [None, 3.0]
  assert info["norms"]["none"]["effective_rank"]["n"] == 1
  again = results.load(tmp_path).norms["none"].measures["effective_rank"]
  assert np.isnan(again[0]) and again[1] == 3.0


@pytest.mark.hostile
@pytest.mark.parametrize("files", [5, {"results.npz": 5}, ["results.npz"]])
def test_a_manifest_of_the_wrong_shape_is_a_results_error(tmp_path, files):
  staging = runfolder.begin(tmp_path / "run")
  for path in (DATA / "format1_one_seed").iterdir():
    staging.write(path.name, path.read_bytes())
  staging.commit({})
  (tmp_path / "run" / manifests.MANIFEST).write_text(json.dumps({"format": 1, "files": files}))
  for read in (results.load, lambda folder: results.load_variables(folder, "none")):
    with pytest.raises(results.ResultsError, match="not a run manifest") as raised:
      read(tmp_path / "run")
    assert "\n" not in str(raised.value)


@pytest.mark.hostile
def test_save_never_takes_the_working_directory(tmp_path, monkeypatch, result):
  monkeypatch.chdir(tmp_path)
  (tmp_path / "mine.txt").write_text("mine")
  for out in ("", "."):
    with pytest.raises(runfolder.RunFolderError):
      results.save(result, out)
  assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


@pytest.mark.hostile
@pytest.mark.parametrize("norm", ["x/variables_none", "../none", "", ".."])
def test_load_variables_takes_a_normalization_name_not_a_path(tmp_path, norm):
  with pytest.raises(results.ResultsError, match="not the name of a normalization"):
    results.load_variables(tmp_path, norm)


def _files(folder: Path) -> dict[str, bytes]:
  return {
    p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
  }


def _same_run(a: dict[str, bytes], b: dict[str, bytes]) -> None:
  """The same files, and the same bytes but for what records when they were written
  (run.json, the PDF's creation date, summary.json's wall times)."""
  assert sorted(a) == sorted(b)
  for name in a:
    if name.endswith(".pdf") or name.endswith(manifests.MANIFEST):
      continue
    if name.endswith("summary.json"):
      x, y = (json.loads(f[name]) for f in (a, b))
      for d in (x, y):
        d.pop("seconds")
        for entry in d["norms"].values():
          entry.pop("seconds")
      assert x == y
    else:
      assert a[name] == b[name], name


def test_save_writes_the_files_the_command_line_writes_and_replots_alike(tmp_path, monkeypatch):
  ran = []

  def run_and_keep(*args, **kwargs):
    ran.append(real_run(*args, **kwargs))
    return ran[-1]

  def cheaper(args, experiment):  # the measures of conftest's `measured_result`
    spec = real_spec(args, experiment)
    return dataclasses.replace(spec, measures=CHEAP_MEASURES)

  real_run, real_spec = pipeline.run, options.spec_from_args
  monkeypatch.setattr(pipeline, "run", run_and_keep)
  monkeypatch.setattr(options, "spec_from_args", cheaper)
  cfg = config.TINY.replace(steps=6, landscape_points=3, norms=("batchnorm",))
  experiment = predictions.Experiment("t", "t", cfg, predictions.EXP2.predictions)
  argv = ["--seeds", "2", "--surface", "3", "--curvature-iterations", "2", "--no-progress"]
  argv += ["--matched-loss", "9", "--no-compilation-cache", "--out", str(tmp_path / "cli")]
  assert cli.main(argv, experiment, prog="t") == 0
  results.save(ran[0], tmp_path / "python")
  written = {name: _files(tmp_path / name) for name in ("cli", "python")}
  assert {"measures.md", "hessian_density.png", "surfaces.png", "curvature.png"} <= set(
    written["cli"]
  )
  _same_run(written["cli"], written["python"])
  for name in ("cli", "python"):
    assert cli.main(["--replot", str(tmp_path / name)], experiment, prog="t") == 0
    manifests.verify(tmp_path / name, tuple(n for n in written[name] if n != manifests.MANIFEST))
  _same_run(*(_files(tmp_path / name) for name in ("cli", "python")))


def test_a_loaded_run_saves_the_folder_it_was_loaded_from(tmp_path, result):
  """What the spec decides (the surface's figure, the estimators' settings, the
  predictions) comes back with the run: a run loaded with its variables and saved again
  writes the same files, into another folder or over its own."""
  mine = predictions.Prediction(
    "Scale Norm is flatter", ("batchnorm",), "none", "lower", ("adaptive_sharpness",)
  )
  spec = dataclasses.replace(result.spec, name="exp2", predictions=(mine,))
  results.save(result._replace(spec=spec), tmp_path / "first")
  loaded = results.load(tmp_path / "first", variables=True)
  assert loaded.spec.measures == spec.measures != families_lib.MeasureConfig()  # not the defaults
  assert loaded.spec.predictions == (mine,)  # not EXP2's, although the name is "exp2"
  results.save(loaded, tmp_path / "again")
  first = _files(tmp_path / "first")
  results.save(loaded, tmp_path / "first")
  for again in (_files(tmp_path / "again"), _files(tmp_path / "first")):
    assert "surfaces.png" in again and "Scale Norm is flatter" in again["measures.md"].decode()
    _same_run(first, again)


def test_a_run_saved_without_predictions_loads_without_them(tmp_path, result):
  spec = dataclasses.replace(result.spec, name="exp2", predictions=())
  results.save(result._replace(spec=spec), tmp_path)
  assert results.load(tmp_path).spec.predictions == ()


@pytest.mark.hostile
def test_saving_a_run_loaded_without_variables_over_them_is_refused(tmp_path, result):
  """A run loaded without its variables would delete them: refused, the folder as it was."""
  results.save(result, tmp_path / "run")
  before = _files(tmp_path / "run")
  with pytest.raises(results.ResultsError, match="variables=True"):
    results.save(results.load(tmp_path / "run"), tmp_path / "run")
  assert _files(tmp_path / "run") == before
  results.save(results.load(tmp_path / "run"), tmp_path / "elsewhere")  # nothing to lose


@pytest.mark.hostile
@pytest.mark.parametrize(
  "edit, words",
  [
    (lambda s: {**s, "seeds": 5}, "says 5 seeds"),
    (lambda s: {**s, "measure_config": None}, "not measured"),
  ],
  ids=["seeds", "measure_config"],
)
def test_a_summary_that_contradicts_the_arrays_is_refused(tmp_path, result, edit, words):
  results.save(result, tmp_path)
  (tmp_path / manifests.MANIFEST).unlink()  # as an earlier version's folder: read unchecked
  summary = tmp_path / "summary.json"
  summary.write_text(json.dumps(edit(json.loads(summary.read_text()))))
  with pytest.warns(manifests.UncheckedWarning), pytest.raises(results.ResultsError, match=words):
    results.load(tmp_path)


def test_writing_a_run_compiles_no_program(tmp_path, result):
  """Figures, summaries and reports are host work: writing every file of a run (the Hessian
  density figure among them) runs no JAX program, so a second run with a warm compilation
  cache compiles nothing after its analysis either. JAX's compile event also counts a
  program loaded from a cache, and its in-memory caches are cleared first."""
  programs = []

  def listener(event, seconds, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
      programs.append(kwargs.get("fun_name", "?"))

  jax.clear_caches()
  jax.monitoring.register_event_duration_secs_listener(listener)
  try:
    results.save(result, tmp_path)
  finally:
    jax.monitoring.unregister_event_duration_listener(listener)
  assert (tmp_path / "hessian_density.png").is_file()
  assert programs == []


def test_replot_keeps_the_runs_own_title(tmp_path, result, monkeypatch):
  """--replot of one script's run from another script redraws it under the run's title."""
  spec = dataclasses.replace(result.spec, title="LayerNorm vs No Normalization")
  results.save(result._replace(spec=spec), tmp_path)
  drawn = []
  real_figure2 = plotting.figure2
  monkeypatch.setattr(plotting, "figure2", lambda r: drawn.append(r.spec.title) or real_figure2(r))
  assert cli.main(["--replot", str(tmp_path)], predictions.EXP2, prog="exp2.py") == 0
  assert drawn == ["LayerNorm vs No Normalization"]
