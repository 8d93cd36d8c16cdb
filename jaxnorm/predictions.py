"""The paper's experiments as the command line runs them: each one's configuration,
figure title and the predictions of the paper that `measures.md` judges.

A `Prediction` compares normalizations on named measures: its `subjects` are `relation`
("lower", "higher" or "similar") than its `baseline` on each measure of `on`
(`jaxnorm.stats.judge` judges it on per-seed values paired by seed). A `DepthPrediction`
speaks of the representation at every depth (`NormResult.layer_measures`) and is judged
layer by layer (`jaxnorm.layer_report`), not on the measures of the whole model.
"""

from __future__ import annotations

import dataclasses

from jaxnorm import config, measures

LOWER_IS_FLATTER = measures.FLATNESS
HIGHER_IS_ISOTROPIC = measures.ISOTROPY
RELATIONS = ("lower", "higher", "similar")


@dataclasses.dataclass(frozen=True)
class Prediction:
  """`subjects` are `relation` than `baseline` on each of `on`.

  relation: "lower", "higher" or "similar".
  """

  text: str
  subjects: tuple[str, ...]
  baseline: str
  relation: str
  on: tuple[str, ...]

  def __post_init__(self):
    if self.relation not in RELATIONS:
      raise ValueError(
        f"Prediction.relation={self.relation!r} is invalid: one of {', '.join(RELATIONS)}."
      )


DEPTH_TRENDS = ("lower", "higher")


@dataclasses.dataclass(frozen=True)
class DepthPrediction(Prediction):
  """A prediction about depth, judged layer by layer on `NormResult.layer_measures`
  (layer 0 the embedding output, layer l block l's output, l = 1 .. N):

  * the trend: `baseline`'s value of each measure of `on` at layer l + 1 is `trend` than
    at layer l, for each step l = 0 .. N - 1 (and from layer 0 to layer N);
  * the contrast: at each layer l = 1 .. N, `subjects` are `relation` than `baseline`.

  summary.json stores it as its fields, like any prediction (`dataclasses.asdict`); the
  field `trend` tells the two kinds apart when `from_dict` reads them back.

  trend, relation: "lower" (e.g. a collapse of the isotropy measures) or "higher".
  """

  trend: str = "lower"

  def __post_init__(self):
    super().__post_init__()
    for field in ("trend", "relation"):
      if getattr(self, field) not in DEPTH_TRENDS:
        raise ValueError(
          f"DepthPrediction.{field}={getattr(self, field)!r} is invalid: one of "
          f"{', '.join(DEPTH_TRENDS)}."
        )


def from_dict(fields: dict) -> Prediction:
  """The prediction that summary.json recorded as `fields` (`dataclasses.asdict` of it,
  after a JSON round trip): a `DepthPrediction` when it has a trend, else a `Prediction`.
  Raises TypeError for fields that are neither's, ValueError for values that are invalid."""
  kind = DepthPrediction if "trend" in fields else Prediction
  return kind(**{**fields, "subjects": tuple(fields["subjects"]), "on": tuple(fields["on"])})


def whole_model(predictions) -> tuple[Prediction, ...]:
  """The predictions judged on the measures of the whole model (`stats.judge`)."""
  return tuple(p for p in predictions if not isinstance(p, DepthPrediction))


def by_layer(predictions) -> tuple[DepthPrediction, ...]:
  """The predictions judged layer by layer (`jaxnorm.layer_report`)."""
  return tuple(p for p in predictions if isinstance(p, DepthPrediction))


def flatter(subjects, baseline, text) -> Prediction:
  """`subjects` have lower values than `baseline` on every flatness measure."""
  return Prediction(text, tuple(subjects), baseline, "lower", LOWER_IS_FLATTER)


def more_isotropic(subjects, baseline, text) -> Prediction:
  """`subjects` have higher values than `baseline` on every isotropy measure."""
  return Prediction(text, tuple(subjects), baseline, "higher", HIGHER_IS_ISOTROPIC)


def collapses_with_depth(subjects, baseline, text) -> DepthPrediction:
  """`baseline`'s isotropy measures fall from each layer to the next, and at every block's
  output `subjects` are more isotropic than `baseline`."""
  return DepthPrediction(text, tuple(subjects), baseline, "higher", HIGHER_IS_ISOTROPIC, "lower")


@dataclasses.dataclass(frozen=True)
class Experiment:
  """What a script of `experiments/` runs: its name (summary.json, the default output
  folder runs/<name>), the figure's title, the default configuration and the predictions.
  `rates` (a sweep only): the learning rates every model trains at."""

  name: str
  title: str
  config: config.Config
  predictions: tuple[Prediction, ...] = ()
  rates: tuple[float, ...] = ()
  # A text data set the script trains on ("agnews": `jaxnorm.text_run`), None: synthetic.
  dataset: str | None = None
  # The measure families run when --measures is not given; None: the standard level.
  measures: tuple[str, ...] | None = None

  @property
  def default_out(self) -> str:
    return f"runs/{self.name}"


