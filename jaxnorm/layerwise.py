"""The layer-wise dissection: the representation at every depth and each block's curvature.

A model of N blocks (`Config.num_blocks`) has a representation at N + 1 depths
(`Transformer.layer_features`): layer 0 the embedding output, layer l block l's output
(with pre-norm the residual stream, before the final norm). Traced inside
`analysis.analyze`'s program, on the spectrum batch in evaluation mode and from the
program's one evaluation loss:

  * `layer_spectra`: the singular values of every layer's (B L, D) activations, (N + 1, K)
    (always);
  * `layer_measures` with "isotropy": every isotropy measure of every layer, raw and
    centered (`layer_isotropy`), name -> (N + 1,), the names of the scalar measures
    (`isotropy_measures`, which the analysis applies to the features the readout reads),
    and per block the Frobenius norms of the kernels feeding norm1 and norm2,
    name -> (N,) (`block_weight_norms`; the scalar measures are the last block's);
  * `layer_measures` with "hessian" (`block_curvature`): per block i, the Hessian of the
    loss restricted to block i's parameters theta_i, every other parameter fixed,
    H_ii = d^2 L / d theta_i^2 (the diagonal block of the full Hessian): its lambda_max by
    thick-restart Lanczos with the relative residual and convergence flag, its trace by
    Hutchinson with the standard error (`jaxnorm.curvature`), name -> (N,), on the keys
    `keys.block_curvature_keys`.

Where the blocks' parameters are: one block's are `params["transformer_block"]`; several
blocks' are `params["blocks"]`, every leaf with a leading block axis N (one `nn.scan`).
`block_curvature` takes block i with a traced index inside `lax.map`, so the compiled
program holds one copy of the per-block estimators whatever N (and runs the blocks one
after the other, the memory of one block's Lanczos basis at a time). The layers' SVDs and
the Lanczos eigenproblems take one matrix per LAPACK call on the CPU (`jaxnorm.lapack`:
jaxlib 0.10 hangs otherwise).

Nothing here is jitted: traced inside `analysis.analyze_seeds`' program.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxnorm import curvature, isotropy, loss, measures, spectrum
from jaxnorm import keys as keys_lib
from jaxnorm.families import MeasureConfig

PyTree = Any

BLOCK = "transformer_block"  # one block's parameters (`model.Transformer`)
BLOCKS = "blocks"  # several blocks' parameters, stacked along a leading block axis


def num_blocks(params: PyTree) -> int:
  """N, the number of blocks of a `model.Transformer`'s parameters."""
  if BLOCKS in params:
    return jax.tree.leaves(params[BLOCKS])[0].shape[0]
  return 1


def block_stack(params: PyTree) -> PyTree:
  """Every block's parameters, each leaf with a leading block axis N (one block: N = 1)."""
  if BLOCKS in params:
    return params[BLOCKS]
  return jax.tree.map(lambda x: x[None], params[BLOCK])


def with_block(params: PyTree, i: int | jax.Array, block: PyTree) -> PyTree:
  """`params` with block i's parameters replaced by `block` (i may be traced)."""
  if BLOCKS not in params:
    return {**params, BLOCK: block}
  put = lambda stack, b: jax.lax.dynamic_update_index_in_dim(stack, b, i, 0)  # noqa: E731
  return {**params, BLOCKS: jax.tree.map(put, params[BLOCKS], block)}


def last_block(params: PyTree) -> PyTree:
  """Block N's parameters (the one block's, for one block)."""
  if BLOCKS in params:
    return jax.tree.map(lambda x: x[-1], params[BLOCKS])
  return params[BLOCK]


def layer_spectra(acts_N1xMxD: jax.Array, centered: bool) -> tuple[jax.Array, jax.Array | None]:
  """The singular values of every layer's (M, D) activations, descending, (N1, K), and
  with `centered` those of every layer's centered activations (each feature's mean over
  the M rows removed), as `isotropy.measures(layer, center=...)` takes them: NaN for a
  matrix with a NaN or inf entry (LAPACK is not asked about it: its result is unspecified
  there)."""

  def values(x_N1xMxD: jax.Array) -> jax.Array:
    finite_N1 = jnp.all(jnp.isfinite(x_N1xMxD), axis=(1, 2))
    s_N1xK = spectrum.singular_values(jnp.where(finite_N1[:, None, None], x_N1xMxD, 0.0))
    return jnp.where(finite_N1[:, None], s_N1xK, jnp.nan)

  if not centered:
    return values(acts_N1xMxD), None
  mean_N1x1xD = jnp.mean(acts_N1xMxD, axis=1, keepdims=True)
  return values(acts_N1xMxD), values(acts_N1xMxD - mean_N1x1xD)


