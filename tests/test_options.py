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


@pytest.mark.parametrize(
  "args, fields",
  [
    ([], {"num_blocks": 1, "num_heads": 1, "norm_placement": "post", "readout": "last"}),
    (["--preset", "deep"], {"num_blocks": 6, "num_heads": 4, "norm_placement": "post"}),
    (
      ["--blocks", "3", "--heads", "2", "--norm-placement", "pre", "--readout", "first"],
      {"num_blocks": 3, "num_heads": 2, "norm_placement": "pre", "readout": "first"},
    ),
    (["--preset", "deep", "--blocks", "2"], {"num_blocks": 2, "num_heads": 4}),
  ],
)
def test_model_shape_from_the_command_line(args, fields):
  parsed = options.build_parser("t", "", TEST_SCRIPT["experiment"]).parse_args(args)
  cfg = options.config_from_args(parsed, config.PAPER)
  assert {name: getattr(cfg, name) for name in fields} == fields


@pytest.mark.parametrize(
  "args",
  [["--blocks", "0"], ["--heads", "-1"], ["--norm-placement", "middle"], ["--readout", "2"]],
)
def test_bad_model_shapes_are_refused_while_parsing(args, capsys):
  with pytest.raises(SystemExit) as e:
    options.build_parser("t", "", TEST_SCRIPT["experiment"]).parse_args(args)
  assert e.value.code == 2
  assert args[0] in capsys.readouterr().err
