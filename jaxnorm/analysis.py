"""Everything measured on a trained model, in one compiled program per model.

`analyze` takes one seed's trained variables and its `keys.RunKeys` and computes, from
one evaluation loss (`loss.eval_loss_fn` on the landscape batch, evaluation mode):

  * the 1D slice along the reference's global-norm direction, and the loss at alpha = 0;
  * the singular values of the block output on the spectrum batch (Figure 2, right);
  * with a `families.MeasureConfig`: the analyzed measures of the families it selects
    (`families.FAMILY_MEASURES`: isotropy of the raw and centered activations and the
    weight norms; the filter-normalized slice and both slices' rises averaged over
    `slice_directions` random directions with their spread; adaptive sharpness; Hessian
    lambda_max, trace and eigenvalue density; BatchNorm's batch-statistics forms), from the
    same activations and loss;
  * with a grid: the 2D slice along two filter-normalized directions (Li et al. 2018);
  * the layer-wise dissection (`jaxnorm.layerwise`): the singular values of every depth's
    representation (always), with "isotropy" every layer's isotropy measures and every
    block's weight norms, with "hessian" every block's curvature (`layer_measures`).

With several blocks the scalar measures describe what the readout reads: the isotropy
that of `Transformer.features` (the last block's output, after the final norm with
pre-norm), the weight norms (and effective learning rates) the last block's; the other
depths are in `layer_measures`.

`analyze_seeds` is the same vmapped over a leading seed axis and jitted: the model, the
task and the measure settings are static; the slice offsets and the grid are arrays, so
only their lengths (not the landscape range) select the program.

Compile time is a cost here like run time: every loss at perturbed parameters (both slices,
the sharpness samples, the surface) comes from one `landscape.losses_at` loop, and the
Hessian estimators share one linearization, so the program holds few copies of the model.
The per-block curvature is one more pair of estimators inside a map over the blocks, the
layers' spectra and isotropy one batch: measured on the 2-core CPU (tiny preset, one seed,
`analyze_seeds.lower(...).compile()`), every family compiles in 13.4 s against 9.4 s
without the dissection (the standard level: 4.1 s against 3.8 s), and 13.8, 14.5, 15.2 s
at 2, 4, 8 blocks: the depth hardly adds to it.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import (
  curvature,
  data,
  density,
  directions,
  heldout,
  landscape,
  layerwise,
  loss,
  norms,
  spectrum,
)
from jaxnorm import families as families_lib
from jaxnorm import keys as keys_lib
from jaxnorm import measures as measures_lib
from jaxnorm import model as model_lib
from jaxnorm.families import MeasureConfig
from jaxnorm.keys import RunKeys

PyTree = Any


class Analysis(NamedTuple):
  """One seed's analysis; under `analyze_seeds` every leaf has a leading seed axis S."""

  landscape: jax.Array  # (P,) eval loss at params + offsets[i] * direction
  base_loss: jax.Array  # () eval loss at the trained params
  spectrum: jax.Array  # (min(B L, D),) singular values of the block output, descending
  # name -> () for each of families.analyzed(its families); {} without measures
  measures: dict[str, jax.Array]
  surface: jax.Array | None  # (A, A) 2D slice on grid x grid; None without a grid
  # The Hessian's eigenvalue density (SLQ quadrature of the lambda_max Lanczos run, one
  # probe): (nodes (m,), weights (m,)); None without the "hessian" family.
  hessian_density: tuple[jax.Array, jax.Array] | None = None
  # (N + 1, K) singular values of every depth's representation (`layerwise`), always.
  layer_spectra: jax.Array | None = None
  # name -> (N + 1,) per layer (isotropy) or (N,) per block (weight norms, curvature),
  # the names of `families.layer_analyzed(its families)`; {} without measures.
  layer_measures: dict[str, jax.Array] | None = None