def isotropy_measures(acts_MxD: jax.Array, s_K: jax.Array) -> dict[str, jax.Array]:
  """The isotropy measures of one representation (M rows of D features) named as the
  scalar measures: raw, from its singular values s_K, and centered
  (`isotropy.measures(acts, center=True)`); every one NaN where the activations have a
  NaN or inf entry (whatever the SVD made of them) or are all zero (`jaxnorm.isotropy`).
  Each ()."""
  s_K = jnp.where(jnp.all(jnp.isfinite(acts_MxD)), s_K, jnp.nan)
  raw = isotropy.from_spectrum(s_K, isotropy.default_rtol(acts_MxD.shape, acts_MxD.dtype))
  return _named(raw, isotropy.measures(acts_MxD, center=True))


def layer_isotropy(s_N1xK: jax.Array, centered_N1xK: jax.Array, rtol: float) -> dict:
  """The isotropy measures of every layer from its raw and centered singular values
  (`layer_spectra`), named as `isotropy_measures`: name -> (N1,). With the rtol of a
  layer's (M, D) matrix (`isotropy.default_rtol`) they are `isotropy.measures`' of it."""

  def one(s_K: jax.Array, c_K: jax.Array) -> dict[str, jax.Array]:
    return _named(isotropy.from_spectrum(s_K, rtol), isotropy.from_spectrum(c_K, rtol))

  return jax.vmap(one)(s_N1xK, centered_N1xK)


def _named(raw: isotropy.IsotropyMeasures, centered: isotropy.IsotropyMeasures) -> dict:
  out = {}
  for prefix, m in (("", raw), ("centered_", centered)):
    for name in measures.ISOTROPY_FIELDS:
      out[prefix + name] = getattr(m, name)
  return out


def layer_measures(
  params: PyTree,
  acts_N1xMxD: jax.Array,
  loss_fn: loss.LossFn,
  direction_key: jax.Array,
  measure_config: MeasureConfig | None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Every layer's singular values (`layer_spectra` of `acts_N1xMxD`, (N1, K)) and the
  layer measures `measure_config`'s families select (`families.LAYER_FAMILY_MEASURES`;
  {} without a config): with "isotropy" every layer's isotropy measures, name -> (N1,),
  and every block's weight norms, name -> (N,); with "hessian" every block's curvature of
  `loss_fn` (`block_curvature`) on the keys `keys.block_curvature_keys(direction_key, N)`."""
  families = () if measure_config is None else measure_config.families
  s_N1xK, centered_N1xK = layer_spectra(acts_N1xMxD, centered="isotropy" in families)
  out = {}
  if "isotropy" in families:
    rtol = isotropy.default_rtol(acts_N1xMxD.shape[1:], acts_N1xMxD.dtype)
    out |= layer_isotropy(s_N1xK, centered_N1xK, rtol)
    out |= block_weight_norms(params)
  if "hessian" in families:
    block_keys = keys_lib.block_curvature_keys(direction_key, num_blocks(params))
    out |= block_curvature(loss_fn, params, *block_keys, measure_config)
  return s_N1xK, out


def weight_norms(block: PyTree) -> dict[str, jax.Array]:
  """Frobenius norms of one block's kernels whose outputs feed norm1 (attention's output
  projection) and norm2 (the FFN's down projection): a scale-invariant layer after them
  turns a learning rate eta into the effective rate eta / ||W||^2 (van Laarhoven 2017;
  Arora et al. 2019). Each ()."""
  return {
    "weight_norm_norm1_input": jnp.linalg.norm(block["attention"]["out_proj"]["kernel"]),
    "weight_norm_norm2_input": jnp.linalg.norm(block["ffn"]["down"]["kernel"]),
  }


def block_weight_norms(params: PyTree) -> dict[str, jax.Array]:
  """`weight_norms` of every block: name -> (N,)."""
  return jax.vmap(weight_norms)(block_stack(params))


def block_curvature(
  loss_fn: loss.LossFn,
  params: PyTree,
  lanczos_keys_N: jax.Array,
  trace_keys_N: jax.Array,
  measure_config: MeasureConfig,
) -> dict[str, jax.Array]:
  """lambda_max and the trace of each block's Hessian H_ii (the module docstring), with
  the estimators' settings of `measure_config` (as the full Hessian's): each name of
  `families.LAYER_FAMILY_MEASURES["hessian"]` -> (N,). Block i's Lanczos start and probes
  come from lanczos_keys_N[i] and trace_keys_N[i]; one linearization of its gradient
  serves both."""
  stack = block_stack(params)

  def one(args) -> dict[str, jax.Array]:
    i, lanczos_key, trace_key = args
    block = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), stack)
    loss_i = lambda b: loss_fn(with_block(params, i, b))  # noqa: E731
    top, trace = curvature.hessian_estimates(measure_config, loss_i, block, lanczos_key, trace_key)
    return {
      "block_hessian_top_eigenvalue": top.eigenvalues[0],
      "block_hessian_top_relative_residual": top.residuals[0] / jnp.abs(top.eigenvalues[0]),
      "block_hessian_top_converged": top.converged[0],
      "block_hessian_trace": trace.trace,
      "block_hessian_trace_stderr": trace.stderr,
    }

  indices_N = jnp.arange(lanczos_keys_N.shape[0])
  return jax.lax.map(one, (indices_N, lanczos_keys_N, trace_keys_N))
