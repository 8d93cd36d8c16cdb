import json

import jax
import numpy as np
import pytest

from jaxnorm import config, model, results, train


def test_save_and_load_round_trip(tmp_path):
  arrays = {
    "layernorm": {"loss": np.arange(5, dtype=np.float32), "spectrum": np.ones(3)},
    "none": {"loss": np.full((2, 5), np.nan), "spectrum": np.zeros((2, 3))},
  }
  summary = {"config": results.config_to_dict(config.TINY), "norms": {"none": {"x": None}}}
  results.save(tmp_path, arrays, summary)
  loaded, loaded_summary = results.load(tmp_path)
  assert loaded.keys() == arrays.keys()
  for norm in arrays:
    for name in arrays[norm]:
      np.testing.assert_array_equal(loaded[norm][name], arrays[norm][name])
  assert loaded_summary == json.loads(json.dumps(summary))  # tuples come back as lists
  assert results.config_from_dict(loaded_summary["config"]) == config.TINY
  assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


@pytest.mark.parametrize("norm", ["batchnorm", "none"])
def test_variables_reload_and_give_the_same_model(tmp_path, norm, key):
  cfg = config.TINY
  m = model.build(cfg, norm)
  state = train.init_state(m, train.optimizer(1e-3), cfg, key)
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  results.save(tmp_path, {}, {}, {norm: variables})
  loaded = results.load_variables(tmp_path, norm)
  jax.tree.map(np.testing.assert_array_equal, loaded, jax.device_get(variables))
  tokens = np.zeros((2, cfg.seq_len), np.int32)
  np.testing.assert_array_equal(
    m.apply(loaded, tokens, train=False), m.apply(variables, tokens, train=False)
  )


def test_interrupted_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / "summary.json"
  results.atomic_write(path, lambda f: f.write(b"previous"))

  def fail(f):
    f.write(b"half")
    raise KeyboardInterrupt

  with pytest.raises(KeyboardInterrupt):
    results.atomic_write(path, fail)
  assert path.read_bytes() == b"previous"
  assert list(tmp_path.iterdir()) == [path]


def test_load_from_an_empty_folder_says_what_is_missing(tmp_path):
  with pytest.raises(FileNotFoundError, match="results.npz"):
    results.load(tmp_path)


def test_non_finite_numbers_are_refused_in_json(tmp_path):
  with pytest.raises(ValueError):
    results.save(tmp_path, {}, {"x": float("nan")})
