"""Statistics across seeds and summary.json."""

import json

import numpy as np
import pytest
import scipy.stats

from jaxnorm import config, pipeline, summary


def test_confidence_interval_known_answer():
  s = summary.across_seeds([1.0, 2.0, 3.0, None, float("nan")])
  assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0
  half = scipy.stats.t.ppf(0.975, 2) / np.sqrt(3)
  np.testing.assert_allclose(s["ci95"], [2 - half, 2 + half])
  assert s["values"] == [1.0, 2.0, 3.0, None, None]
  assert summary.across_seeds([None])["mean"] is None
  one = summary.across_seeds([5.0])
  assert one["mean"] == 5.0 and one["ci95"] == [None, None] and one["n"] == 1


@pytest.fixture(scope="module")
def result():
  cfg = config.TINY.replace(steps=5, landscape_points=3, norms=("none", "layernorm"))
  spec = pipeline.ExperimentSpec(cfg, num_seeds=2, measures=None, name="t")
  return pipeline.run(spec, progress=False)


def test_summary_is_json_with_every_measure_across_seeds(result):
  s = summary.summary_dict(result)
  again = json.loads(json.dumps(s, allow_nan=False))
  assert again["format"] == summary.FORMAT and again["seeds"] == 2
  assert list(again["norms"]) == ["none", "layernorm"]
  entry = again["norms"]["none"]
  assert entry["seeds"] == [0, 1] and entry["diverged"] is False
  assert entry["first_nonfinite_step"] == [None, None]
  r = result.norms["none"]
  np.testing.assert_allclose(entry["final_loss"]["values"], r.losses[:, -100:].mean(axis=1))
  np.testing.assert_allclose(
    entry["spectrum_top_bottom_ratio"]["values"], r.spectrum[:, 0] / r.spectrum[:, -1]
  )
  assert entry["learning_rate"] == result.spec.config.learning_rate_for("none")
