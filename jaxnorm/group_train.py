"""Training one group of seeds, chunk by chunk: `train_group(...) -> Trained`.

The compiled chunk (`programs.Programs.train`) runs `spec.chunk_size` steps of every seed
of the group; the device runs one chunk ahead of the host, which reads a chunk's losses
only for the progress bar, the matched-loss levels (`matched_loss.Checkpoints`), a
collective of several processes, or a checkpoint (`resume.Checkpointer`). A checkpoint
restored at the start puts the group where it was saved; the chunks after it are the same
programs on the same state, so the result is that of a run that never stopped.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxnorm import data, matched_loss, programs, resume, train
from jaxnorm.programs import Group, Programs
from jaxnorm.spec import ExperimentSpec


class Trained(NamedTuple):
  """One group of runs after training."""

  state: train.TrainState  # leaves (S, ...), on the device
  losses: np.ndarray  # (S, steps)
  trajectory: np.ndarray | None  # (S, C, 2), or None without curvature tracking
  checkpoints: matched_loss.Checkpoints
  correct: np.ndarray | None  # (S, steps) examples predicted right; None: synthetic task


def _joined(prefix: np.ndarray | None, parts: list, join: Callable) -> np.ndarray | None:
  """The host array `prefix` (S, a, ...) followed, along axis 1, by the device `parts`
  joined by `join`; None where neither holds anything."""
  if not parts or parts[0] is None:
    return prefix
  tail = programs.to_host(join(parts))
  return tail if prefix is None else np.concatenate([prefix, tail], axis=1)


def _concatenated(parts: list) -> jax.Array:
  return jnp.concatenate(parts, axis=1)


def _stacked(parts: list) -> jax.Array:
  return jnp.stack(parts, axis=1)


def train_group(
  spec: ExperimentSpec,
  norm: str,
  index: int,
  group: Group,
  program: Programs,
  bar: tqdm,
  progress: bool,
  on_progress: Callable[[str, str, int], None],
  arrays: data.TextArrays | None = None,
  checkpointer: resume.Checkpointer | None = None,
) -> Trained:
  """Initializes and trains group `index` of `norm`, `spec.chunk_size` steps per call of
  the compiled chunk, from its checkpoint if `checkpointer` holds one; saves a checkpoint
  after each chunk at which `checkpointer.due()`."""
  steps, mesh = spec.config.steps, group.mesh
  # Every leaf split over the seed axis, as the programs were compiled for (XLA may
  # return constant leaves replicated); a no-op for leaves already split.
  state = programs.shard_seeds(program.init(group.keys.train, group.learning_rates), mesh)
  checkpoints = matched_loss.Checkpoints(spec.matched_losses, group.size)
  read_losses = progress or bool(checkpoints.levels) or jax.process_count() > 1
  chunks, tracked, counted = [], [], []
  losses = curvature = correct = None  # host arrays of the steps before `chunks`
  done = 0
  if checkpointer is not None:
    snapshot = (state.params, state.batch_stats)
    saved = checkpointer.restore(norm, index, (state, snapshot, len(checkpoints.levels)))
    if saved is not None:
      done, losses, curvature, correct = saved.done, saved.losses, saved.curvature, saved.correct
      state = resume.with_keys(programs.shard_seeds(saved.state, mesh), state)
      checkpoints.step = [s.copy() for s in saved.matched_steps]
      checkpoints.saved = [
        None if s is None else programs.shard_seeds(s, mesh) for s in saved.matched_saved
      ]
      bar.update(done)
      on_progress(norm, "train", done)
  finished = done

  def chunk_finished(losses_SxN: jax.Array, snapshot) -> None:
    nonlocal finished
    losses_SxN.block_until_ready()
    finished += losses_SxN.shape[1]
    bar.update(losses_SxN.shape[1])
    # Read on the host only when needed (a device wait); over several processes always,
    # as the gather is a collective every process must join.
    if read_losses:
      host_SxN = programs.to_host(losses_SxN)
      if progress:
        bar.set_postfix(loss=f"{np.nanmean(host_SxN[:, -1]):.4f}")
      checkpoints.update(host_SxN, finished, snapshot)
    on_progress(norm, "train", finished)

  previous = None
  while done < steps:
    n = min(spec.chunk_size, steps - done)
    state, losses_SxN, curvature_Sx2, correct_SxN = program.train[n](
      state, group.keys.curvature, arrays
    )
    state = programs.shard_seeds(state, mesh)
    chunks.append(losses_SxN)
    tracked.append(curvature_Sx2)
    counted.append(correct_SxN)
    done += n
    if previous is not None:  # the device holds the chunk just queued: wait for the one before
      chunk_finished(*previous)
    # The next chunk donates `state`: a matched-loss checkpoint needs its own copy.
    previous = (losses_SxN, checkpoints.snapshot(state))
    if checkpointer is not None and checkpointer.due():
      chunk_finished(*previous)
      previous = None
      losses = _joined(losses, chunks, _concatenated)
      curvature = _joined(curvature, tracked, _stacked)
      correct = _joined(correct, counted, _concatenated)
      chunks, tracked, counted = [], [], []
      checkpointer.save(norm, index, _saved(done, state, losses, curvature, correct, checkpoints))
  if previous is not None:
    chunk_finished(*previous)
  return Trained(
    state,
    _joined(losses, chunks, _concatenated),
    _joined(curvature, tracked, _stacked),
    checkpoints,
    _joined(correct, counted, _concatenated),
  )


def _saved(done, state, losses, curvature, correct, checkpoints) -> resume.Saved:
  """What a checkpoint holds of a group after `done` steps, copied to the host."""
  host: Any = programs.to_host(resume.key_data((state, checkpoints.saved)))
  return resume.Saved(
    done, host[0], losses, curvature, correct, [s.copy() for s in checkpoints.step], host[1]
  )
