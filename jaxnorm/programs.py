"""The compiled programs of a run: initialize, train and analyze a model for a whole group
of seeds, vmapped over a leading seed axis that is sharded over every device, and their
ahead-of-time compilation (`compile_training`, `compile_analysis`).

Seed s of a group is the same run as seed s alone: its keys are `keys.run_keys(s)` and the
vmapped step is the same pure `train.train_step`. Within a group the seed axis is split
over a one-axis `Mesh` of the devices with `NamedSharding`, so the same code uses one CPU,
several GPUs, a TPU slice or, after `jax.distributed.initialize()` (`jaxnorm.distributed`),
the devices of several processes and hosts: every process runs the same programs on its
own shard of the seeds, and `to_host` gathers the shards. Groups are padded to a multiple
of the device count with copies of their first seed, whose results are dropped (`padded`).

The jitted training entries, and what they do with their arguments' buffers:
  init_states(model, task, train_keys_S, learning_rates_S)       donates nothing
  train_chunk(model, task, states_S, num_steps, fast)          donates states_S
  train_chunk_tracked(model, task, states_S, num_steps, fast,
                      curvature_iterations, curvature_keys_S)  donates states_S
  train_text_chunk(model, task, states_S, num_steps, curvature_iterations,
                   curvature_keys_S, arrays)                   donates states_S
A text task's data (`data.TextArrays`) is an argument of the programs, the same for every
seed and replicated over the devices (`replicate`), never compiled in.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from jaxnorm import analysis, data, keys, landscape, train, trajectory
from jaxnorm import model as model_lib
from jaxnorm.spec import ExperimentSpec

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
  (`trajectory.top_eigenvalues`) in the same compiled program: (states, losses (S, num_steps),
  curvature (S, 2)). Donates `states_S`."""

  def one(state, key):
    state, losses = train.train_steps(model, task, state, num_steps, fast)
    return state, losses, trajectory.top_eigenvalues(model, task, state, key, curvature_iterations)

  return jax.vmap(one)(states_S, curvature_keys_S)


@functools.partial(jax.jit, static_argnums=(0, 1, 3, 4), donate_argnums=(2,))
def train_text_chunk(
  model: model_lib.Transformer,
  task: data.TextTask,
  states_S: train.TrainState,
  num_steps: int,
  curvature_iterations: int,
  curvature_keys_S: jax.Array,
  arrays: data.TextArrays,
) -> tuple[train.TrainState, jax.Array, jax.Array | None, jax.Array]:
  """`num_steps` steps of every seed on a text data set (`train.train_epoch_steps_seeds`), with
  `curvature_iterations` > 0 the curvature at the end as `train_chunk_tracked`: (states,
  losses (S, num_steps), curvature (S, 2) or None, examples predicted right
  (S, num_steps)). Donates `states_S`."""

  states_S, losses_SxN, correct_SxN = train.train_epoch_steps_seeds(
    model, task, states_S, num_steps, arrays
  )
  curvature_Sx2 = None
  if curvature_iterations:
    curvature_Sx2 = jax.vmap(
      lambda state, key: trajectory.top_eigenvalues(
        model, task, state, key, curvature_iterations, arrays
      )
    )(states_S, curvature_keys_S)
  return states_S, losses_SxN, curvature_Sx2, correct_SxN


def replicate(arrays: data.TextArrays | None, mesh: Mesh) -> data.TextArrays | None:
  """A text data set's arrays whole on every device of `mesh` (None stays None)."""
  if arrays is None:
    return None
  return jax.device_put(arrays, NamedSharding(mesh, PartitionSpec()))


def abstract_arrays(spec: ExperimentSpec, mesh: Mesh) -> data.TextArrays | None:
  """The abstract, replicated arrays of the spec's text data set; None without one."""
  task = spec.config.task
  if not isinstance(task, data.TextTask):
    return None
  return data.text_arrays_shape(task, NamedSharding(mesh, PartitionSpec()))


