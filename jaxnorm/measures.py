"""What jaxnorm reports about a trained model: one table of measures (which of them a run
computes, and how hard the estimators work: `jaxnorm.families`). Pure Python, no JAX:
summaries, `measures.md`, the terminal table and the verdicts all read their names, labels,
units and directions from `MEASURES`.

Flatness, all on the landscape batch in evaluation mode (BatchNorm statistics fixed):
  * landscape_max_rise: the largest rise of the reference's 1D slice, along one Gaussian
    direction of global norm 1;
  * filter_landscape_max_rise: the same along a filter-normalized direction (Li et al. 2018);
  * adaptive_sharpness: E[L(w + delta)] - L(w), delta ~ N(0, rho^2 |w|^2) elementwise
    (Andriushchenko et al. 2023);
  * hessian_top_eigenvalue: lambda_max of the Hessian by thick-restart Lanczos, with its
    relative residual and convergence flag (`CONVERGENCE`: a value that did not converge
    is marked where shown and left out of verdicts); hessian_trace: Hutchinson's estimate
    of tr(H) with its standard error.
Isotropy, from the singular values of the block output (`jaxnorm.isotropy`): effective
rank, stable rank, participation ratio, condition number and numerical rank, both of the
raw activations (as the reference) and of the centered ones.

lambda_max and tr(H) are not comparable across normalizations that make weights
scale-invariant (Dinh et al. 2017): a LayerNorm or BatchNorm model can be made arbitrarily
sharp or flat by rescaling the weights before the norm without changing its function. The
adaptive sharpness and the filter-normalized slice are the scale-aware counterparts.
`jaxnorm.analysis` computes them, and adds the ones read off the arrays (`per_seed`).
"""

from __future__ import annotations

import dataclasses

KINDS = ("fit", "flatness", "isotropy", "diagnostic")


@dataclasses.dataclass(frozen=True)
class Measure:
  """One reported number per trained model (and seed).

  Attributes:
    name: key in summary.json, results.npz and `NormResult.measures`.
    label: how tables and reports name it.
    unit: its unit ("" for pure numbers).
    kind: "fit", "flatness", "isotropy" or "diagnostic" (an estimator's own error).
    better: "lower" or "higher", the direction that means a better fit, a flatter
      minimum or a more isotropic representation; None where no direction is claimed.
    citation: where its definition comes from.
    shown: a row of `measures.md`.
    comparable: meaningful across normalizations (False for the Hessian's scale-dependent
      λ_max and trace, Dinh et al. 2017).
  """

  name: str
  label: str
  unit: str
  kind: str
  better: str | None
  citation: str = ""
  shown: bool = True
  comparable: bool = True


_NATS = "nats"
# The fields of `isotropy.Measures` reported, of the raw and of the centered activations.
ISOTROPY_FIELDS = (
  "effective_rank",
  "stable_rank",
  "participation_ratio",
  "condition_number",
  "numerical_rank",
)
_CURVATURE = "nats / parameter²"
_DIMS = "dimensions"