def analyze(
  model: model_lib.Transformer,
  task: data.TaskShape,
  measure_config: MeasureConfig | None,
  params: PyTree,
  batch_stats: PyTree,
  keys: RunKeys,
  offsets_P: jax.Array,
  alphas_P: jax.Array,
  surface_grid_A: jax.Array | None = None,
  arrays: data.TextArrays | None = None,
) -> Analysis:
  """Slice, spectrum, measures and surface of one trained model (see the module docstring).

  offsets_P: where the global-norm slice is evaluated (`landscape.offsets`); alphas_P:
  where the filter-normalized slice is (always the plain alphas). arrays: a text task's
  data (`data.TextArrays`): its batches are the first of a shuffled pass of the training
  examples (`data.batch`), and the measures add the test split's loss and accuracy
  (`heldout.test_measures`); None for the synthetic task.
  """
  tokens_BxL, labels_B = data.batch(keys.landscape_batch, task, arrays=arrays)
  loss_fn = loss.eval_loss_fn(model, batch_stats, tokens_BxL, labels_B)
  base = loss_fn(params)
  perturbed = _perturbed_losses(
    measure_config, loss_fn, params, keys, offsets_P, alphas_P, surface_grid_A
  )
  spectrum_tokens_BxL, _ = data.batch(keys.spectrum_batch, task, arrays=arrays)
  acts_NxD = spectrum.block_activations(model, params, batch_stats, spectrum_tokens_BxL)
  s_K = spectrum.singular_values(acts_NxD)
  # Every depth (N1 = N + 1 layers of M = B L rows); `spectrum` stays the features' own.
  layer_acts_N1xMxD = spectrum.layer_activations(model, params, batch_stats, spectrum_tokens_BxL)
  measured, hessian_density = {}, None
  if measure_config is not None:
    families = measure_config.families
    measured, hessian_density = _flatness(measure_config, loss_fn, params, base, keys, perturbed)
    if "batch_stats" in families:
      if norms.get(model.norm).needs_batch:  # the same measures with batch statistics
        train_fn = loss.train_mode_loss_fn(model, batch_stats, tokens_BxL, labels_B)
        base_t = train_fn(params)
        perturbed_t = _perturbed_losses(
          measure_config, train_fn, params, keys, alphas_P, alphas_P, None
        )
        flat_t, _ = _flatness(measure_config, train_fn, params, base_t, keys, perturbed_t)
      else:  # training and evaluation mode are the same function
        base_t, flat_t = base, measured
      measured = {
        **measured,
        "loss_at_alpha0_batch_stats": base_t,
        **{
          name: flat_t[name.removesuffix("_batch_stats")]
          for name in families_lib.batch_stats_measures(families)[1:]
        },
      }
    if "isotropy" in families:
      measured = {**measured, **_isotropy(acts_NxD, s_K), **_weight_norms(params)}
  if arrays is not None:
    measured = {**measured, **heldout.test_measures(model, params, batch_stats, task, arrays)}
  layer_s_N1xK, layer_measured = layerwise.layer_measures(
    params, layer_acts_N1xMxD, loss_fn, keys.direction, measure_config
  )
  surface = None
  if surface_grid_A is not None:
    surface = perturbed["surface"].reshape(surface_grid_A.shape[0], surface_grid_A.shape[0])
  return Analysis(
    perturbed["landscape"],
    base,
    s_K,
    measured,
    surface,
    hessian_density,
    layer_s_N1xK,
    layer_measured,
  )


