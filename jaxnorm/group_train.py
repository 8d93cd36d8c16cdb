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


class Saved(NamedTuple):
  """What one group of seeds carries from one training chunk to the next, on the host."""

  done: int  # training steps done
  state: Any  # train.TrainState, leaves (S, ...)
  losses: np.ndarray  # (S, done)
  curvature: np.ndarray | None  # (S, chunks done, 2), or None without tracking
  correct: np.ndarray | None  # (S, done) examples predicted right; None: synthetic task
  matched_steps: list[np.ndarray]  # per matched-loss level, (S,) step reached or -1
  matched_saved: list[Any]  # per level, (params, batch_stats) there, or None


def _is_key(x: Any) -> bool:  # a typed PRNG key array
  return jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def key_data(tree: Any) -> Any:
  """`tree` with every typed PRNG key array as its raw uint32 data (what can be saved)."""
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def with_keys(tree: Any, template: Any) -> Any:
  """`tree` (from `key_data`, maybe placed on devices since) with the typed PRNG keys of
  `template` back in their places."""

  def wrap(x, like):
    return jax.random.wrap_key_data(x, impl=jax.random.key_impl(like)) if _is_key(like) else x

  return jax.tree.map(wrap, tree, template)


def flatten(saved: Saved) -> dict[str, np.ndarray]:
  """The arrays of `saved` as one flat dict (what orbax saves); `unflatten` inverts it."""
  flat = {f"state/{i:04d}": x for i, x in enumerate(jax.tree.leaves(saved.state))}
  flat["losses"] = saved.losses
  if saved.curvature is not None:
    flat["curvature"] = saved.curvature
  if saved.correct is not None:
    flat["correct"] = saved.correct
  levels = zip(saved.matched_steps, saved.matched_saved, strict=True)
  for level, (steps, snapshot) in enumerate(levels):
    flat[f"matched/{level}/steps"] = steps
    for i, x in enumerate(jax.tree.leaves(snapshot)):
      flat[f"matched/{level}/saved/{i:04d}"] = x
  return {name: np.asarray(x) for name, x in flat.items()}


def unflatten(flat: dict[str, np.ndarray], done: int, templates: tuple[Any, Any, int]) -> Saved:
  """`Saved` from `flatten`'s dict, its PRNG keys as raw data (`with_keys` restores them);
  `templates` = (the state's pytree, a snapshot's pytree, the number of matched-loss
  levels), whose leaves give the structure, shapes and dtypes."""
  state_template, snapshot_template, levels = templates

  def rebuild(prefix: str, template: Any) -> Any:
    leaves, treedef = jax.tree.flatten(template)
    restored = []
    for i, leaf in enumerate(leaves):
      x, like = flat.get(f"{prefix}/{i:04d}"), key_data(leaf)
      if x is None or x.shape != tuple(like.shape) or x.dtype != like.dtype:
        raise resume.ResumeError(f"its {prefix} does not have this run's shapes: another run's")
      restored.append(x)
    return jax.tree.unflatten(treedef, restored)

  saved = []
  for level in range(levels):
    has = f"matched/{level}/saved/0000" in flat
    saved.append(rebuild(f"matched/{level}/saved", snapshot_template) if has else None)
  return Saved(
    done,
    rebuild("state", state_template),
    flat["losses"],
    flat.get("curvature"),
    flat.get("correct"),
    [flat[f"matched/{level}/steps"] for level in range(levels)],
    saved,
  )


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
  on_chunk: Callable[[int, np.ndarray, np.ndarray | None], None] | None = None,
) -> Trained:
  """Initializes and trains group `index` of `norm`, `spec.chunk_size` steps per call of
  the compiled chunk, from its checkpoint if `checkpointer` holds one; saves a checkpoint
  after each chunk at which `checkpointer.due()`; tells `on_chunk(steps done, losses (S, N),
  curvature (S, 2) or None)` each chunk's values on the host as it finishes."""
  steps, mesh = spec.config.steps, group.mesh
  # Every leaf split over the seed axis, as the programs were compiled for (XLA may
  # return constant leaves replicated); a no-op for leaves already split.
  state = programs.shard_seeds(program.init(group.keys.train, group.learning_rates), mesh)
  checkpoints = matched_loss.Checkpoints(spec.matched_losses, group.size)
  read_losses = progress or bool(checkpoints.levels) or jax.process_count() > 1 or on_chunk
  chunks, tracked, counted = [], [], []
  losses = curvature = correct = None  # host arrays of the steps before `chunks`
  done = 0
  found = None if checkpointer is None else checkpointer.restore(norm, index)
  if found is not None:
    templates = (state, (state.params, state.batch_stats), len(checkpoints.levels))
    try:
      saved = unflatten(found[1], found[0], templates)
    except resume.ResumeError as e:
      raise resume.ResumeError(f"the checkpoint of {norm} group {index}: {e}") from None
    done, losses, curvature, correct = saved.done, saved.losses, saved.curvature, saved.correct
    state = with_keys(programs.shard_seeds(saved.state, mesh), state)
    checkpoints.step = [s.copy() for s in saved.matched_steps]
    checkpoints.saved = [
      None if s is None else programs.shard_seeds(s, mesh) for s in saved.matched_saved
    ]
    bar.update(done)
    on_progress(norm, "train", done)
  finished = done

  def chunk_finished(losses_SxN: jax.Array, snapshot, curvature_Sx2) -> None:
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
      if on_chunk:
        on_chunk(finished, host_SxN, programs.to_host(curvature_Sx2))
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
    previous = (losses_SxN, checkpoints.snapshot(state), curvature_Sx2)
    if checkpointer is not None and checkpointer.due():
      chunk_finished(*previous)
      previous = None
      losses = _joined(losses, chunks, _concatenated)
      curvature = _joined(curvature, tracked, _stacked)
      correct = _joined(correct, counted, _concatenated)
      chunks, tracked, counted = [], [], []
      saved = to_saved(done, state, losses, curvature, correct, checkpoints)
      checkpointer.save(norm, index, done, flatten(saved))
  if previous is not None:
    chunk_finished(*previous)
  return Trained(
    state,
    _joined(losses, chunks, _concatenated),
    _joined(curvature, tracked, _stacked),
    checkpoints,
    _joined(correct, counted, _concatenated),
  )


def to_saved(done, state, losses, curvature, correct, checkpoints) -> Saved:
  """What a checkpoint holds of a group after `done` steps, copied to the host."""
  host: Any = programs.to_host(key_data((state, checkpoints.saved)))
  return Saved(
    done, host[0], losses, curvature, correct, [s.copy() for s in checkpoints.step], host[1]
  )
