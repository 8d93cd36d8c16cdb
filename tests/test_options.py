"""The command line's options (`jaxnorm.options`), parsed without running anything: the
learning rate of each model from the preset, --learning-rate and --lr-override. Refusals
of bad options, and runs, go through `cli.main`: test_cli.py."""

import pytest
from helpers import TEST_SCRIPT

from jaxnorm import config, options
from jaxnorm.families import FAMILIES, LEVELS


@pytest.mark.parametrize(
  "args, rates",
  [
    ([], {"layernorm": 1e-4, "batchnorm": 1e-4, "none": 5e-4}),  # the reference's
    (["--preset", "equal_lr"], {"layernorm": 1e-4, "batchnorm": 1e-4, "none": 1e-4}),
    (["--lr-override", ""], {"layernorm": 1e-4, "batchnorm": 1e-4, "none": 1e-4}),
    (["--learning-rate", "3e-4"], {"layernorm": 3e-4, "batchnorm": 3e-4, "none": 3e-4}),
    (
      ["--learning-rate", "3e-4", "--lr-override", "none=1e-3, batchnorm=2e-4"],
      {"layernorm": 3e-4, "batchnorm": 2e-4, "none": 1e-3},
    ),
  ],
)
def test_learning_rates_from_the_command_line(args, rates):
  parsed = options.build_parser("t", "", TEST_SCRIPT["experiment"]).parse_args(args)
  cfg = options.config_from_args(parsed, config.PAPER)
  assert {norm: cfg.learning_rate_for(norm) for norm in cfg.norms} == rates


@pytest.mark.parametrize(
  "args, families",
  [
    ([], LEVELS["standard"]),  # the default level
    (["--measures", "all"], FAMILIES),
    (["--measures", "basic"], ("isotropy",)),
    (["--measures", "hessian,isotropy"], ("isotropy", "hessian")),
    (["--measures", "none"], None),
    (["--no-measures"], None),
    (["--no-measures", "--measures", "none"], None),  # the same thing twice
  ],
)
def test_measure_families_from_the_command_line(args, families):
  experiment = TEST_SCRIPT["experiment"]
  parsed = options.build_parser("t", "", experiment).parse_args(args)
  measured = options.spec_from_args(parsed, experiment).measures
  assert (None if measured is None else measured.families) == families
