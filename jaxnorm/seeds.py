"""Many seeds at once: the compiled programs that initialize and train a model for a whole
group of seeds, vmapped over a leading seed axis that is sharded over every device.

Seed s of a group is the same run as seed s alone: its keys are `keys.run_keys(s)` and the
vmapped step is the same pure `train.train_step`. Within a group the seed axis is split
over a one-axis `Mesh` of the devices with `NamedSharding`, so the same code uses one CPU,
several GPUs, a TPU slice or, after `jax.distributed.initialize()` (`jaxnorm.distributed`),
the devices of several processes and hosts: every process runs the same programs on its
own shard of the seeds, and `to_host` gathers the shards. Groups are padded to a multiple
of the device count with copies of their first seed, whose results are dropped (`padded`).

The two jitted entries, and what they do with their arguments' buffers:
  init_states(model, task, train_keys_S, learning_rates_S)       donates nothing
  train_chunk(model, task, states_S, num_steps, fast)          donates states_S
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnorm import data, train, trajectory
from jaxnorm import model as model_lib

PyTree = Any
SEED_AXIS = "seeds"


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh named 'seeds' over `devices` (default: all devices)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (SEED_AXIS,))


def seed_sharding(mesh: Mesh) -> NamedSharding:
  """Leading (seed) axis split over the mesh, every other axis whole."""
  return NamedSharding(mesh, PartitionSpec(SEED_AXIS))


def shard_seeds(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf's leading (seed) axis across the mesh.

  Leaves are arrays already on the mesh (a no-op, or a reshard), or host values (numpy),
  which over several processes must be the same in every process.
  """
  return jax.device_put(tree, seed_sharding(mesh))


def to_host(tree: PyTree) -> PyTree:
  """Every leaf as a numpy array holding all seeds.

  One process: `jax.device_get`. Several (`jax.distributed`): each process holds only its
  devices' shards, and `multihost_utils.process_allgather` gathers the whole array in
  every process; it is a collective, so every process must call it in the same order.
  """
  if jax.process_count() == 1:
    return jax.device_get(tree)
  return multihost_utils.process_allgather(tree, tiled=True)


def padded(seeds: np.ndarray, multiple: int) -> np.ndarray:
  """`seeds` followed by copies of its first seed, up to a multiple of `multiple`."""
  extra = -len(seeds) % multiple
  return np.concatenate([seeds, seeds[:1].repeat(extra)]) if extra else seeds


@functools.partial(jax.jit, static_argnums=(0, 1))
def init_states(
  model: model_lib.Transformer,
  task: data.Task,
  train_keys_S: jax.Array,
  learning_rates_S: jax.Array,
) -> train.TrainState:
  """Fresh training states for S seeds: leaves (S, ...). Donates nothing."""
  return jax.vmap(lambda k, lr: train.init_state(model, task, k, lr))(
    train_keys_S, learning_rates_S
  )


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4), donate_argnums=(2,))
def train_chunk(
  model: model_lib.Transformer,
  task: data.Task,
  states_S: train.TrainState,
  num_steps: int,
  fast: bool = True,
) -> tuple[train.TrainState, jax.Array]:
  """`num_steps` training steps of every seed: (new states, losses (S, num_steps)).

  Donates `states_S`: its buffers are reused for the new states, so the states passed in
  must not be used afterwards (pass `jax.tree.map(jnp.copy, states_S)` to keep them).
  """
  return jax.vmap(lambda s: train.train_steps(model, task, s, num_steps, fast))(states_S)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4, 5), donate_argnums=(2,))
def train_chunk_tracked(
  model: model_lib.Transformer,
  task: data.Task,
  states_S: train.TrainState,
  num_steps: int,
  fast: bool,
  curvature_iterations: int,
  curvature_keys_S: jax.Array,
) -> tuple[train.TrainState, jax.Array, jax.Array]:
  """`train_chunk`, then at its end each seed's (lambda_max, preconditioned sharpness)
  (`trajectory.sharpness`) in the same compiled program: (states, losses (S, num_steps),
  curvature (S, 2)). Donates `states_S`."""

  def one(state, key):
    state, losses = train.train_steps(model, task, state, num_steps, fast)
    return state, losses, trajectory.sharpness(model, task, state, key, curvature_iterations)

  return jax.vmap(one)(states_S, curvature_keys_S)
