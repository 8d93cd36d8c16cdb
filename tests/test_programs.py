"""Seeds as a batch axis: vmapped, grouped and sharded runs equal single runs."""

import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest

from jaxnorm import config, keys, model, pipeline, programs, train
from jaxnorm.spec import ExperimentSpec

CFG = config.TINY.replace(steps=12, landscape_points=5)


def _run(norm, first_seed, num_seeds, **spec):
  cfg = CFG.replace(norms=(norm,), seed=first_seed)
  spec = ExperimentSpec(cfg, num_seeds=num_seeds, measures=None, **spec)
  return pipeline.run_norm(spec, norm, progress=False)


def _kernels(variables):
  return {
    jax.tree_util.keystr(k): x
    for k, x in jax.tree_util.tree_leaves_with_path(variables)
    if "kernel" in jax.tree_util.keystr(k)
  }


@pytest.fixture(scope="module")
def three_seeds():
  return _run("layernorm", 4, 3, chunk_size=5)


def test_shapes(three_seeds):
  r = three_seeds
  assert r.seeds.tolist() == [4, 5, 6]
  chex.assert_shape(r.losses, (3, CFG.steps))
  chex.assert_shape(r.landscape, (3, CFG.landscape_points))
  chex.assert_shape(r.base_loss, (3,))
  chex.assert_shape(r.spectrum, (3, CFG.embed_dim))
  assert jax.tree.leaves(r.variables)[0].shape[0] == 3
  assert not np.allclose(r.losses[0], r.losses[1])  # seeds differ


def test_seed_k_of_many_equals_a_single_run_with_seed_k(three_seeds):
  single = _run("layernorm", 5, 1, chunk_size=7)
  np.testing.assert_allclose(three_seeds.losses[1], single.losses[0], rtol=1e-5)
  np.testing.assert_allclose(three_seeds.landscape[1], single.landscape[0], rtol=1e-5)
  np.testing.assert_allclose(three_seeds.spectrum[1], single.spectrum[0], rtol=1e-4)
  # Kernels only: the key bias gets a zero gradient in exact arithmetic (softmax ignores a
  # shift shared by all keys), so Adam turns its rounding noise into steps of size ~lr.
  chex.assert_trees_all_close(
    _kernels(jax.tree.map(lambda x: x[1], three_seeds.variables)),
    _kernels(jax.tree.map(lambda x: x[0], single.variables)),
    atol=1e-6,
  )
  # ... and the plain, un-vmapped training loop from the same seed.
  m = model.build(CFG, "layernorm")
  state = train.init_state(m, CFG.task, keys.run_keys(5).train, CFG.learning_rate)
  _, plain = jax.jit(train.train_steps, static_argnums=(0, 1, 3))(m, CFG.task, state, CFG.steps)
  np.testing.assert_allclose(three_seeds.losses[1], plain, rtol=1e-5)


def test_batchnorm_seed_k_of_many_equals_single_up_to_unidentifiable_biases():
  """Biases right before a BatchNorm get a zero gradient in exact arithmetic, so their
  float32 gradient is rounding noise, which Adam scales to steps of size ~lr. Batched and
  single runs round differently, so those biases (and the running means that track them)
  drift apart by ~lr per step, while the training loss, blind to them, agrees to 1e-5."""
  many = _run("batchnorm", 4, 2, chunk_size=5)
  single = _run("batchnorm", 5, 1, chunk_size=7)
  np.testing.assert_allclose(many.losses[1], single.losses[0], rtol=1e-5)
  chex.assert_trees_all_close(
    _kernels(jax.tree.map(lambda x: x[1], many.variables)),
    _kernels(jax.tree.map(lambda x: x[0], single.variables)),
    atol=1e-6,
  )
  bias = lambda v: v["params"]["transformer_block"]["ffn"]["down"]["bias"]  # noqa: E731
  assert np.abs(bias(many.variables)[1] - bias(single.variables)[0]).max() <= 2 * CFG.steps * 3e-3
  np.testing.assert_allclose(many.landscape[1], single.landscape[0], rtol=1e-3)


def test_seed_groups_do_not_change_results(three_seeds):
  grouped = _run("layernorm", 4, 3, seeds_per_call=2)
  np.testing.assert_allclose(grouped.losses, three_seeds.losses, rtol=1e-5)
  np.testing.assert_allclose(grouped.landscape, three_seeds.landscape, rtol=1e-5)


def test_each_seed_trains_at_its_own_learning_rate():
  """The learning rate is per-seed state: one program trains a group at several rates."""
  m = model.build(CFG, "none")
  train_keys = jax.vmap(keys.run_keys)(np.array([0, 0]))
  states = programs.init_states(m, CFG.task, train_keys.train, np.array([1e-3, 1e-2], np.float32))
  _, losses = programs.train_chunk(m, CFG.task, states, 5)
  for i, lr in enumerate((1e-3, 1e-2)):
    alone = train.init_state(m, CFG.task, keys.run_keys(0).train, lr)
    _, expected = jax.jit(train.train_steps, static_argnums=(0, 1, 3))(m, CFG.task, alone, 5)
    np.testing.assert_allclose(losses[i], expected, rtol=1e-5)
  assert not np.allclose(losses[0], losses[1])


def test_padding_repeats_the_first_seed():
  np.testing.assert_array_equal(programs.padded(np.array([7, 8, 9]), 4), [7, 8, 9, 7])
  np.testing.assert_array_equal(programs.padded(np.array([7, 8]), 2), [7, 8])


SHARDED = textwrap.dedent("""
  import json, sys
  import jax, numpy as np
  from jaxnorm import config, pipeline, programs
  from jaxnorm.spec import ExperimentSpec
  cfg = config.TINY.replace(steps=8, landscape_points=3, norms=("layernorm",))
  mesh = programs.seed_mesh()
  x = programs.shard_seeds(np.arange(8.0), mesh)
  shares = sorted(s.data.shape[0] for s in x.addressable_shards)
  spec = ExperimentSpec(cfg, num_seeds=3, measures=None, chunk_size=4)
  r = pipeline.run(spec, progress=False).norms["layernorm"]  # compiled ahead, in threads
  one = pipeline.run_norm(spec, "layernorm", progress=False,
                          mesh=programs.seed_mesh(jax.devices()[:1]))
  json.dump({"devices": jax.device_count(), "shares": shares,
             "loss_diff": float(np.abs(r.losses - one.losses).max()),
             "landscape_diff": float(np.abs(r.landscape - one.landscape).max())}, sys.stdout)
""")


def test_sharded_over_host_devices_equals_one_device():
  # The CPU split into 4 devices, also on a machine with an accelerator.
  env = {
    **os.environ,
    # After the suite's own flags (tests/conftest.py).
    "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=4",
    "JAX_PLATFORMS": "cpu",
  }
  proc = subprocess.run(
    [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600
  )
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["devices"] == 4
  assert out["shares"] == [2, 2, 2, 2]  # each device holds its share of the seed axis
  assert out["loss_diff"] < 1e-5 and out["landscape_diff"] < 1e-5
