"""The checkpoints of `jaxnorm.resume` in one process: a group's state saved and restored
whole (typed keys and matched-loss snapshots included), and refusals named."""

import json

import jax
import numpy as np
import pytest

from jaxnorm import config, group_train, matched_loss, model, programs, resume


def _state(seeds=2):
  m = model.build_for_training(config.TINY, "layernorm")
  keys = jax.vmap(jax.random.key)(np.arange(seeds))
  return programs.init_states(m, config.TINY.task, keys, np.full(seeds, 1e-3, np.float32))


def test_a_saved_group_is_restored_bit_for_bit(tmp_path):
  state = _state()
  matched = matched_loss.Checkpoints((0.5, 0.1), 2)
  matched.step = [np.array([100, -1]), np.array([-1, -1])]
  matched.saved = [matched.snapshot(state), None]
  losses = np.random.default_rng(0).random((2, 200), dtype=np.float32)
  saved = group_train.to_saved(200, state, losses, None, None, matched)
  writer = resume.Checkpointer(tmp_path / "c", "run A", every_s=0)
  writer.save("layernorm", 1, 200, group_train.flatten(saved))
  writer.wait()
  reader = resume.Checkpointer(tmp_path / "c", "run A")
  assert reader.open(resume=True) == 1
  snapshot = (state.params, state.batch_stats)
  done, flat = reader.restore("layernorm", 1)
  back = group_train.unflatten(flat, done, (state, snapshot, 2))
  assert back.done == 200 and back.curvature is None and back.correct is None
  np.testing.assert_array_equal(back.losses, losses)
  restored = group_train.with_keys(back.state, state)
  for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(group_train.key_data(a), group_train.key_data(b))
  assert back.matched_saved[1] is None
  assert [s.tolist() for s in back.matched_steps] == [[100, -1], [-1, -1]]
  for a, b in zip(jax.tree.leaves(back.matched_saved[0]), jax.tree.leaves(snapshot), strict=True):
    np.testing.assert_array_equal(a, b)
  assert reader.restore("layernorm", 0) is None


def test_refusals_name_what_differs(tmp_path):
  writer = resume.Checkpointer(tmp_path / "c", "Spec(steps=300, seed=0)", every_s=0)
  state = _state(1)
  losses = np.zeros((1, 100), np.float32)
  saved = group_train.to_saved(100, state, losses, None, None, matched_loss.Checkpoints((), 1))
  writer.save("none", 0, 100, group_train.flatten(saved))
  writer.wait()
  with pytest.raises(resume.ResumeError, match="--resume continues it"):
    resume.Checkpointer(tmp_path / "c", "Spec(steps=300, seed=0)").open(resume=False)
  with pytest.raises(resume.ResumeError, match=r"\(steps=300, this run steps=400\)"):
    resume.Checkpointer(tmp_path / "c", "Spec(steps=400, seed=0)").open(resume=True)
  identity = json.loads((tmp_path / "c" / resume.IDENTITY).read_text())
  (tmp_path / "c" / resume.IDENTITY).write_text(json.dumps({**identity, "jax": "0.0.1"}))
  with pytest.raises(
    resume.ResumeError, match=f"jax 0.0.1, this run has {jax.__version__}: another jaxnorm"
  ):
    resume.Checkpointer(tmp_path / "c", "Spec(steps=300, seed=0)").open(resume=True)