def placed_arrays(
  spec: ExperimentSpec, arrays: data.TextArrays | None, mesh: Mesh
) -> data.TextArrays | None:
  """`arrays` as int32, replicated over `mesh` (`replicate`), after checking they are what
  `spec`'s task needs: ValueError for arrays of other shapes, token ids or labels outside
  the vocabulary or the classes, arrays for the synthetic task or none for a text one."""
  task = spec.config.task
  if not isinstance(task, data.TextTask):
    if arrays is not None:
      raise ValueError("arrays are given, but the config trains on the synthetic task (text=None)")
    return None
  if arrays is None:
    raise ValueError(f"the config trains on {spec.config.text.name}: pass its arrays")
  data.check_text_arrays(task, arrays)
  text = spec.config.text  # ids outside the table would be clamped by the gathers, silently
  limits = (text.vocab_size, text.num_classes) * 2
  for name, limit in zip(data.TextArrays._fields, limits, strict=True):
    values = np.asarray(getattr(arrays, name))
    if values.size and not (values.min() >= 0 and values.max() < limit):
      raise ValueError(
        f"TextArrays.{name} holds values in [{values.min()}, {values.max()}]: they must lie in "
        f"[0, {limit}) ({'the vocabulary' if 'tokens' in name else 'the classes'})"
      )
  return replicate(jax.tree.map(lambda x: jnp.asarray(x, jnp.int32), arrays), mesh)


class Programs(NamedTuple):
  """The compiled programs of one normalization for groups of S seeds (`compile_training`,
  `compile_analysis`): called with their array arguments only (the static ones are
  compiled in)."""

  init: Callable  # (train_keys_S, learning_rates_S) -> states_S
  # chunk length n -> (states_S, curvature keys_S, arrays) -> (states_S, losses_SxN,
  # curvature_Sx2 or None, correct_SxN or None); donates the states
  train: dict[int, Callable]
  # (params_S, batch_stats_S, keys_S, offsets, alphas, grid, arrays) -> Analysis
  analyze: Callable | None


class Runs(NamedTuple):
  """Every run of one normalization: the seed of each, and its learning rate (None: the
  config's). `run` has one run per seed; `sweep.run` one per (rate, seed), rate-major."""

  seeds: np.ndarray  # (N,) int64
  rates: np.ndarray | None  # (N,) float64

  @staticmethod
  def of(spec: ExperimentSpec, rates: Sequence[float] | None = None) -> Runs:
    all_seeds = np.asarray(spec.seeds, dtype=np.int64)
    if rates is None:
      return Runs(all_seeds, None)
    return Runs(np.tile(all_seeds, len(rates)), np.repeat(np.asarray(rates), len(all_seeds)))


def seed_groups(spec: ExperimentSpec, mesh: Mesh, runs: Runs) -> list[tuple[np.ndarray, Any]]:
  """(seeds, rates or None) of each compiled call: `seeds_per_call` runs (rounded up to a
  multiple of the device count) at a time."""
  count = len(runs.seeds)
  per_call = spec.seeds_per_call or count
  per_call = mesh.size * math.ceil(per_call / mesh.size)
  return [
    (runs.seeds[i : i + per_call], None if runs.rates is None else runs.rates[i : i + per_call])
    for i in range(0, count, per_call)
  ]


class Group(NamedTuple):
  """The inputs of one group of seeds, padded to a multiple of the device count."""

  mesh: Mesh  # the devices the seed axis is split over
  size: int  # S, padded
  keys: keys.RunKeys  # leaves (S, ...), sharded over the seed axis
  learning_rates: jax.Array  # (S,) float32, sharded


@functools.lru_cache
def _derive_keys(mesh: Mesh) -> Callable:
  """seeds (S,) -> `keys.RunKeys` (S, ...), each device deriving its own seeds' keys: over
  several processes no process can place keys on another's devices. One program per mesh."""
  return jax.jit(jax.vmap(keys.run_keys), out_shardings=seed_sharding(mesh))


def group_inputs(
  spec: ExperimentSpec,
  norm: str,
  group_seeds: np.ndarray,
  mesh: Mesh,
  group_rates: np.ndarray | None = None,
) -> Group:
  """The inputs of the runs `group_seeds` (at `group_rates`, default the config's rate for
  `norm`), padded to a multiple of the device count."""
  seeds_S = padded(group_seeds, mesh.size)
  keys_S = _derive_keys(mesh)(shard_seeds(seeds_S.astype(np.int32), mesh))
  if group_rates is None:
    group_rates = np.full(len(group_seeds), spec.config.learning_rate_for(norm))
  rates = padded(np.asarray(group_rates, np.float32), mesh.size)
  lrs_S = shard_seeds(rates, mesh)
  return Group(mesh, len(seeds_S), keys_S, lrs_S)


