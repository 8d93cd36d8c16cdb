import math

import pytest

from jaxnorm import config


def test_paper_preset_is_the_reference_config():
  cfg = config.PAPER
  assert (cfg.num_keys, cfg.vocab_size, cfg.theoretical_rank, cfg.seq_len) == (400, 402, 40, 41)
  assert (cfg.embed_dim, cfg.num_heads, cfg.batch_size, cfg.steps) == (128, 1, 128, 4000)
  assert cfg.learning_rate_for("layernorm") == cfg.learning_rate_for("batchnorm") == 1e-4
  assert cfg.learning_rate_for("none") == 5e-4
  assert (cfg.landscape_points, cfg.landscape_range) == (40, 0.5)
  assert cfg.norms == ("layernorm", "batchnorm", "none")
  assert not cfg.landscape_cumulative


def test_presets_are_valid_and_hashable():
  for cfg in config.PRESETS.values():
    hash(cfg)
    assert config.Config(**{f: getattr(cfg, f) for f in cfg.__dataclass_fields__}) == cfg


def test_config_is_frozen():
  with pytest.raises(AttributeError):
    config.PAPER.steps = 3


@pytest.mark.parametrize(
  "changes, field",
  [
    ({"norms": ("layernorm", "groupnorm")}, "norms"),
    ({"norms": ()}, "norms"),
    ({"norms": ("none", "none")}, "norms"),
    ({"steps": 0}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 1}, "batch_size"),  # with batchnorm among the norms
    ({"embed_dim": 130, "num_heads": 4}, "embed_dim"),
    ({"num_heads": 0}, "num_heads"),
    ({"n_entities": 1, "m_attributes": 1}, "n_entities"),  # draws 2 keys, only 1 exists
    ({"learning_rate": 0.0}, "learning_rate"),
    ({"learning_rate": -1e-3}, "learning_rate"),
    ({"learning_rate": math.nan}, "learning_rate"),
    ({"learning_rate": math.inf}, "learning_rate"),
    ({"learning_rate_overrides": (("none", -1.0),)}, "learning_rate_overrides"),
    ({"learning_rate_overrides": (("bogus", 1e-3),)}, "learning_rate_overrides"),
    ({"landscape_points": 0}, "landscape_points"),
    ({"landscape_range": 0.0}, "landscape_range"),
    ({"landscape_range": math.inf}, "landscape_range"),
    ({"seed": -1}, "seed"),
  ],
)
def test_invalid_values_name_the_field(changes, field):
  with pytest.raises(ValueError, match=rf"Config\.{field}"):
    config.PAPER.replace(**changes)


def test_batch_size_one_is_fine_without_batchnorm():
  cfg = config.TINY.replace(batch_size=1, norms=("layernorm", "none"))
  assert cfg.batch_size == 1


def test_error_says_what_is_allowed():
  with pytest.raises(ValueError, match="choose from"):
    config.PAPER.replace(norms=("groupnorm",))
