"""Scalar flatness and isotropy measures of a trained model, one call per model.

Flatness, all on the landscape batch in evaluation mode (BatchNorm statistics fixed):
  * hessian_top_eigenvalue: lambda_max of the Hessian by Lanczos (`curvature.lanczos`),
    with its relative residual as the convergence check;
  * hessian_trace: Hutchinson's estimate of tr(H) with its standard error;
  * adaptive_sharpness: E[L(w + delta)] - L(w), delta ~ N(0, rho^2 |w|^2) elementwise
    (Andriushchenko et al. 2023), invariant to the rescalings normalization layers allow;
  * filter_landscape_max_rise: the largest rise of the 1D slice along a filter-normalized
    direction (Li et al. 2018), next to the reference's global-norm slice rise.
Isotropy, from the singular values of the block output (`isotropy.from_spectrum`): effective
rank, stable rank, participation ratio, condition number and numerical rank, both of the
raw activations (as the reference) and of the centered ones.

lambda_max and tr(H) are not comparable across normalizations that make weights
scale-invariant (Dinh et al. 2017): a LayerNorm or BatchNorm model can be made arbitrarily
sharp or flat by rescaling the weights before the norm without changing its function. The
adaptive sharpness and the filter-normalized slice are the scale-aware counterparts.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxnorm import curvature, data, directions, isotropy, landscape, seeds, spectrum, train
from jaxnorm import model as model_lib
from jaxnorm.config import Config

PyTree = Any


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
  """How hard each estimator works. Defaults cost a few seconds per model after compiling."""

  lanczos_iterations: int = 20  # Lanczos steps for lambda_max.
  lanczos_tol: float = 1e-2  # relative residual under which lambda_max counts as converged.
  trace_probes: int = 32  # Rademacher probes for tr(H).
  sharpness_rho: float = 0.05  # noise scale relative to |w|.
  sharpness_samples: int = 32  # Monte Carlo samples.
  filter_policy_1d: str = "zero"  # Li et al.'s default: biases and norm parameters not moved.

  def __post_init__(self):
    for field in ("lanczos_iterations", "trace_probes", "sharpness_samples"):
      if getattr(self, field) < 2:
        raise ValueError(f"MeasureConfig.{field}={getattr(self, field)} must be >= 2")
    if not self.sharpness_rho > 0:
      raise ValueError(f"MeasureConfig.sharpness_rho={self.sharpness_rho} must be > 0")


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def measure_one(
  cfg: Config,
  mcfg: MeasureConfig,
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  keys: seeds.ExperimentKeys,
) -> dict[str, jax.Array]:
  """Every measure of one trained model (see the module docstring), as () arrays."""
  tokens, labels = data.batch(keys.landscape_batch, cfg)
  loss_fn = lambda p: train.eval_loss(model, p, batch_stats, tokens, labels)  # noqa: E731
  lanczos_key, trace_key, sharp_key, filter_key = jax.random.split(
    jax.random.fold_in(keys.direction, 1), 4
  )
  top = curvature.lanczos(
    loss_fn, params, lanczos_key, k=1, num_iterations=mcfg.lanczos_iterations, tol=mcfg.lanczos_tol
  )
  trace = curvature.hutchinson_trace(loss_fn, params, trace_key, num_probes=mcfg.trace_probes)
  sharp = directions.average_sharpness(
    loss_fn, params, sharp_key, rho=mcfg.sharpness_rho, num_samples=mcfg.sharpness_samples
  )
  direction = directions.filter_normalized_direction(
    filter_key, params, policy_1d=mcfg.filter_policy_1d
  )
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  filter_slice = landscape.loss_slice(loss_fn, params, direction, alphas)
  base = loss_fn(params)
  spectrum_tokens, _ = data.batch(keys.spectrum_batch, cfg)
  acts = spectrum.block_activations(model, params, batch_stats, spectrum_tokens)
  raw = isotropy.measures(acts, center=False)
  centered = isotropy.measures(acts, center=True)
  out = {
    "hessian_top_eigenvalue": top.eigenvalues[0],
    "hessian_top_relative_residual": top.residuals[0] / jnp.abs(top.eigenvalues[0]),
    "hessian_top_converged": top.converged[0],
    "hessian_trace": trace.trace,
    "hessian_trace_stderr": trace.stderr,
    "adaptive_sharpness": sharp.sharpness,
    "adaptive_sharpness_stderr": sharp.stderr,
    "filter_landscape_max_rise": jnp.max(filter_slice) - base,
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


# The measures a table shows, with the direction that means "flatter" or "more isotropic".
FLATNESS = (
  "landscape_max_rise",
  "filter_landscape_max_rise",
  "adaptive_sharpness",
  "hessian_top_eigenvalue",
  "hessian_trace",
)
ISOTROPY = ("effective_rank", "stable_rank", "participation_ratio", "centered_effective_rank")


def measure(
  cfg: Config, norm: str, variables: dict, seed_list, mcfg: MeasureConfig | None = None
) -> list[dict[str, Any]]:
  """Per seed, the measures of the `norm` model trained from that seed, as Python scalars.

  `variables` leaves have a leading seed axis matching `seed_list`.
  """
  mcfg = mcfg or MeasureConfig()
  model = model_lib.build(cfg, norm)
  out = []
  for i, seed in enumerate(seed_list):
    one = jax.tree.map(lambda x, i=i: jnp.asarray(x[i]), variables)
    values = measure_one(
      cfg, mcfg, model, one["params"], one["batch_stats"], seeds.experiment_keys(int(seed))
    )
    out.append({k: _python(v) for k, v in jax.device_get(values).items()})
  return out


def _python(x):
  x = np.asarray(x)
  if x.dtype == bool:
    return bool(x)
  if np.issubdtype(x.dtype, np.integer):
    return int(x)
  return float(x) if np.isfinite(x) else None
