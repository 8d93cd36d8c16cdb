import dataclasses
import json
import math

import numpy as np
import pytest

from jaxnorm import config, data, loading, results, summary


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
    ({"embed_dim": 130, "num_heads": 4}, "num_heads"),  # the heads split D: blame --heads
    ({"num_heads": 0}, "num_heads"),
    ({"num_blocks": 0}, "num_blocks"),
    ({"norm_placement": "sandwich"}, "norm_placement"),
    ({"readout": "middle"}, "readout"),
    ({"num_classes": 4}, "num_classes"),  # fewer than the task's 400 labels
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


# Per field of Config, values of the wrong type: each refused naming the field, never
# converted (True is not 1.0, "no" is not a flag, "none" is not ("n", "o", "n", "e")).
WRONG_TYPES = {
  "n_entities": [True, 6.0, "6", None],
  "m_attributes": [np.float64(6), 6.5],
  "embed_dim": ["16", (16,)],
  "num_heads": [2.0, np.True_],
  "num_blocks": [6.0, True, "6", None],
  "norm_placement": [None, ("post",), 1],
  "readout": [None, -1, ("last",)],
  "num_classes": [4.0, "4", True],
  "learning_rate": [True, "1e-3", None, np.bool_(True), [1e-3]],
  "learning_rate_overrides": [
    {"none": 1e-2},
    [("none", 1e-2)],
    "none=1e-2",
    (("none",),),
    (["none", 1e-2],),
    (("none", True),),
    (("none", "1e-2"),),
    ((None, 1e-2),),
  ],
  "batch_size": [np.float32(8), "8"],
  "steps": [2.5, False, 30.0],
  "landscape_points": ["7", None],
  "landscape_range": [True, "0.5"],
  "landscape_cumulative": ["no", "False", 0, 1, None, np.int64(1)],
  "norms": ["none", ["none"], (None,), ("none", 3), {"none"}],
  "seed": [True, 0.0, "0"],
  "matmul_precision": [None, b"highest", ("highest",)],
  "text": ["agnews", 5, ("agnews", 30522), ("agnews", "30522", 128, 10, 10, 4, "f"), ("a",) * 7],
}


def test_every_field_has_wrong_types_to_try():
  fields = {f.name for f in dataclasses.fields(config.Config)}
  assert set(WRONG_TYPES) == fields == set(config.FIELD_TYPES)


@pytest.mark.hostile
@pytest.mark.parametrize("field, value", [(f, v) for f, vs in WRONG_TYPES.items() for v in vs])
def test_fields_of_the_wrong_type_are_refused_by_name(field, value):
  with pytest.raises(TypeError, match=rf"Config\.{field}(\[\d+\])*=") as e:
    config.TINY.replace(**{field: value})
  assert isinstance(e.value, ValueError)  # the command line's `except ValueError` refuses it


def test_numpy_scalars_and_json_numbers_become_the_field_types():
  cfg = config.TINY.replace(
    steps=np.int64(30),
    learning_rate=np.float64(3e-3),
    landscape_cumulative=np.bool_(False),
    landscape_range=1,  # an int for a float, as a JSON file may hold
    learning_rate_overrides=(("none", np.float32(0.5)),),
  )
  assert cfg == config.TINY.replace(landscape_range=1.0, learning_rate_overrides=(("none", 0.5),))
  assert [type(getattr(cfg, f)) for f in ("steps", "learning_rate", "landscape_cumulative")] == [
    int,
    float,
    bool,
  ]
  assert type(cfg.landscape_range) is float and type(cfg.learning_rate_overrides[0][1]) is float
  json.dumps(summary.config_to_dict(cfg))  # every field a JSON type


def test_presets_survive_a_json_round_trip():
  for cfg in config.PRESETS.values():
    fields = json.loads(json.dumps(summary.config_to_dict(cfg)))
    assert results.config_from_dict(fields) == cfg
  fields = json.loads(json.dumps(summary.config_to_dict(config.PAPER)))
  fields["learning_rate"], fields["landscape_range"] = 1, 2  # integral floats, as JSON may have
  loaded = results.config_from_dict(fields)
  assert (loaded.learning_rate, loaded.landscape_range) == (1.0, 2.0)
  assert type(loaded.learning_rate) is float


@pytest.mark.hostile
@pytest.mark.parametrize(
  "field, changes",
  [
    ("learning_rate", {"learning_rate": 1e-50}),
    ("learning_rate", {"learning_rate": 5e-324}),
    ("learning_rate", {"learning_rate": 1e-40}),  # float32 subnormal: XLA flushes it to 0
    ("learning_rate", {"learning_rate": 1e39}),  # inf in float32
    ("learning_rate", {"learning_rate": 10**400}),  # beyond a float
    (r"learning_rate_overrides\['none'\]", {"learning_rate_overrides": (("none", 1e-50),)}),
    # Neighbouring slice points 1e-50 apart: every alpha would be 0 in float32.
    ("landscape_range", {"landscape_range": 1e-50}),
    ("landscape_range", {"landscape_range": 1e-38, "landscape_points": 41}),
  ],
)
def test_rates_and_slice_steps_must_stay_positive_and_finite_in_float32(field, changes):
  with pytest.raises(ValueError, match=rf"Config\.{field}="):
    config.PAPER.replace(**changes)