def _perturbed_losses(
  measure_config: MeasureConfig | None,
  loss_fn: loss.LossFn,
  params: PyTree,
  keys: RunKeys,
  offsets_P: jax.Array,
  alphas_P: jax.Array,
  surface_grid_A: jax.Array | None,
) -> dict[str, jax.Array]:
  """Every loss at perturbed parameters in one `landscape.losses_at` call (so the model is
  compiled into one loop, not one per measure): the global-norm slice ("landscape"); with
  the "slices" family, the filter-normalized slice ("filter") and the slices along
  `slice_directions` more directions of each kind ("global_directions", "filter_directions",
  concatenated); with "sharpness", the adaptive-sharpness samples ("sharpness"); with a
  grid, the 2D slice ("surface", flattened row-major)."""
  families = () if measure_config is None else measure_config.families
  fixed = {"global": landscape.random_direction(keys.direction, params)}
  if "slices" in families:
    filter_direction = functools.partial(
      directions.filter_normalized_direction,
      params=params,
      policy_1d=measure_config.filter_policy_1d,
    )
    fixed["filter"] = filter_direction(keys.filter_direction)
    # The slices averaged over directions: D more of each kind, drawn in one vmapped call.
    global_keys, filter_keys = keys_lib.slice_direction_keys(
      keys.direction, measure_config.slice_directions
    )
    many = {
      "global": jax.vmap(lambda k: landscape.random_direction(k, params))(global_keys),
      "filter": jax.vmap(lambda k: filter_direction(k))(filter_keys),
    }
    for kind, stacked in many.items():
      for i in range(measure_config.slice_directions):
        fixed[f"{kind}{i}"] = jax.tree.map(lambda x, i=i: x[i], stacked)
  if surface_grid_A is not None:
    fixed["surface1"] = directions.filter_normalized_direction(keys.surface1, params)
    fixed["surface2"] = directions.filter_normalized_direction(keys.surface2, params)
  names = list(fixed)

  def block(coefficients_NxK: jax.Array, columns: list[str]) -> jax.Array:
    out_NxM = jnp.zeros((coefficients_NxK.shape[0], len(names)))
    for k, name in enumerate(columns):
      out_NxM = out_NxM.at[:, names.index(name)].set(coefficients_NxK[:, k])
    return out_NxM

  blocks = {"landscape": block(offsets_P[:, None], ["global"])}
  if "slices" in families:
    blocks["filter"] = block(alphas_P[:, None], ["filter"])
    for kind in ("global", "filter"):  # direction i's slice: alphas along column kind<i>
      blocks[f"{kind}_directions"] = jnp.concatenate(
        [block(alphas_P[:, None], [f"{kind}{i}"]) for i in range(measure_config.slice_directions)]
      )
  if surface_grid_A is not None:
    grid_Gx2 = directions.surface_coefficients(surface_grid_A, surface_grid_A)
    blocks["surface"] = block(grid_Gx2, ["surface1", "surface2"])
  coefficients = jnp.concatenate(list(blocks.values()))
  # The points in the parameters' dtype: a default-dtype array (float64 under a global
  # JAX_ENABLE_X64) would otherwise promote float32 weights and evaluate mixed precision.
  dtype = jnp.result_type(*jax.tree.leaves(params))
  points = landscape.Points(coefficients.astype(dtype))
  losses_N = landscape.losses_at(loss_fn, params, points, tuple(fixed.values()))
  ends = np.cumsum([b.shape[0] for b in blocks.values()])
  out = dict(zip(blocks, _split(losses_N, ends), strict=True))
  if "sharpness" in families:
    # A loop of its own: a fresh Gaussian draw per point, which the slices' points, in
    # the loop above, do not pay for.
    sharp = directions.sharpness_points(keys.sharpness, measure_config.sharpness_samples, 0)
    sharp = sharp._replace(noise=sharp.noise.astype(dtype))
    scale = directions.sharpness_scale(params, measure_config.sharpness_rho)
    out["sharpness"] = landscape.losses_at(loss_fn, params, sharp, (), scale)
  return out


def _split(x_N: jax.Array, ends: np.ndarray) -> list[jax.Array]:
  starts = [0, *ends[:-1]]
  return [x_N[int(a) : int(b)] for a, b in zip(starts, ends, strict=True)]


def _flatness(
  measure_config: MeasureConfig,
  loss_fn: loss.LossFn,
  params: PyTree,
  base_loss: jax.Array,
  keys: RunKeys,
  perturbed: dict[str, jax.Array],
) -> tuple[dict[str, jax.Array], tuple[jax.Array, jax.Array] | None]:
  """The curvature, sharpness and slice measures of `loss_fn` at `params` that
  `measure_config.families` selects, and the Hessian's eigenvalue density from the
  lambda_max Lanczos run (nodes (m,), weights (m,); None without "hessian")."""
  families, out, density_M = measure_config.families, {}, None
  if "hessian" in families:
    top, trace = curvature.hessian_estimates(
      measure_config, loss_fn, params, keys.lanczos, keys.trace
    )
    nodes_M, weights_M = curvature.quadrature(top.alpha, top.beta)
    out |= {
      "hessian_top_eigenvalue": top.eigenvalues[0],
      "hessian_top_relative_residual": top.residuals[0] / jnp.abs(top.eigenvalues[0]),
      "hessian_top_converged": top.converged[0],
      "hessian_trace": trace.trace,
      "hessian_trace_stderr": trace.stderr,
    }
    density_M = (nodes_M, weights_M)
  if "sharpness" in families:
    sharp = directions.sharpness_result(perturbed["sharpness"], base_loss)
    out |= {"adaptive_sharpness": sharp.sharpness, "adaptive_sharpness_stderr": sharp.stderr}
  if "slices" in families:
    out["filter_landscape_max_rise"] = jnp.max(perturbed["filter"]) - base_loss
    for kind, name in (
      ("global", "landscape_rise_directions"),
      ("filter", "filter_rise_directions"),
    ):
      rises_D = (
        perturbed[f"{kind}_directions"].reshape(measure_config.slice_directions, -1).max(1)
        - base_loss
      )
      out[name] = jnp.mean(rises_D)
      out[f"{name}_std"] = jnp.std(rises_D, ddof=1)
  if density_M is not None:
    out["hessian_negative_mass"] = density.negative_mass(density_M[0][None], density_M[1][None])
  return out, density_M


def _isotropy(acts_NxD: jax.Array, s_K: jax.Array) -> dict[str, jax.Array]:
  """The isotropy measures of the features the readout reads (`layerwise.isotropy_measures`)."""
  return layerwise.isotropy_measures(acts_NxD, s_K)


