"""Many seeds at once: training and analysis vmapped over a leading seed axis, and that
axis sharded over every device.

Seed s of a run is the same as a single run with `Config.seed = s`: its keys come from
`jax.random.key(s)` exactly as in a single run, and the vmapped step is the same pure
`train.train_step`. Groups of `seeds_per_call` seeds run in one compiled call (to bound
memory); within a group the seed axis is split over a one-axis `Mesh` of all devices with
`NamedSharding`, so the same code uses one CPU, several GPUs or a TPU slice (and several hosts
after `jax.distributed.initialize()`). Groups are padded to a multiple of the device count
with extra seeds whose results are dropped.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from tqdm.auto import tqdm

from jaxnorm import data, landscape, spectrum, train
from jaxnorm import model as model_lib
from jaxnorm.config import Config

PyTree = Any
SEED_AXIS = "seeds"


class ExperimentKeys(NamedTuple):
  """The keys a run derives from its seed (the same for every normalization)."""

  train: jax.Array  # model init and training batches
  direction: jax.Array  # the landscape's random direction
  landscape_batch: jax.Array  # the batch the landscape is evaluated on
  spectrum_batch: jax.Array  # the batch whose block output gives the spectrum


def experiment_keys(seed: int | jax.Array) -> ExperimentKeys:
  return ExperimentKeys(*jax.random.split(jax.random.key(seed), 4))


def seed_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A one-axis mesh named 'seeds' over `devices` (default: all devices)."""
  return Mesh(np.asarray(devices if devices is not None else jax.devices()), (SEED_AXIS,))


def shard_seeds(tree: PyTree, mesh: Mesh) -> PyTree:
  """Places every leaf's leading (seed) axis across the mesh."""
  return jax.device_put(tree, NamedSharding(mesh, PartitionSpec(SEED_AXIS)))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init_states(model, tx, cfg, train_keys_S) -> train.TrainState:
  return jax.vmap(lambda k: train.init_state(model, tx, cfg, k))(train_keys_S)


@functools.partial(jax.jit, static_argnums=(0, 1, 2, 4), donate_argnums=(3,))
def _train_steps(model, tx, cfg, states_S, num_steps):
  return jax.vmap(lambda s: train.train_steps(model, tx, cfg, s, num_steps))(states_S)


def analyze_one(
  cfg: Config,
  model: model_lib.Transformer,
  params: PyTree,
  batch_stats: PyTree,
  keys: ExperimentKeys,
) -> dict[str, jax.Array]:
  """Landscape slice, loss at alpha = 0 and spectrum of one trained model. Traceable."""
  alphas = landscape.alphas(cfg.landscape_points, cfg.landscape_range)
  offsets = landscape.offsets(alphas, cfg.landscape_cumulative)
  direction = landscape.random_direction(keys.direction, params)
  tokens, labels = data.batch(keys.landscape_batch, cfg)
  loss_fn = lambda p: train.eval_loss(model, p, batch_stats, tokens, labels)  # noqa: E731
  values = landscape.loss_slice(loss_fn, params, direction, offsets)
  spectrum_tokens, _ = data.batch(keys.spectrum_batch, cfg)
  acts = spectrum.block_activations(model, params, batch_stats, spectrum_tokens)
  return {
    "landscape": values,
    "base_loss": loss_fn(params),
    "spectrum": spectrum.singular_values(acts),
  }


@functools.partial(jax.jit, static_argnums=(0, 1))
def _analyze(cfg, model, params_S, batch_stats_S, keys_S):
  return jax.vmap(lambda p, b, k: analyze_one(cfg, model, p, b, k))(params_S, batch_stats_S, keys_S)


class SeedRun(NamedTuple):
  """One normalization over S seeds; every array has a leading seed axis."""

  seeds: np.ndarray  # (S,) the seeds
  losses: np.ndarray  # (S, steps)
  landscape: np.ndarray  # (S, P)
  base_loss: np.ndarray  # (S,)
  spectrum: np.ndarray  # (S, D)
  variables: dict  # {'params', 'batch_stats'}, leaves (S, ...)
  first_nonfinite_step: list  # per seed: int or None
  seconds: dict  # wall time: train, analysis


def _padded(seeds: np.ndarray, multiple: int) -> np.ndarray:
  extra = -len(seeds) % multiple
  return np.concatenate([seeds, seeds[:1].repeat(extra)]) if extra else seeds


def run(
  cfg: Config,
  norm: str,
  seeds: Sequence[int],
  *,
  seeds_per_call: int | None = None,
  chunk_size: int = 100,
  mesh: Mesh | None = None,
  progress: bool = True,
) -> SeedRun:
  """Train the `norm` model for every seed, then analyze each, `seeds_per_call` at a time."""
  seeds = np.asarray(seeds, dtype=np.int64)
  if seeds.ndim != 1 or len(seeds) == 0:
    raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
  mesh = mesh or seed_mesh()
  n_dev = mesh.size
  per_call = seeds_per_call or len(seeds)
  per_call = n_dev * math.ceil(per_call / n_dev)
  groups = [seeds[i : i + per_call] for i in range(0, len(seeds), per_call)]
  model = model_lib.build(cfg, norm)
  tx = train.optimizer(cfg.learning_rate_for(norm))
  outputs, train_s, analysis_s = [], 0.0, 0.0
  desc = f"train {norm}" + (f" x{len(seeds)} seeds" if len(seeds) > 1 else "")
  with tqdm(total=cfg.steps * len(groups), desc=desc, disable=not progress, unit="step") as bar:
    for group in groups:
      padded = _padded(group, n_dev)
      keys = shard_seeds(jax.vmap(experiment_keys)(jnp.asarray(padded)), mesh)
      start = time.perf_counter()
      state = _init_states(model, tx, cfg, keys.train)
      chunks, done = [], 0
      while done < cfg.steps:
        n = min(chunk_size, cfg.steps - done)
        state, losses_SxN = _train_steps(model, tx, cfg, state, n)
        chunks.append(losses_SxN)
        done += n
        bar.update(n)
        bar.set_postfix(loss=f"{float(jnp.nanmean(losses_SxN[:, -1])):.4f}")
      losses = np.asarray(jnp.concatenate(chunks, axis=1))
      train_s += time.perf_counter() - start
      start = time.perf_counter()
      analysis = jax.device_get(_analyze(cfg, model, state.params, state.batch_stats, keys))
      analysis_s += time.perf_counter() - start
      variables = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
      keep = slice(0, len(group))
      outputs.append(
        jax.tree.map(lambda x, keep=keep: np.asarray(x)[keep], (losses, analysis, variables))
      )
  losses, analysis, variables = jax.tree.map(lambda *xs: np.concatenate(xs), *outputs)
  return SeedRun(
    seeds=seeds,
    losses=losses,
    landscape=analysis["landscape"],
    base_loss=analysis["base_loss"],
    spectrum=analysis["spectrum"],
    variables=variables,
    first_nonfinite_step=[train.first_nonfinite(row) for row in losses],
    seconds={"train": train_s, "analysis": analysis_s},
  )