MEASURES: tuple[Measure, ...] = (
  Measure("final_loss", "final training loss", _NATS, "fit", "lower", "mean of the last 100 steps"),
  Measure("loss_at_alpha0", "evaluation loss at α = 0", _NATS, "fit", "lower", shown=False),
  # A text data set's (`Config.text`): the reference's accuracy, and the test split's.
  Measure(
    "train_accuracy",
    "training accuracy, last epoch",
    "",
    "fit",
    "higher",
    "running: predictions made during the epoch's steps (the reference's)",
  ),
  Measure("test_accuracy", "test accuracy", "", "fit", "higher", "evaluation mode, test split"),
  Measure("test_loss", "test loss", _NATS, "fit", "lower", "evaluation mode, test split"),
  # One random direction (the reference's Figure 2): reported, not judged (one draw is noise).
  Measure(
    "landscape_max_rise",
    "slice rise, global-norm direction (one draw)",
    _NATS,
    "flatness",
    None,
    "Goodfellow et al. 2015; the reference's Figure 2",
  ),
  Measure(
    "filter_landscape_max_rise",
    "slice rise, filter-normalized direction (one draw)",
    _NATS,
    "flatness",
    None,
    "Li et al. 2018",
  ),
  Measure(
    "landscape_rise_directions",
    "slice rise, global-norm, mean over directions",
    _NATS,
    "flatness",
    "lower",
    "Goodfellow et al. 2015; MeasureConfig.slice_directions random directions",
  ),
  Measure(
    "filter_rise_directions",
    "slice rise, filter-normalized, mean over directions",
    _NATS,
    "flatness",
    "lower",
    "Li et al. 2018; MeasureConfig.slice_directions random directions",
  ),
  Measure(
    "adaptive_sharpness",
    "adaptive average sharpness",
    _NATS,
    "flatness",
    "lower",
    "Andriushchenko et al. 2023",
  ),
  Measure(
    "hessian_top_eigenvalue",
    "Hessian λ_max",
    _CURVATURE,
    "flatness",
    "lower",
    "Lanczos 1950; Pearlmutter 1994",
    comparable=False,
  ),
  Measure(
    "hessian_trace",
    "Hessian trace",
    _CURVATURE,
    "flatness",
    "lower",
    "Hutchinson 1989; Avron and Toledo 2011",
    comparable=False,
  ),
  Measure("effective_rank", "effective rank", _DIMS, "isotropy", "higher", "Roy and Vetterli 2007"),
  Measure("stable_rank", "stable rank", _DIMS, "isotropy", "higher", "Rudelson and Vershynin 2007"),
  Measure(
    "participation_ratio", "participation ratio", _DIMS, "isotropy", "higher", "Gao et al. 2017"
  ),
  Measure("condition_number", "condition number", "", "isotropy", None),
  Measure(
    "centered_effective_rank",
    "effective rank, centered",
    _DIMS,
    "isotropy",
    "higher",
    "Roy and Vetterli 2007",
  ),
  Measure("numerical_rank", "numerical rank", _DIMS, "isotropy", None, shown=False),
  Measure("centered_stable_rank", "stable rank, centered", _DIMS, "isotropy", None, shown=False),
  Measure(
    "centered_participation_ratio",
    "participation ratio, centered",
    _DIMS,
    "isotropy",
    None,
    shown=False,
  ),
  Measure(
    "centered_condition_number", "condition number, centered", "", "isotropy", None, shown=False
  ),
  Measure(
    "centered_numerical_rank", "numerical rank, centered", _DIMS, "isotropy", None, shown=False
  ),
  Measure("spectrum_top_bottom_ratio", "s_max/s_min", "", "isotropy", None, shown=False),
  Measure(
    "adaptive_sharpness_stderr",
    "adaptive sharpness, std. error",
    _NATS,
    "diagnostic",
    None,
    shown=False,
  ),
  Measure(
    "hessian_top_relative_residual",
    "Hessian λ_max, relative residual",
    "",
    "diagnostic",
    None,
    shown=False,
  ),
  Measure("hessian_top_converged", "Hessian λ_max converged", "", "diagnostic", None, shown=False),
  Measure(
    "hessian_trace_stderr", "Hessian trace, std. error", _CURVATURE, "diagnostic", None, shown=False
  ),
  Measure(
    "hessian_negative_mass",
    "Hessian eigenvalue mass below 0",
    "",
    "diagnostic",
    None,
    "stochastic Lanczos quadrature, Ghorbani et al. 2019 (one probe per seed; below "
    "-1% of the largest |eigenvalue|)",
  ),
  Measure(
    "landscape_rise_directions_std",
    "slice rise, global-norm, sd over directions",
    _NATS,
    "diagnostic",
    None,
    shown=False,
  ),
  Measure(
    "filter_rise_directions_std",
    "slice rise, filter-normalized, sd over directions",
    _NATS,
    "diagnostic",
    None,
    shown=False,
  ),
)

