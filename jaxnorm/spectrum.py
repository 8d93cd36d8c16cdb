"""Singular-value spectrum of the block's output activations, and of every layer's.

The reference hooks the Transformer block's output for one fresh batch in evaluation
mode, reshapes it to (batch x sequence, D) and takes its singular values. Here the
activation comes from `Transformer.features`, a method of the model, with no global state.
The activations are not centered, as in the reference. `layer_spectra` does the same at
every depth of a deep model (`Transformer.layer_features`: the embedding output and each
block's output). Not jitted: traced inside the
caller's compiled program, or jit it yourself (the model is then a static argument).
"""

from __future__ import annotations

from typing import Any

import jax

from jaxnorm import lapack
from jaxnorm import model as model_lib

PyTree = Any


def singular_values(x_NxD: jax.Array) -> jax.Array:
  """Singular values of a matrix, descending: (min(N, D),); of each matrix for a batch
  (..., N, D) (on the CPU one LAPACK call per matrix: `jaxnorm.lapack`)."""
  return lapack.svd_values(x_NxD)


def block_activations(
  model: model_lib.Transformer, params: PyTree, batch_stats: PyTree, tokens_BxL: jax.Array
) -> jax.Array:
  """Evaluation-mode block output for a batch, as a (B * L, D) matrix."""
  variables = {"params": params, "batch_stats": batch_stats}
  x_BxLxD = model.apply(variables, tokens_BxL, train=False, method=model_lib.Transformer.features)
  return x_BxLxD.reshape(-1, x_BxLxD.shape[-1])


def activation_spectrum(
  model: model_lib.Transformer, params: PyTree, batch_stats: PyTree, tokens_BxL: jax.Array
) -> jax.Array:
  """Singular values, descending, of the (B * L, D) block output: (min(B * L, D),)."""
  return singular_values(block_activations(model, params, batch_stats, tokens_BxL))


def layer_activations(
  model: model_lib.Transformer, params: PyTree, batch_stats: PyTree, tokens_BxL: jax.Array
) -> jax.Array:
  """Evaluation-mode representation at every depth, (N + 1, B * L, D): layer 0 the
  embedding output, layer l block l's output (`Transformer.layer_features`)."""
  variables = {"params": params, "batch_stats": batch_stats}
  x_N1xBxLxD = model.apply(
    variables, tokens_BxL, train=False, method=model_lib.Transformer.layer_features
  )
  return x_N1xBxLxD.reshape(x_N1xBxLxD.shape[0], -1, x_N1xBxLxD.shape[-1])
