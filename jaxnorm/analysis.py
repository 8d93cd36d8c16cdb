"""Everything measured on a trained model, in one compiled program per model.

`analyze` takes one seed's trained variables and its `keys.RunKeys` and computes, from
one evaluation loss (`loss.eval_loss_fn` on the landscape batch, evaluation mode):

  * the 1D slice along the reference's global-norm direction, and the loss at alpha = 0;
  * the singular values of the block output on the spectrum batch (Figure 2, right);
  * with a `measures.MeasureConfig`: every analyzed measure of `measures.MEASURES`
    (Hessian lambda_max and trace, adaptive sharpness, filter-normalized slice, isotropy of
    the raw and centered activations), from the same activations and loss;
  * with a grid: the 2D slice along two filter-normalized directions (Li et al. 2018).

`analyze_seeds` is the same vmapped over a leading seed axis and jitted: the model, the
task and the measure settings are static; the slice offsets and the grid are arrays, so
only their lengths (not the landscape range) select the program.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnorm import curvature, data, directions, isotropy, landscape, loss, spectrum
from jaxnorm import model as model_lib
from jaxnorm.keys import RunKeys
from jaxnorm.measures import MeasureConfig

PyTree = Any


class Analysis(NamedTuple):
  """One seed's analysis; under `analyze_seeds` every leaf has a leading seed axis S."""

  landscape: jax.Array  # (P,) eval loss at params + offsets[i] * direction
  base_loss: jax.Array  # () eval loss at the trained params
  spectrum: jax.Array  # (min(B L, D),) singular values of the block output, descending
  measures: dict[str, jax.Array]  # name -> () for every measures.ANALYZED; {} without config
  surface: jax.Array | None  # (A, A) 2D slice on grid x grid; None without a grid


def analyze(
  model: model_lib.Transformer,
  task: data.TaskShape,
  mcfg: MeasureConfig | None,
  params: PyTree,
  batch_stats: PyTree,
  keys: RunKeys,
  offsets_P: jax.Array,
  alphas_P: jax.Array,
  surface_grid_A: jax.Array | None = None,
) -> Analysis:
  """Slice, spectrum, measures and surface of one trained model (see the module docstring).

  offsets_P: where the global-norm slice is evaluated (`landscape.offsets`); alphas_P:
  where the filter-normalized slice is (always the plain alphas).
  """
  tokens_BxL, labels_B = data.batch(keys.landscape_batch, task)
  loss_fn = loss.eval_loss_fn(model, batch_stats, tokens_BxL, labels_B)
  base = loss_fn(params)
  direction = landscape.random_direction(keys.direction, params)
  landscape_P = landscape.loss_slice(loss_fn, params, direction, offsets_P)
  spectrum_tokens_BxL, _ = data.batch(keys.spectrum_batch, task)
  acts_NxD = spectrum.block_activations(model, params, batch_stats, spectrum_tokens_BxL)
  s_K = spectrum.singular_values(acts_NxD)
  measured = _measures(mcfg, loss_fn, params, base, keys, alphas_P, acts_NxD, s_K) if mcfg else {}
  surface = None
  if surface_grid_A is not None:
    d1 = directions.filter_normalized_direction(keys.surface1, params)
    d2 = directions.filter_normalized_direction(keys.surface2, params)
    surface = directions.loss_surface(loss_fn, params, d1, d2, surface_grid_A, surface_grid_A)
  return Analysis(landscape_P, base, s_K, measured, surface)


def _measures(
  mcfg: MeasureConfig,
  loss_fn: loss.LossFn,
  params: PyTree,
  base_loss: jax.Array,
  keys: RunKeys,
  alphas_P: jax.Array,
  acts_NxD: jax.Array,
  s_K: jax.Array,
) -> dict[str, jax.Array]:
  top = curvature.lanczos(
    loss_fn, params, keys.lanczos, k=1, num_iterations=mcfg.lanczos_iterations, tol=mcfg.lanczos_tol
  )
  trace = curvature.hutchinson_trace(loss_fn, params, keys.trace, num_probes=mcfg.trace_probes)
  sharp = directions.average_sharpness(
    loss_fn, params, keys.sharpness, rho=mcfg.sharpness_rho, num_samples=mcfg.sharpness_samples
  )
  filter_direction = directions.filter_normalized_direction(
    keys.filter_direction, params, policy_1d=mcfg.filter_policy_1d
  )
  filter_slice_P = landscape.loss_slice(loss_fn, params, filter_direction, alphas_P)
  raw = isotropy.from_spectrum(s_K, isotropy.default_rtol(acts_NxD.shape, acts_NxD.dtype))
  centered = isotropy.measures(acts_NxD, center=True)
  out = {
    "hessian_top_eigenvalue": top.eigenvalues[0],
    "hessian_top_relative_residual": top.residuals[0] / jnp.abs(top.eigenvalues[0]),
    "hessian_top_converged": top.converged[0],
    "hessian_trace": trace.trace,
    "hessian_trace_stderr": trace.stderr,
    "adaptive_sharpness": sharp.sharpness,
    "adaptive_sharpness_stderr": sharp.stderr,
    "filter_landscape_max_rise": jnp.max(filter_slice_P) - base_loss,
  }
  for prefix, m in (("", raw), ("centered_", centered)):
    for name in (
      "effective_rank",
      "stable_rank",
      "participation_ratio",
      "condition_number",
      "numerical_rank",
    ):
      out[prefix + name] = getattr(m, name)
  return out


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def analyze_seeds(
  model: model_lib.Transformer,
  task: data.Task,
  mcfg: MeasureConfig | None,
  params_S: PyTree,
  batch_stats_S: PyTree,
  keys_S: RunKeys,
  offsets_P: jax.Array,
  alphas_P: jax.Array,
  surface_grid_A: jax.Array | None = None,
) -> Analysis:
  """`analyze` for S seeds at once (leading axis S on the variables and keys): one
  compiled program per (model, task, measure settings, sizes). Donates nothing."""
  one = lambda p, b, k: analyze(model, task, mcfg, p, b, k, offsets_P, alphas_P, surface_grid_A)  # noqa: E731
  return jax.vmap(one)(params_S, batch_stats_S, keys_S)