# Flatness relative to the fit. Near zero cross-entropy the Gauss-Newton part of the Hessian,
# and with it every curvature and loss-rise measure, scales with the loss itself, so models
# trained to losses orders of magnitude apart are also compared on value / (loss at α = 0).
# The flatness measures proper (the one-draw rises aside): taken per loss, and with batch
# statistics.
FLATNESS_CORE = (
  "landscape_rise_directions",
  "filter_rise_directions",
  "adaptive_sharpness",
  "hessian_top_eigenvalue",
  "hessian_trace",
)
PER_LOSS_OF = FLATNESS_CORE
_BASE = {m.name: m for m in MEASURES}
MEASURES += tuple(
  Measure(
    f"{name}_per_loss",
    f"{_BASE[name].label} / loss",
    "" if _BASE[name].unit == _NATS else "1 / parameter²",
    "flatness",
    "lower",
    "divided by the evaluation loss at α = 0 (the Gauss-Newton term scales with the loss)",
    comparable=_BASE[name].comparable,
  )
  for name in PER_LOSS_OF
)
# BatchNorm measured both ways. The flatness measures above use the evaluation-mode loss
# (running statistics: a fixed affine map that never renormalizes a perturbation); these
# use the training-mode loss (the batch's own statistics). Reported, not judged; for a norm
# without batch statistics the two modes are one function and the values coincide.
BATCH_STATS_OF = FLATNESS_CORE
# ... and the convergence evidence of the training-mode lambda_max.
BATCH_STATS_DIAGNOSTICS = ("hessian_top_relative_residual", "hessian_top_converged")
MEASURES += (
  Measure(
    "loss_at_alpha0_batch_stats", "evaluation loss at α = 0, batch statistics", _NATS, "fit", None
  ),
  *(
    Measure(
      f"{name}_batch_stats",
      f"{_BASE[name].label}, batch statistics",
      _BASE[name].unit,
      "flatness",
      None,
      "the training-mode loss (BatchNorm with the batch's statistics)",
      comparable=_BASE[name].comparable,
    )
    for name in BATCH_STATS_OF
  ),
  *(
    Measure(
      f"{name}_batch_stats",
      f"{_BASE[name].label}, batch statistics",
      _BASE[name].unit,
      "diagnostic",
      None,
      shown=False,
    )
    for name in BATCH_STATS_DIAGNOSTICS
  ),
  # The weights whose outputs feed each normalization, and the effective learning rate a
  # scale-invariant layer after them gives (van Laarhoven 2017; Arora et al. 2019).
  Measure("weight_norm_norm1_input", "‖W‖ into norm1 (attention output)", "", "diagnostic", None),
  Measure("weight_norm_norm2_input", "‖W‖ into norm2 (FFN output)", "", "diagnostic", None),
  Measure(
    "effective_lr_norm1",
    "η / ‖W‖² at norm1",
    "",
    "diagnostic",
    None,
    "van Laarhoven 2017; Arora et al. 2019",
  ),
  Measure(
    "effective_lr_norm2",
    "η / ‖W‖² at norm2",
    "",
    "diagnostic",
    None,
    "van Laarhoven 2017; Arora et al. 2019",
  ),
)
BY_NAME: dict[str, Measure] = {m.name: m for m in MEASURES}
# Iterative estimates that may stop short of their tolerance: measure -> (its per-seed
# convergence flag, 1.0 or 0.0, and its relative residual). A seed whose flag is not 1 has
# its value marked "not converged" wherever it is shown, and gives no value to a verdict.
CONVERGENCE: dict[str, tuple[str, str]] = {
  "hessian_top_eigenvalue": ("hessian_top_converged", "hessian_top_relative_residual"),
  "hessian_top_eigenvalue_per_loss": ("hessian_top_converged", "hessian_top_relative_residual"),
  "hessian_top_eigenvalue_batch_stats": (
    "hessian_top_converged_batch_stats",
    "hessian_top_relative_residual_batch_stats",
  ),
}
# Read off the training losses, the 1D slice and the spectrum, with or without measures.
BASIC = ("final_loss", "loss_at_alpha0", "landscape_max_rise", "spectrum_top_bottom_ratio")
# A text data set's fit (`Config.text`): read off the epochs' counts and the test split.
TEXT = ("train_accuracy", "test_accuracy", "test_loss")
# Derived from other measures by `analysis.per_seed`.
DERIVED = (
  *(f"{name}_per_loss" for name in PER_LOSS_OF),
  "effective_lr_norm1",
  "effective_lr_norm2",
)
# Computed by `jaxnorm.analysis` when measures are asked for.
ANALYZED = tuple(m.name for m in MEASURES if m.name not in BASIC + DERIVED + TEXT)
# The measures a prediction about flatness or isotropy is judged on.
FLATNESS = tuple(m.name for m in MEASURES if m.kind == "flatness" and m.better)
ISOTROPY = tuple(m.name for m in MEASURES if m.kind == "isotropy" and m.better)


def label(name: str) -> str:
  """The measure's label, or the name itself for a name not in the table."""
  return BY_NAME[name].label if name in BY_NAME else name


def shown(present) -> list[Measure]:
  """The measures of `MEASURES` that tables show (`Measure.shown`) and `present` (names)
  holds, in table order."""
  present = set(present)
  return [m for m in MEASURES if m.shown and m.name in present]