def abstract_states(group: Group, init_program) -> Any:
  """The abstract training states of `group`, every leaf split over the seed axis (what
  `shard_seeds` makes of the init program's output)."""
  sharding = NamedSharding(group.mesh, PartitionSpec(SEED_AXIS))
  return jax.tree.map(
    lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sharding), init_program.out_info
  )


def slice_axes(spec: ExperimentSpec) -> tuple[jax.Array, jax.Array, jax.Array | None]:
  """(offsets, alphas, surface grid or None) of the analysis."""
  cfg = spec.config
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  offsets = landscape.offsets(alphas, cfg.landscape_cumulative)
  grid = landscape.alphas(spec.surface_points, cfg.landscape_range) if spec.surface_points else None
  return offsets, alphas, grid


def _chunk_lengths(spec: ExperimentSpec) -> set[int]:
  steps, chunk = spec.config.steps, spec.chunk_size
  return {min(chunk, steps)} | ({steps % chunk} if steps > chunk and steps % chunk else set())


def compile_training(spec: ExperimentSpec, norm: str, group: Group) -> Programs:
  """Compiles, ahead of time, the init program and a training program per chunk length
  for `group`'s shapes and shardings (`analyze` left None: see `compile_analysis`). Its
  model is `model.build_for_training`: the analysis's, its blocks unrolled."""
  cfg = spec.config
  model = model_lib.build_for_training(cfg, norm)
  with jax.default_matmul_precision(cfg.matmul_precision):
    init = init_states.lower(model, cfg.task, group.keys.train, group.learning_rates)
    init = init.compile()
    states = abstract_states(group, init)
    train_programs = {
      n: _train_program(spec, model, states, group, n) for n in _chunk_lengths(spec)
    }
  return Programs(init, train_programs, None)


def _train_program(spec: ExperimentSpec, model, states, group: Group, n: int) -> Callable:
  """The compiled chunk of n steps, as (states, curvature keys, arrays) -> (states, losses,
  curvature or None, correct or None)."""
  task, iters = spec.config.task, spec.curvature_iterations
  if isinstance(task, data.TextTask):
    arrays = abstract_arrays(spec, group.mesh)
    return train_text_chunk.lower(
      model, task, states, n, iters, group.keys.curvature, arrays
    ).compile()
  if not iters:
    chunk = train_chunk.lower(model, task, states, n).compile()
    return lambda states_S, keys_S, arrays: (*chunk(states_S), None, None)
  tracked = train_chunk_tracked.lower(
    model, task, states, n, True, iters, group.keys.curvature
  ).compile()
  return lambda states_S, keys_S, arrays: (*tracked(states_S, keys_S), None)


def compile_analysis(spec: ExperimentSpec, norm: str, group: Group, trained: Programs):
  """Compiles, ahead of time, the analysis of `group`'s trained states: a function
  (params_S, batch_stats_S, keys_S, offsets, alphas, grid, arrays) -> `analysis.Analysis`
  (arrays: the text data set's, None for the synthetic task).

  With `spec.analysis_dtype` "float64" the program is traced and run with x64 enabled
  (a context local to the calling thread) on the float32 states cast to float64; the
  slice axes stay float32 numbers, so both precisions evaluate the same points.
  """
  cfg = spec.config
  model = model_lib.build(cfg, norm)
  states = abstract_states(group, trained.init)
  dtype = jnp.dtype(spec.analysis_dtype)
  with jax.enable_x64(dtype == jnp.float64), jax.default_matmul_precision(cfg.matmul_precision):
    program = analysis.analyze_seeds.lower(
      model,
      cfg.task,
      spec.measures,
      _cast(states.params, dtype),
      _cast(states.batch_stats, dtype),
      group.keys,
      *slice_axes(spec),
      abstract_arrays(spec, group.mesh),
    ).compile()
  if dtype == jnp.float32:
    return program

  def analyze(params_S, batch_stats_S, *rest) -> analysis.Analysis:
    with jax.enable_x64(True):
      return program(_cast(params_S, dtype), _cast(batch_stats_S, dtype), *rest)

  return analyze


def _cast(tree: PyTree, dtype) -> PyTree:
  """Every floating leaf of `tree` (arrays or `jax.ShapeDtypeStruct`s) as `dtype`."""

  def cast(x):
    if not jnp.issubdtype(x.dtype, jnp.floating) or x.dtype == dtype:
      return x
    if isinstance(x, jax.ShapeDtypeStruct):
      return jax.ShapeDtypeStruct(x.shape, dtype, sharding=x.sharding)
    return x.astype(dtype)

  return jax.tree.map(cast, tree)