def test_learning_rates_over_float32s_whole_normal_range_are_taken():
  tiny = float(np.finfo(np.float32).tiny)
  assert config.FLOAT32_TINY == tiny and config.FLOAT32_MAX == float(np.finfo(np.float32).max)
  assert config.PAPER.replace(learning_rate=tiny).learning_rate == tiny
  assert config.PAPER.replace(learning_rate=config.FLOAT32_MAX).learning_rate == config.FLOAT32_MAX
  with pytest.raises(ValueError, match="float32"):
    config.PAPER.replace(learning_rate=float(np.nextafter(tiny, 0.0)))


@pytest.mark.hostile
def test_a_normalization_overridden_twice_is_refused():
  twice = (("none", 1e-4), ("layernorm", 1e-3), ("none", 5e-4))
  with pytest.raises(ValueError, match=r"Config\.learning_rate_overrides=.*names 'none' more"):
    config.PAPER.replace(learning_rate_overrides=twice)
  once = config.PAPER.replace(learning_rate_overrides=twice[:2])
  assert (once.learning_rate_for("none"), once.learning_rate_for("layernorm")) == (1e-4, 1e-3)


# A text data set: 10 training examples, so batches of 4 make 3 steps an epoch, the last
# one padded (2 real rows).
TEXT = data.TextShape("agnews", 30, 8, 10, 6, 4, "abc")
TEXT_CFG = config.TINY.replace(text=TEXT, batch_size=4, steps=6, norms=("layernorm", "none"))


def test_a_text_config_takes_its_sizes_from_the_data():
  cfg = TEXT_CFG
  assert (cfg.vocab_size, cfg.seq_len, cfg.output_classes) == (30, 8, 4)
  assert cfg.task == data.TextTask(num_train=10, num_test=6, seq_len=8, batch_size=4)
  assert cfg.replace(num_classes=4).output_classes == 4  # the data's classes, given


@pytest.mark.parametrize(
  "changes, field, words",
  [
    ({"num_classes": 5}, "num_classes", "the data's 4 classes"),
    ({"num_classes": 400}, "num_classes", "the data's 4 classes"),
    ({"steps": 7}, "steps", "a multiple of 3"),
    ({"steps": 2}, "steps", "a multiple of 3"),
    ({"norms": ("layernorm", "batchnorm")}, "norms", "10 examples in batches of 4"),
    ({"text": TEXT._replace(num_train=0)}, "text", "num_train must be an integer >= 1"),
    ({"text": TEXT._replace(vocab_size=0)}, "text", "vocab_size must be an integer >= 1"),
    ({"text": TEXT._replace(num_classes=0)}, "text", "num_classes must be an integer >= 1"),
  ],
)
def test_a_config_that_cannot_train_on_its_text_names_the_field(changes, field, words):
  with pytest.raises(ValueError, match=rf"Config\.{field}=") as e:
    TEXT_CFG.replace(**changes)
  assert words in str(e.value)


def test_batchnorm_trains_on_text_where_the_batch_divides_the_examples():
  cfg = TEXT_CFG.replace(norms=("batchnorm",), batch_size=5, steps=4)  # 2 whole batches
  assert cfg.task.plan.last_batch_size == cfg.batch_size
  assert TEXT_CFG.replace(steps=9).steps == 9  # 3 epochs


@pytest.mark.parametrize("index", range(len(data.TextShape._fields)))
def test_a_text_shape_field_of_the_wrong_type_is_named_by_its_place(index):
  wrong = "4" if data.TextShape._fields[index] not in ("name", "fingerprint") else 4
  shape = list(TEXT)
  shape[index] = wrong
  with pytest.raises(TypeError, match=rf"Config\.text\[{index}\]="):
    TEXT_CFG.replace(text=tuple(shape))


def test_a_text_config_survives_summary_json():
  fields = json.loads(json.dumps(summary.config_to_dict(TEXT_CFG)))
  assert fields["text"] == TEXT_CFG.text._asdict()  # named, readable without the field order
  loaded = loading.config_from_dict(fields)
  assert loaded == TEXT_CFG and type(loaded.text) is data.TextShape
  assert loaded.task == TEXT_CFG.task
  # The list form (a TextShape's fields in order) reads back alike.
  assert loading.config_from_dict({**fields, "text": list(TEXT_CFG.text)}) == TEXT_CFG