def _weight_norms(params: PyTree) -> dict[str, jax.Array]:
  """The weight norms of the last block (the one block's; `layerwise.weight_norms`), whose
  effective learning rates `per_seed` derives."""
  return layerwise.weight_norms(layerwise.last_block(params))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def analyze_seeds(
  model: model_lib.Transformer,
  task: data.Task,
  measure_config: MeasureConfig | None,
  params_S: PyTree,
  batch_stats_S: PyTree,
  keys_S: RunKeys,
  offsets_P: jax.Array,
  alphas_P: jax.Array,
  surface_grid_A: jax.Array | None = None,
  arrays: data.TextArrays | None = None,
) -> Analysis:
  """`analyze` for S seeds at once (leading axis S on the variables and keys; `arrays`,
  a text task's data, shared by all): one compiled program per (model, task, measure
  settings, sizes). Donates nothing.

  One seed (S = 1, the default run) is analyzed without `vmap` and given its seed axis
  after: the same computation, which XLA compiles in about 30% less time (the standard
  level at the reference config: 3.3 s against 4.6 s on the 2-core CPU) and which equals
  the vmapped one up to float32 rounding."""
  one = lambda p, b, k: analyze(
    model, task, measure_config, p, b, k, offsets_P, alphas_P, surface_grid_A, arrays
  )  # noqa: E731
  if jax.tree.leaves(keys_S)[0].shape[0] == 1:
    first = lambda tree: jax.tree.map(lambda x: x[0], tree)  # noqa: E731
    out = one(first(params_S), first(batch_stats_S), first(keys_S))
    return jax.tree.map(lambda x: x[None], out)
  return jax.vmap(one)(params_S, batch_stats_S, keys_S)


# The measures read off the arrays of a trained model (`per_seed`).
FINAL_LOSS_WINDOW = 100  # final_loss is the mean training loss over the last 100 steps.


def per_seed(r) -> dict[str, np.ndarray]:
  """Every measure of `r`, in `measures_lib.MEASURES` order: name -> (S,) float64.

  The basic ones are read off the arrays: final loss (mean of the last 100 steps; not for
  a `Matched` checkpoint), on a text data set the last epoch's training accuracy, the
  eval loss at alpha = 0, the largest rise over the 1D slice,
  the top/bottom singular value ratio; the others are `r.measures` (booleans as 0.0 /
  1.0), each flatness measure of `measures_lib.PER_LOSS_OF` divided by the loss at
  alpha = 0, and the effective learning rate eta / ||W||^2 at each normalization.
  """
  values = {
    "loss_at_alpha0": r.base_loss,
    "landscape_max_rise": np.max(r.landscape, axis=1) - r.base_loss,
    "spectrum_top_bottom_ratio": _top_bottom_ratio(r.spectrum),
    **r.measures,
  }
  if hasattr(r, "losses"):
    values["final_loss"] = np.mean(r.losses[:, -FINAL_LOSS_WINDOW:], axis=1)
  if getattr(r, "epoch_accuracy", None) is not None:
    values["train_accuracy"] = r.epoch_accuracy[:, -1]
  if hasattr(r, "learning_rate"):
    for layer in ("norm1", "norm2"):
      if f"weight_norm_{layer}_input" in values:
        w = np.asarray(values[f"weight_norm_{layer}_input"], dtype=np.float64)
        values[f"effective_lr_{layer}"] = r.learning_rate / w**2
  loss = values["loss_at_alpha0"]
  for name in measures_lib.PER_LOSS_OF:
    if name in values:
      values[f"{name}_per_loss"] = np.asarray(values[name], dtype=np.float64) / loss
  order = [m.name for m in measures_lib.MEASURES if m.name in values]
  return {name: np.asarray(values[name], dtype=np.float64) for name in order}


def _top_bottom_ratio(spectrum_SxK: np.ndarray) -> np.ndarray:
  """s_max / s_min per seed (S,); NaN where the spectrum has nothing to measure (the
  convention of `jaxnorm.isotropy`: all zero, non-finite or negative entries), inf where
  only s_min is 0."""
  s = np.asarray(spectrum_SxK, np.float64)
  measurable = np.all(np.isfinite(s) & (s >= 0), axis=1) & (np.max(s, axis=1, initial=0) > 0)
  with np.errstate(divide="ignore", invalid="ignore"):
    ratio = np.max(s, axis=1, initial=0) / np.min(s, axis=1, initial=np.inf)
  return np.where(measurable, ratio, np.nan)
