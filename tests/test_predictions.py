"""The paper's experiments and predictions (`jaxnorm.predictions`): each experiment's
predictions name only its own models, the deep experiment is registered with the depth
prediction, and every kind of prediction comes back from summary.json as it was."""

import dataclasses
import json

import pytest
from helpers import norm_result

from jaxnorm import config, predictions, summary
from jaxnorm.result import ExperimentResult
from jaxnorm.spec import ExperimentSpec


@pytest.mark.parametrize("experiment", predictions.BY_NAME.values(), ids=lambda e: e.name)
def test_every_prediction_names_models_of_its_experiment(experiment):
  for p in experiment.predictions:
    assert {*p.subjects, p.baseline} <= set(experiment.config.norms), (experiment.name, p.text)


def test_the_deep_experiment_is_registered_with_the_depth_prediction():
  deep = predictions.BY_NAME["deep"]
  assert deep is predictions.DEEP and deep.config == config.DEEP
  assert deep.default_out == "runs/deep"
  (depth,) = predictions.by_layer(deep.predictions)
  assert isinstance(depth, predictions.DepthPrediction)
  assert depth.baseline == "none" and set(depth.subjects) == {"layernorm", "l2"}
  assert depth.trend == "lower" and depth.relation == "higher"
  assert depth.on == predictions.HIGHER_IS_ISOTROPIC
  assert depth not in predictions.whole_model(deep.predictions)
  assert len(predictions.whole_model(deep.predictions)) == len(deep.predictions) - 1


def test_the_older_experiments_have_no_depth_prediction():
  for name in ("exp1", "exp2", "exp3", "lr_sweep"):
    experiment = predictions.BY_NAME[name]
    assert predictions.by_layer(experiment.predictions) == ()
    assert predictions.whole_model(experiment.predictions) == experiment.predictions


@pytest.mark.parametrize(
  "prediction",
  [predictions.EXP2.predictions[2], *predictions.DEEP.predictions],
  ids=lambda p: type(p).__name__ + ": " + p.text[:20],
)
def test_a_prediction_comes_back_from_summary_json_as_it_was(prediction):
  spec = ExperimentSpec(config.TINY, measures=None, predictions=(prediction,))
  result = ExperimentResult(spec, {"none": norm_result("none")}, 0.0, {})
  (saved,) = json.loads(json.dumps(summary.summary_dict(result)))["predictions"]
  back = predictions.from_dict(saved)
  assert back == prediction and type(back) is type(prediction)


def test_a_plain_predictions_record_is_unchanged_by_the_depth_kind():
  """summary.json of a run without depth predictions stays as it was: no trend field."""
  assert "trend" not in dataclasses.asdict(predictions.EXP2.predictions[0])
  depth = predictions.by_layer(predictions.DEEP.predictions)
  assert depth and all("trend" in dataclasses.asdict(p) for p in depth)


def test_invalid_depth_predictions_are_refused_naming_the_field():
  with pytest.raises(ValueError, match="DepthPrediction.trend='down'"):
    predictions.DepthPrediction("t", ("layernorm",), "none", "higher", ("effective_rank",), "down")
  with pytest.raises(ValueError, match="Prediction.relation='more'"):
    predictions.DepthPrediction("t", ("layernorm",), "none", "more", ("effective_rank",))
  with pytest.raises(ValueError, match="DepthPrediction.relation='similar'"):
    predictions.DepthPrediction("t", ("layernorm",), "none", "similar", ("effective_rank",))
  record = dataclasses.asdict(predictions.DEEP.predictions[-1]) | {"extra": 1}
  with pytest.raises(TypeError):
    predictions.from_dict(record)
