"""The layer-wise dissection: the representation at every depth and each block's curvature.

A model of N blocks (`Config.num_blocks`) has a representation at N + 1 depths
(`Transformer.layer_features`): layer 0 the embedding output, layer l block l's output
(with pre-norm the residual stream, before the final norm). Traced inside
`analysis.analyze`'s program, on the spectrum batch in evaluation mode and from the
program's one evaluation loss:

  * `spectra`: the singular values of every layer's (B L, D) activations, (N + 1, K)
    (always), with those of the features the readout reads (the analysis' `spectrum`);
  * `layer_measures` with "isotropy": every isotropy measure of every layer, raw (from its
    singular values) and centered, name -> (N + 1,), the names of the scalar measures
    (`isotropy_measures`, which the analysis applies to the features), and per block the
    Frobenius norms of the kernels feeding norm1 and norm2, name -> (N,)
    (`block_weight_norms`; the scalar measures are the last block's);
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
after the other, the memory of one block's Lanczos basis at a time).

Why every singular value of the analysis comes from one SVD call (`spectra`): jaxlib
0.10's CPU LAPACK kernels split a batch of matrices into parts for XLA's intra-op thread
pool and block their worker until every part is done. Two such calls running at once on a
2-thread pool (a 2-core machine) leave no worker to run the parts, and the program hangs
for ever; the analysis' separate batched SVDs did (two seeds vmapped, the features', the
centered features' and the layers' SVDs). One call is never beside another SVD. The
values are LAPACK's for each matrix, whichever batch it is in.

Nothing here is jitted: traced inside `analysis.analyze_seeds`' program.
"""

from __future__ import annotations

from typing import Any, NamedTuple

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


class Spectra(NamedTuple):
  """Every singular value of the analysis (`spectra`), descending; K = min(B L, D)."""

  features: jax.Array  # (K,) of the features the readout reads: the analysis' `spectrum`
  layers: jax.Array  # (N + 1, K) of every depth's representation; NaN where not finite
  # Of the same matrices centered (each feature's mean over the B L rows removed), NaN
  # where not finite; None unless asked for (the isotropy family).
  features_centered: jax.Array | None
  layers_centered: jax.Array | None


def spectra(acts_MxD: jax.Array, layer_acts_N1xMxD: jax.Array, centered: bool) -> Spectra:
  """The singular values of the features (M, D) (unmasked, as the reference takes them),
  of every layer's activations (N1, M, D), and with `centered` of both centered, in one
  batched SVD (the module docstring says why). A layer or centered matrix with a NaN or
  inf entry gets NaN singular values: LAPACK is not asked about it (its result is
  unspecified there), as `isotropy.measures` does."""
  n1 = layer_acts_N1xMxD.shape[0]
  others = [layer_acts_N1xMxD]
  if centered:
    others.append((acts_MxD - jnp.mean(acts_MxD, axis=0, keepdims=True))[None])
    others.append(layer_acts_N1xMxD - jnp.mean(layer_acts_N1xMxD, axis=1, keepdims=True))
  others_CxMxD = jnp.concatenate(others)
  finite_C = jnp.all(jnp.isfinite(others_CxMxD), axis=(1, 2))
  others_CxMxD = jnp.where(finite_C[:, None, None], others_CxMxD, 0.0)
  s_1CxK = spectrum.singular_values(jnp.concatenate([acts_MxD[None], others_CxMxD]))
  s_CxK = jnp.where(finite_C[:, None], s_1CxK[1:], jnp.nan)
  if not centered:
    return Spectra(s_1CxK[0], s_CxK, None, None)
  return Spectra(s_1CxK[0], s_CxK[:n1], s_CxK[n1], s_CxK[n1 + 1 :])


