"""The random keys of one run, named, all derived from its seed.

Every random draw of a run comes from `run_keys(seed)`, and every normalization gets the
same keys for a given seed (common random numbers): the same initialization key, training
batches, landscape direction, evaluation batches and measurement keys, so that models
differ only in their normalization (and, as in the reference, the un-normalized model's
learning rate). The derivation, fixed so that a seed always means the same run:

    train, direction, landscape_batch, spectrum_batch = split(key(seed), 4)
    init, data = split(train)                               (inside train.init_state)
    lanczos, trace, sharpness, filter_direction = split(fold_in(direction, MEASURES), 4)
    surface1, surface2 = split(fold_in(direction, SURFACE))
    curvature = fold_in(direction, CURVATURE)
    global_1..global_D, filter_1..filter_D = split(fold_in(direction, DIRECTIONS), 2 D)
                                                            (`slice_direction_keys`)
    lanczos_1..lanczos_N, trace_1..trace_N = split(fold_in(direction, BLOCKS), 2 N)
                                                            (`block_curvature_keys`)
"""

from __future__ import annotations

from typing import NamedTuple

import jax

# Streams folded into the direction key for the keys of the measures and the 2D surface.
MEASURES = 1
SURFACE = 2
DIRECTIONS = 3
CURVATURE = 4
BLOCKS = 5


class RunKeys(NamedTuple):
  """Keys of one seed. Under `jax.vmap(run_keys)` every field has a leading seed axis."""

  train: jax.Array  # model initialization and training batches (see train.init_state)
  direction: jax.Array  # the global-norm direction of the 1D slice
  landscape_batch: jax.Array  # the evaluation batch of the slices and every flatness measure
  spectrum_batch: jax.Array  # the batch whose block output gives the spectrum
  lanczos: jax.Array  # Lanczos starting vector (Hessian lambda_max)
  trace: jax.Array  # Hutchinson probes (Hessian trace)
  sharpness: jax.Array  # adaptive-sharpness noise
  filter_direction: jax.Array  # the filter-normalized direction of the 1D slice
  surface1: jax.Array  # first filter-normalized direction of the 2D slice
  surface2: jax.Array  # second one
  curvature: jax.Array  # the batch and Lanczos start of the curvature tracked over training


def run_keys(seed: int | jax.Array) -> RunKeys:
  """Every key of the run with seed `seed` (see the module docstring). Traceable."""
  train, direction, landscape_batch, spectrum_batch = jax.random.split(jax.random.key(seed), 4)
  lanczos, trace, sharpness, filter_direction = jax.random.split(
    jax.random.fold_in(direction, MEASURES), 4
  )
  surface1, surface2 = jax.random.split(jax.random.fold_in(direction, SURFACE))
  return RunKeys(
    train,
    direction,
    landscape_batch,
    spectrum_batch,
    lanczos,
    trace,
    sharpness,
    filter_direction,
    surface1,
    surface2,
    jax.random.fold_in(direction, CURVATURE),
  )


def slice_direction_keys(direction: jax.Array, num: int) -> tuple[jax.Array, jax.Array]:
  """The keys of `num` global-norm and `num` filter-normalized slice directions, each (num,),
  from a run's direction key (the slices averaged over directions). Traceable."""
  both = jax.random.split(jax.random.fold_in(direction, DIRECTIONS), 2 * num)
  return both[:num], both[num:]


def block_curvature_keys(direction: jax.Array, num_blocks: int) -> tuple[jax.Array, jax.Array]:
  """The Lanczos and Hutchinson keys of the curvature restricted to each of `num_blocks`
  blocks, each (num_blocks,), from a run's direction key. Traceable."""
  both = jax.random.split(jax.random.fold_in(direction, BLOCKS), 2 * num_blocks)
  return both[:num_blocks], both[num_blocks:]