EXP1 = Experiment(
  "exp1",
  "LayerNorm vs No Normalization",
  config.EXP1,
  (
    flatter(("layernorm",), "none", "LayerNorm converges to a flatter minimum than No Norm"),
    more_isotropic(
      ("layernorm",), "none", "LayerNorm keeps more isotropic representations than No Norm"
    ),
  ),
)

EXP2 = Experiment(
  "exp2",
  "Comparative Analysis of Normalization Techniques",
  config.PAPER,
  (
    flatter(
      ("layernorm", "batchnorm"),
      "none",
      "LayerNorm and BatchNorm converge to flatter minima than No Norm",
    ),
    more_isotropic(
      ("layernorm", "batchnorm"),
      "none",
      "LayerNorm and BatchNorm keep more isotropic representations than No Norm",
    ),
    Prediction(
      "LayerNorm and BatchNorm behave nearly identically",
      ("batchnorm",),
      "layernorm",
      "similar",
      ("final_loss", *LOWER_IS_FLATTER, *HIGHER_IS_ISOTROPIC),
    ),
  ),
)

EXP3 = Experiment(
  "exp3",
  "The Constraint Alone: Manual L2 Normalization",
  config.EXP3,
  (
    flatter(
      ("layernorm", "batchnorm", "l2"),
      "none",
      "Normalized models converge to flatter minima than No Norm",
    ),
    more_isotropic(
      ("layernorm", "batchnorm", "l2"),
      "none",
      "Normalized models keep more isotropic representations than No Norm",
    ),
    Prediction(
      "The L2 constraint alone learns worse than LayerNorm",
      ("l2",),
      "layernorm",
      "higher",
      ("final_loss",),
    ),
  ),
)

# Experiment 4's prediction about depth, judged on the deep models of both tasks.
DEPTH_COLLAPSE = collapses_with_depth(
  ("layernorm", "l2"),
  "none",
  "Without normalization, representations collapse progressively with depth",
)

# The paper's Experiment 4: its encoder (config.DEEP: 6 post-norm blocks, 4 heads) dissected
# layer by layer. The title names no depth: --blocks and --norm-placement change it.
DEEP = Experiment(
  "deep",
  "Deep Models: Layer-wise Dissection on the Synthetic Task",
  config.DEEP,
  (
    flatter(
      ("layernorm", "l2"),
      "none",
      "Normalized deep models converge to flatter minima than No Norm",
    ),
    more_isotropic(
      ("layernorm", "l2"),
      "none",
      "Normalized deep models keep more isotropic representations than No Norm",
    ),
    DEPTH_COLLAPSE,
    Prediction(
      "LayerNorm fits better than the L2 constraint alone",
      ("l2",),
      "layernorm",
      "higher",
      ("final_loss",),
    ),
  ),
)

# The paper's Experiment 4 as its notebook runs it: the deep encoder on AG News (distilbert
# tokens, 128 a text), read out at [CLS] into 4 classes, Adam at 2e-4, batch 256, 15 epochs
# of 469 steps (`text_run`: the data fixes the steps), spectra at layers 1, 3 and 6 with
# each model's last-epoch training accuracy. Measures: the isotropy family, every layer.
EXP4 = Experiment(
  "exp4",
  "Layer-wise Dissection on a Real-World Task (AG News)",
  config.DEEP.replace(readout="first", batch_size=256, steps=15 * 469),
  (
    DEPTH_COLLAPSE,
    Prediction(
      "LayerNorm fits better than the L2 constraint alone",
      ("l2",),
      "layernorm",
      "lower",
      ("train_accuracy", "test_accuracy"),
    ),
  ),
  dataset="agnews",
  measures=("isotropy",),
)

LR_SWEEP = Experiment("lr_sweep", "", config.PAPER, (), rates=(1e-4, 2e-4, 5e-4))
# Every experiment by name (what summary.json records): `results.load` gives a run back
# its predictions.
BY_NAME = {e.name: e for e in (EXP1, EXP2, EXP3, DEEP, EXP4, LR_SWEEP)}

# BatchNorm measured with batch statistics (`measures.BATCH_STATS_OF`), a family of its
# own: lower than No Norm on these, similar to LayerNorm on these and the Hessian's trace.
BATCH_STATS_LOWER = ("landscape_rise_directions", "filter_rise_directions", "adaptive_sharpness")
BATCH_STATS_SIMILAR = (*BATCH_STATS_LOWER, "hessian_trace")
