"""Scale-aware directions, 2D loss surfaces and adaptive average sharpness.

The reference's 1D slice (`jaxnorm.landscape`) moves along one Gaussian direction scaled to
global norm 1. A loss surface plotted that way depends on the scale of the weights: a
layer followed by a normalization can have its weights rescaled without changing the
function, yet look flatter or sharper. Two remedies are provided:

* filter-normalized directions (Li et al. 2018, "Visualizing the Loss Landscape of Neural
  Nets"): d_f <- d_f * ||w_f|| / ||d_f|| for every filter f, so a step of 1 along d
  changes each filter by its own norm;
* adaptive average sharpness (Kwon et al. 2021, ASAM; studied by Andriushchenko et al.
  2023, "A modern look at the relationship between sharpness and generalization"):
  E_{delta ~ N(0, rho^2 diag(|w|^2))} [L(w + delta)] - L(w), the expected loss increase
  under noise proportional to each weight's own magnitude.

What a "filter" is here (one output unit, Li et al.'s convention for Dense layers):

| parameter (Flax shape)              | filter                                         |
|-------------------------------------|------------------------------------------------|
| Dense kernel (in, out)              | column kernel[:, j]: the weights into output j |
| attention `in_proj` kernel (D, 3D)  | column: one q, k or v output unit              |
| `nn.Embed` table "embedding" (V, D) | row table[v]: one token's vector               |
| any other >= 2-D leaf (..., out)    | slice [..., j] along the last axis             |
| 1-D and 0-D leaves (biases, norm    | by `policy_1d`: "zero" (Li et al.'s default,   |
| scale and bias)                     | not perturbed) or "filter" (the whole vector   |
|                                     | is one filter, scaled to the parameter's norm) |

A deep model's blocks are one `nn.scan` whose parameters, under `STACKED_MODULES`
("blocks"), have a leading block axis N: such a (N, ...) leaf is N layers' leaves, each
with its own filters by the table (a stacked kernel (N, in, out) has N * out filters, a
stacked bias (N, out) is N 1-D leaves), never one bigger tensor.

Li et al.'s code offers a third 1-D option, copying the weights into the direction;
it is not provided here.

Nothing here is jitted: these functions are traced inside the caller's compiled program
(`jaxnorm.analysis.analyze_seeds`), or jit them yourself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxnorm import landscape

PyTree = Any
LossFn = Callable[[PyTree], jax.Array]

POLICIES_1D = ("zero", "filter")
EMBEDDING_NAMES = ("embedding",)  # leaves whose filters are rows (one per token)
# Modules whose leaves stack N layers along a leading axis (`model.Transformer`'s blocks).
STACKED_MODULES = ("blocks",)
FILTER_EPS = 1e-10  # guards ||d_f|| = 0 in the rescaling, as in Li et al.'s code


gaussian_direction = landscape.gaussian_direction


def _leaf_name(path) -> str | None:
  last = path[-1] if path else None
  return getattr(last, "key", getattr(last, "name", None))


def layer_axes(path) -> int:
  """How many leading axes of a leaf index layers rather than weights: 1 under a module
  of `STACKED_MODULES`, else 0."""
  modules = [getattr(k, "key", getattr(k, "name", None)) for k in path[:-1]]
  return int(any(m in STACKED_MODULES for m in modules))


def filter_axis(path, leaf: jax.Array) -> int | None:
  """The axis that indexes filters of a leaf (see the module table); None for a 1-D/0-D
  leaf (one layer's: a stacked (N, out) bias counts as 1-D)."""
  lead = layer_axes(path)
  if leaf.ndim - lead <= 1:
    return None
  return lead if _leaf_name(path) in EMBEDDING_NAMES else leaf.ndim - 1


def filter_normalize(direction: PyTree, params: PyTree, *, policy_1d: str = "zero") -> PyTree:
  """Rescales each filter of `direction` to the norm of the same filter of `params`.

  d_f <- d_f * ||w_f||_2 / (||d_f||_2 + 1e-10) (Li et al. 2018, Sec. 4), filters as in the
  module table. 1-D and 0-D leaves: policy_1d="zero" sets them to 0; "filter" rescales
  the whole leaf as one filter, d <- d * ||w|| / (||d|| + 1e-10). A stacked leaf (N, ...)
  is N layers' leaves, normalized layer by layer (the module docstring).
  """
  if policy_1d not in POLICIES_1D:
    raise ValueError(f"policy_1d={policy_1d!r} is invalid; choose from {POLICIES_1D}")

  def normalize(path, d, w):
    axis, lead = filter_axis(path, w), layer_axes(path)
    if axis is None:
      if policy_1d == "zero":
        return jnp.zeros_like(d)
      if not lead:
        return d * (jnp.linalg.norm(w) / (jnp.linalg.norm(d) + FILTER_EPS))
    # Each filter's norm: over every axis but the filter axis and the layer axis.
    others = tuple(i for i in range(lead, w.ndim) if i != axis)
    w_norm = jnp.sqrt(jnp.sum(jnp.square(w), axis=others, keepdims=True))
    d_norm = jnp.sqrt(jnp.sum(jnp.square(d), axis=others, keepdims=True))
    return d * (w_norm / (d_norm + FILTER_EPS))

  return jax.tree_util.tree_map_with_path(normalize, direction, params)


def filter_normalized_direction(
  key: jax.Array, params: PyTree, *, policy_1d: str = "zero"
) -> PyTree:
  """A Gaussian direction, filter-normalized to `params` (Li et al. 2018)."""
  return filter_normalize(gaussian_direction(key, params), params, policy_1d=policy_1d)


def loss_surface(
  loss_fn: LossFn,
  params: PyTree,
  direction1: PyTree,
  direction2: PyTree,
  alphas_A: jax.Array,
  betas_B: jax.Array,
  chunk_size: int | None = landscape.DEFAULT_CHUNK,
) -> jax.Array:
  """loss_fn(params + a * direction1 + b * direction2) on the grid alphas x betas: (A, B).

  Entry [i, j] is at a = alphas_A[i], b = betas_B[j]. The A * B points are flattened and
  evaluated by vmap, `chunk_size` at a time (None: all at once), so memory stays bounded.
  """
  points = landscape.Points(surface_coefficients(alphas_A, betas_B))
  pair = (direction1, direction2)
  losses_G = landscape.losses_at(loss_fn, params, points, pair, None, chunk_size)
  return losses_G.reshape(alphas_A.shape[0], betas_B.shape[0])


def surface_coefficients(alphas_A: jax.Array, betas_B: jax.Array) -> jax.Array:
  """(A * B, 2): row i * B + j is (alphas[i], betas[j])."""
  n_a, n_b = alphas_A.shape[0], betas_B.shape[0]
  return jnp.stack([jnp.repeat(alphas_A, n_b), jnp.tile(betas_B, n_a)], axis=1)


class SharpnessResult(NamedTuple):
  """Monte Carlo estimate of the average sharpness."""

  sharpness: jax.Array  # () mean of the samples, in loss units.
  stderr: jax.Array  # () std(samples, ddof=1) / sqrt(n).
  samples: jax.Array  # (n,) L(w + delta_i) - L(w).
  base_loss: jax.Array  # () L(w).
  num_samples: jax.Array  # () int32: n.


def average_sharpness(
  loss_fn: LossFn,
  params: PyTree,
  key: jax.Array,
  *,
  rho: float | jax.Array,
  num_samples: int = 100,
  adaptive: bool = True,
  mask: PyTree | None = None,
  chunk_size: int | None = landscape.DEFAULT_CHUNK,
) -> SharpnessResult:
  """E_delta[L(w + delta)] - L(w), delta = rho * c * z, z ~ N(0, I), by Monte Carlo.

  adaptive=True: c = |w| elementwise, delta ~ N(0, rho^2 diag(|w|^2)), the average-case
  adaptive sharpness of Andriushchenko et al. 2023 (after Kwon et al. 2021). It is
  invariant to any rescaling w -> s * w (s > 0, elementwise) that leaves the function
  unchanged, e.g. the weights feeding a normalization or a ReLU unit's in/out weights,
  because then w + delta -> s * (w + delta) with the same z. adaptive=False: c = 1, the
  plain average sharpness, which is not. For a quadratic 0.5 sum_i c_i (w_i - m_i)^2 the
  adaptive value is 0.5 rho^2 sum_i c_i w_i^2.

  Args:
    loss_fn: params -> scalar loss.
    params: w.
    key: PRNG key; sample i uses split(key, n)[i], split again per leaf.
    rho: noise scale (relative to |w| when adaptive), e.g. 0.01 to 0.1.
    num_samples: n >= 2 Monte Carlo samples (a Python int: it fixes shapes).
    adaptive: scale the noise by |w| elementwise.
    mask: optional pytree like params with bool or 0/1 leaves (scalars or full shape);
      only where it is true is the loss perturbed. Default: every parameter, as in
      Andriushchenko et al.'s code.
    chunk_size: samples evaluated together by vmap; None: all at once.
  """
  if num_samples < 2:
    raise ValueError(f"num_samples={num_samples} must be >= 2 to estimate a standard error")
  base = loss_fn(params)
  points = sharpness_points(key, num_samples, 0)
  scale = sharpness_scale(params, rho, adaptive, mask)
  losses_N = landscape.losses_at(loss_fn, params, points, (), scale, chunk_size)
  return sharpness_result(losses_N, base)


def sharpness_points(key: jax.Array, num_samples: int, num_directions: int) -> landscape.Points:
  """The Monte Carlo points of the average sharpness (`landscape.Points` with zero
  coefficients on `num_directions` fixed directions): sample i uses split(key, n)[i]."""
  return landscape.Points(
    jnp.zeros((num_samples, num_directions)),
    jnp.ones((num_samples,)),
    jax.random.split(key, num_samples),
  )


def sharpness_scale(params: PyTree, rho, adaptive: bool = True, mask: PyTree | None = None):
  """The noise scale of the average sharpness: rho * |w| (adaptive) or rho, times `mask`."""
  scale = jax.tree.map(lambda w: rho * (jnp.abs(w) if adaptive else jnp.ones_like(w)), params)
  if mask is not None:
    scale = jax.tree.map(lambda c, m: c * jnp.asarray(m, c.dtype), scale, mask)
  return scale


def sharpness_result(losses_N: jax.Array, base_loss: jax.Array) -> SharpnessResult:
  """The estimate from the losses at the Monte Carlo points and the unperturbed loss."""
  samples_N = losses_N - base_loss
  n = samples_N.shape[0]
  return SharpnessResult(
    sharpness=jnp.mean(samples_N),
    stderr=jnp.std(samples_N, ddof=1) / jnp.sqrt(n),
    samples=samples_N,
    base_loss=base_loss,
    num_samples=jnp.asarray(n, jnp.int32),
  )
