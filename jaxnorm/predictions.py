"""The paper's experiments as the command line runs them: each one's configuration,
figure title and the predictions of the paper that `measures.md` judges.

A `Prediction` compares normalizations on named measures: its `subjects` are `relation`
("lower", "higher" or "similar") than its `baseline` on each measure of `on`
(`jaxnorm.stats.judge` judges it on per-seed values paired by seed).
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


def flatter(subjects, baseline, text) -> Prediction:
  """`subjects` have lower values than `baseline` on every flatness measure."""
  return Prediction(text, tuple(subjects), baseline, "lower", LOWER_IS_FLATTER)


def more_isotropic(subjects, baseline, text) -> Prediction:
  """`subjects` have higher values than `baseline` on every isotropy measure."""
  return Prediction(text, tuple(subjects), baseline, "higher", HIGHER_IS_ISOTROPIC)


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

LR_SWEEP = Experiment("lr_sweep", "", config.PAPER, (), rates=(1e-4, 2e-4, 5e-4))
# Every experiment by name (what summary.json records): `results.load` gives a run back
# its predictions.
BY_NAME = {e.name: e for e in (EXP1, EXP2, EXP3, LR_SWEEP)}

# BatchNorm measured with batch statistics (`measures.BATCH_STATS_OF`), a family of its
# own: lower than No Norm on these, similar to LayerNorm on these and the Hessian's trace.
BATCH_STATS_LOWER = ("landscape_rise_directions", "filter_rise_directions", "adaptive_sharpness")
BATCH_STATS_SIMILAR = (*BATCH_STATS_LOWER, "hessian_trace")
