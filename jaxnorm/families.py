"""Which measures a run computes and how hard each estimator works.

The measures `jaxnorm.analysis` computes come in families (`FAMILY_MEASURES`) that a run
selects, by name or by level (`LEVELS`: basic, standard, all; `--measures`), through
`MeasureConfig.families`; the basic measures (`measures.BASIC`: final loss, the reference's
1D slice and spectrum) are always there. What each family costs per model is measured by
`benchmarks/bench.py` (docs/measures.md, "Which measures a run computes"). Pure Python, no
JAX.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

from jaxnorm import measures

# The measures computed by `jaxnorm.analysis`, in families a run selects
# (`MeasureConfig.families`): family -> the `measures.ANALYZED` measures it gives (their `_per_loss`
# and `effective_lr` forms follow them). "batch_stats" gives the `_batch_stats` form of the
# other selected families' flatness measures, for BatchNorm computed again with the batch's
# own statistics (the other norms copy theirs); the Hessian's eigenvalue density comes with
# "hessian".
FAMILY_MEASURES: dict[str, tuple[str, ...]] = {
  "isotropy": (
    *(p + n for p in ("", "centered_") for n in measures.ISOTROPY_FIELDS),
    "weight_norm_norm1_input",
    "weight_norm_norm2_input",
  ),
  "slices": (
    "filter_landscape_max_rise",
    "landscape_rise_directions",
    "landscape_rise_directions_std",
    "filter_rise_directions",
    "filter_rise_directions_std",
  ),
  "sharpness": ("adaptive_sharpness", "adaptive_sharpness_stderr"),
  "hessian": (
    "hessian_top_eigenvalue",
    "hessian_top_relative_residual",
    "hessian_top_converged",
    "hessian_trace",
    "hessian_trace_stderr",
    "hessian_negative_mass",
  ),
  "batch_stats": (),
}
FAMILIES = tuple(FAMILY_MEASURES)
# The layer-wise dissection's measures (`jaxnorm.layerwise`; `NormResult.layer_measures`),
# family -> names: every layer's isotropy (N + 1 values, the scalar measures' names),
# every block's weight norms and Hessian restricted to the block (N values).
LAYER_FAMILY_MEASURES: dict[str, tuple[str, ...]] = {
  "isotropy": FAMILY_MEASURES["isotropy"],
  "hessian": (
    "block_hessian_top_eigenvalue",
    "block_hessian_top_relative_residual",
    "block_hessian_top_converged",
    "block_hessian_trace",
    "block_hessian_trace_stderr",
  ),
}
# The layer measures with one value per block (N) rather than per depth (N + 1).
PER_BLOCK_MEASURES = (
  "weight_norm_norm1_input",
  "weight_norm_norm2_input",
  *LAYER_FAMILY_MEASURES["hessian"],
)
# Named selections (`--measures LEVEL`), each one's families. The default, "standard", is
# every family the paper's predictions are judged on; "all" adds the Hessian estimates (never
# judged: not comparable across normalizations) and BatchNorm's batch-statistics measures
# (reported, not judged), which cost most (docs/measures.md: "Which measures a run computes").
LEVELS: dict[str, tuple[str, ...]] = {
  "basic": ("isotropy",),
  "standard": ("isotropy", "slices", "sharpness"),
  "all": FAMILIES,
}
DEFAULT_LEVEL = "standard"


def family_of(name: str) -> str | None:
  """The family whose selection computes measure `name` (None: a basic measure, read off
  the training losses, the 1D slice and the spectrum, always there, or a name not in the
  table). A `_batch_stats` measure is "batch_stats"'s (with its own family also selected,
  `batch_stats_measures`); a `_per_loss` one that of the measure it divides."""
  if name.endswith("_batch_stats") and name in measures.BY_NAME:
    return "batch_stats"
  if name.endswith("_per_loss") and name in measures.BY_NAME:
    name = name.removesuffix("_per_loss")
  if name.startswith("effective_lr_"):
    return "isotropy"
  for family, names in FAMILY_MEASURES.items():
    if name in names:
      return family
  return None


def batch_stats_measures(families) -> tuple[str, ...]:
  """The `_batch_stats` measures `families` give (without "batch_stats": none)."""
  if "batch_stats" not in families:
    return ()
  names = [
    n
    for n in (*measures.BATCH_STATS_OF, *measures.BATCH_STATS_DIAGNOSTICS)
    if family_of(n) in families
  ]
  return ("loss_at_alpha0_batch_stats", *(f"{n}_batch_stats" for n in names))


def analyzed(families) -> tuple[str, ...]:
  """The `measures.ANALYZED` measures `families` give, in `MEASURES` order."""
  names = {n for f in families for n in FAMILY_MEASURES[f]} | set(batch_stats_measures(families))
  return tuple(n for n in measures.ANALYZED if n in names)


def layer_analyzed(families) -> tuple[str, ...]:
  """The layer measures `families` give (`LAYER_FAMILY_MEASURES`), in its order."""
  return tuple(n for f in LAYER_FAMILY_MEASURES if f in families for n in LAYER_FAMILY_MEASURES[f])


def parse_families(text: str) -> tuple[str, ...] | None:
  """`--measures`' value: a level of `LEVELS`, "none" (None: the reference's measures only)
  or a comma-separated list of `FAMILIES`, as the families in `FAMILIES` order. ValueError
  naming the choices for anything else."""
  text = text.strip()
  if text == "none":
    return None
  if text in LEVELS:
    return LEVELS[text]
  given = [f.strip() for f in text.split(",")]
  unknown = [f for f in given if f not in FAMILIES]
  if not text or unknown:
    raise ValueError(
      f"unknown measures {', '.join(map(repr, unknown or [text]))}: give a level "
      f"({', '.join(LEVELS)}, or none) or a comma-separated list of families "
      f"({', '.join(FAMILIES)})"
    )
  return tuple(f for f in FAMILIES if f in given)


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
  """Which measures a run computes and how hard each estimator works.

  families: the measure families (`FAMILIES`; default `LEVELS["standard"]`), any non-empty
  subset, stored in `FAMILIES` order. The others are estimator settings; a family's settings
  apply only when it is selected.
  """

  families: tuple[str, ...] = LEVELS[DEFAULT_LEVEL]
  lanczos_iterations: int = 20  # Lanczos steps for lambda_max.
  lanczos_tol: float = 1e-2  # relative residual under which lambda_max counts as converged.
  trace_probes: int = 32  # Rademacher probes for tr(H).
  sharpness_rho: float = 0.05  # noise scale relative to |w|.
  sharpness_samples: int = 32  # Monte Carlo samples.
  filter_policy_1d: str = "zero"  # Li et al.'s default: biases and norm parameters not moved.
  slice_directions: int = 8  # random directions each slice rise is averaged over.
  # Thick restarts of Lanczos while lambda_max is above lanczos_tol, each lanczos_iterations / 2
  # more Hessian-vector products (`curvature.lanczos`); a value still above it is marked
  # "not converged" where shown and left out of the verdicts.
  lanczos_restarts: int = 8

  def __post_init__(self):
    """ValueError naming the field for a value of the wrong type (a bool or a float for a
    count, a bool for a number) or out of range; numpy scalars become Python numbers."""
    families = self.families
    if (
      isinstance(families, str)
      or not isinstance(families, (tuple, list))
      or not families
      or any(f not in FAMILIES for f in families)
    ):
      raise ValueError(
        f"MeasureConfig.families={families!r} is invalid: a non-empty tuple of "
        f"{', '.join(FAMILIES)}."
      )
    object.__setattr__(self, "families", tuple(f for f in FAMILIES if f in families))
    for field in ("lanczos_iterations", "trace_probes", "sharpness_samples", "slice_directions"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(
          f"MeasureConfig.{field}={value!r} is invalid: must be an integer (int or numpy "
          "integer, not bool or float)."
        )
      if value < 2:
        raise ValueError(f"MeasureConfig.{field}={value!r} must be >= 2")
      object.__setattr__(self, field, int(value))
    restarts = self.lanczos_restarts
    if isinstance(restarts, bool) or not isinstance(restarts, numbers.Integral) or restarts < 0:
      raise ValueError(
        f"MeasureConfig.lanczos_restarts={restarts!r} is invalid: must be an integer >= 0 "
        "(int or numpy integer, not bool or float)."
      )
    object.__setattr__(self, "lanczos_restarts", int(restarts))
    for field in ("lanczos_tol", "sharpness_rho"):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"MeasureConfig.{field}={value!r} is invalid: must be a number, not bool.")
      if not (math.isfinite(value) and value > 0):
        raise ValueError(f"MeasureConfig.{field}={value!r} must be finite and > 0")
      object.__setattr__(self, field, float(value))
    # directions.POLICIES_1D (this module stays free of JAX).
    policy = self.filter_policy_1d
    if not isinstance(policy, str) or policy not in ("zero", "filter"):
      raise ValueError(
        f"MeasureConfig.filter_policy_1d={self.filter_policy_1d!r} is invalid: 'zero' or 'filter'."
      )
