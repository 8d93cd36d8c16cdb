"""The experiment's specification (`jaxnorm.spec.ExperimentSpec`): an invalid setting is
refused with its field named, and NumPy scalars become the Python numbers of the fields.
Settings of the wrong type are probed in test_inputs_hostile.py."""

import dataclasses

import numpy as np
import pytest
from helpers import CFG

from jaxnorm import config
from jaxnorm.spec import ExperimentSpec


@pytest.mark.parametrize(
  "change, field",
  [
    ({"num_seeds": 0}, "num_seeds"),
    ({"surface_points": 0}, "surface_points"),
    ({"seeds_per_call": -1}, "seeds_per_call"),
    ({"chunk_size": 1.5}, "chunk_size"),
    ({"analysis_dtype": "float16"}, "analysis_dtype"),
  ],
)
def test_bad_spec_is_refused_with_the_field_named(change, field):
  with pytest.raises(ValueError, match=field):
    dataclasses.replace(ExperimentSpec(CFG), **change)


def test_spec_takes_numpy_scalars_as_python_numbers():
  spec = ExperimentSpec(
    config.TINY, num_seeds=np.int64(3), chunk_size=np.int32(10), matched_losses=(1, np.float32(0.5))
  )
  assert spec == ExperimentSpec(config.TINY, 3, chunk_size=10, matched_losses=(1.0, 0.5))
  assert type(spec.num_seeds) is int and [type(x) for x in spec.matched_losses] == [float] * 2