def isotropy_measures(
  acts_MxD: jax.Array, s_K: jax.Array, centered_K: jax.Array
) -> dict[str, jax.Array]:
  """The isotropy measures of one representation (M rows of D features) named as the
  scalar measures: raw, from its singular values s_K, and centered, from those of its
  centered copy (`spectra`: NaN where not finite); every one NaN where the activations
  have a NaN or inf entry (whatever the SVD made of them) or are all zero
  (`jaxnorm.isotropy`). `isotropy.measures(acts, center=False / True)` with the spectra
  computed inside. Each ()."""
  rtol = isotropy.default_rtol(acts_MxD.shape, acts_MxD.dtype)
  s_K = jnp.where(jnp.all(jnp.isfinite(acts_MxD)), s_K, jnp.nan)
  return _named(isotropy.from_spectrum(s_K, rtol), isotropy.from_spectrum(centered_K, rtol))


def _named(raw: isotropy.IsotropyMeasures, centered: isotropy.IsotropyMeasures) -> dict:
  out = {}
  for prefix, m in (("", raw), ("centered_", centered)):
    for name in measures.ISOTROPY_FIELDS:
      out[prefix + name] = getattr(m, name)
  return out


def layer_measures(
  params: PyTree,
  spectra_: Spectra,
  rows_x_features: tuple[int, int],
  loss_fn: loss.LossFn,
  direction_key: jax.Array,
  measure_config: MeasureConfig | None,
) -> dict[str, jax.Array]:
  """The layer measures `measure_config`'s families select (`families.LAYER_FAMILY_MEASURES`;
  {} without a config): with "isotropy" every layer's isotropy measures from `spectra_`
  (its layers' (M, D) = `rows_x_features` matrices, centered ones included) and every
  block's weight norms; with "hessian" every block's curvature of `loss_fn`
  (`block_curvature`) on the keys `keys.block_curvature_keys(direction_key, N)`."""
  families = () if measure_config is None else measure_config.families
  out = {}
  if "isotropy" in families:
    rtol = isotropy.default_rtol(rows_x_features, spectra_.layers.dtype)
    out |= jax.vmap(
      lambda s_K, c_K: _named(isotropy.from_spectrum(s_K, rtol), isotropy.from_spectrum(c_K, rtol))
    )(spectra_.layers, spectra_.layers_centered)
    out |= block_weight_norms(params)
  if "hessian" in families:
    block_keys = keys_lib.block_curvature_keys(direction_key, num_blocks(params))
    out |= block_curvature(loss_fn, params, *block_keys, measure_config)
  return out


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
  `families.LAYER_FAMILY_MEASURES["hessian"]` -> (N,). Block i's Lanczos start and probes come from
  lanczos_keys_N[i] and trace_keys_N[i]; one linearization of its gradient serves both."""
  stack = block_stack(params)

  def one(args) -> dict[str, jax.Array]:
    i, lanczos_key, trace_key = args
    block = jax.tree.map(lambda x: jax.lax.dynamic_index_in_dim(x, i, keepdims=False), stack)
    loss_i = lambda b: loss_fn(with_block(params, i, b))  # noqa: E731
    hvp_flat = curvature.flat_hvp(loss_i, block)
    top = curvature.lanczos(
      loss_i,
      block,
      lanczos_key,
      k=1,
      num_iterations=measure_config.lanczos_iterations,
      tol=measure_config.lanczos_tol,
      max_restarts=measure_config.lanczos_restarts,
      hvp_flat=hvp_flat,
    )
    trace = curvature.hutchinson_trace(
      loss_i, block, trace_key, num_probes=measure_config.trace_probes, hvp_flat=hvp_flat
    )
    return {
      "block_hessian_top_eigenvalue": top.eigenvalues[0],
      "block_hessian_top_relative_residual": top.residuals[0] / jnp.abs(top.eigenvalues[0]),
      "block_hessian_top_converged": top.converged[0],
      "block_hessian_trace": trace.trace,
      "block_hessian_trace_stderr": trace.stderr,
    }

  indices_N = jnp.arange(lanczos_keys_N.shape[0])
  return jax.lax.map(one, (indices_N, lanczos_keys_N, trace_keys_N))
