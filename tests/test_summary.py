"""summary.json: every measure of every model across seeds, as JSON without NaN."""

import json

import numpy as np

from jaxnorm import measures, summary


def test_summary_is_json_with_every_measure_across_seeds(measured_result):
  result = measured_result
  s = summary.summary_dict(result)
  again = json.loads(json.dumps(s, allow_nan=False))
  assert again["format"] == summary.FORMAT and again["seeds"] == 2
  assert list(again["norms"]) == ["batchnorm", "none"]
  entry = again["norms"]["none"]
  assert set(entry) >= {m.name for m in measures.MEASURES} - set(measures.TEXT)
  assert entry["seeds"] == [3, 4] and entry["diverged"] is False
  assert entry["first_nonfinite_step"] == [None, None]
  r = result.norms["none"]
  np.testing.assert_allclose(entry["final_loss"]["values"], r.losses[:, -100:].mean(axis=1))
  np.testing.assert_allclose(
    entry["spectrum_top_bottom_ratio"]["values"], r.spectrum[:, 0] / r.spectrum[:, -1]
  )
  assert entry["learning_rate"] == result.spec.config.learning_rate_for("none")
  for name in measures.PER_LOSS_OF:  # flatness relative to the loss at alpha = 0
    np.testing.assert_allclose(
      entry[f"{name}_per_loss"]["values"],
      np.asarray(entry[name]["values"]) / np.asarray(entry["loss_at_alpha0"]["values"]),
    )
    assert measures.BY_NAME[f"{name}_per_loss"].comparable == measures.BY_NAME[name].comparable


def test_curvature_over_training_of_diverged_seeds_is_null_not_nan(measured_result):
  """A seed that diverged has no finite curvature: the mean is over the finite seeds, and
  null where none is (summary.json holds no NaN)."""
  r = measured_result.norms["none"]
  trajectory = np.array([[[1.0, 2.0], [np.nan, np.inf]], [[3.0, 4.0], [np.nan, np.nan]]])
  r = r._replace(trajectory=trajectory, trajectory_steps=np.array([100, 200]))
  info = summary.summary_dict(measured_result._replace(norms={"none": r}))
  curvature = info["norms"]["none"]["curvature_over_training"]
  assert curvature["lambda_max"] == [2.0, None]
  assert curvature["preconditioned_sharpness"] == [3.0, None]
  json.dumps(info, allow_nan=False)


def test_layer_measures_are_summarized_as_per_layer_means_of_the_finite_seeds(measured_result):
  """Per layer, the mean over the seeds with a finite value (booleans as 0 / 1), null where
  none has one; the lengths are the layers' (N + 1) or the blocks' (N)."""
  r = measured_result.norms["none"]
  layer = {
    "effective_rank": np.array([[1.0, 2.0, np.nan], [3.0, np.inf, np.nan]]),
    "block_hessian_top_converged": np.array([[True, False], [True, True]]),
  }
  info = summary.summary_dict(
    measured_result._replace(norms={"none": r._replace(layer_measures=layer)})
  )
  means = json.loads(json.dumps(info, allow_nan=False))["norms"]["none"]["layer_measures"]
  assert means == {"effective_rank": [2.0, 2.0, None], "block_hessian_top_converged": [1.0, 0.5]}
  for absent in (None, {}):
    info = summary.summary_dict(
      measured_result._replace(norms={"none": r._replace(layer_measures=absent)})
    )
    assert "layer_measures" not in info["norms"]["none"]
