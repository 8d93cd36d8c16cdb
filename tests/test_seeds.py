import json
import os
import subprocess
import sys
import textwrap

import chex
import jax
import numpy as np
import pytest
import scipy.stats

from jaxnorm import cli, config, experiment, results, seeds, train

CFG = config.TINY.replace(steps=12, landscape_points=5)


def _kernels(variables):
  return {
    jax.tree_util.keystr(k): x
    for k, x in jax.tree_util.tree_leaves_with_path(variables)
    if "kernel" in jax.tree_util.keystr(k)
  }


@pytest.fixture(scope="module")
def three_seeds():
  return seeds.run(CFG, "layernorm", [4, 5, 6], chunk_size=5, progress=False)


def test_shapes(three_seeds):
  r = three_seeds
  chex.assert_shape(r.losses, (3, CFG.steps))
  chex.assert_shape(r.landscape, (3, CFG.landscape_points))
  chex.assert_shape(r.base_loss, (3,))
  chex.assert_shape(r.spectrum, (3, CFG.embed_dim))
  assert jax.tree.leaves(r.variables)[0].shape[0] == 3
  assert not np.allclose(r.losses[0], r.losses[1])  # seeds differ


def test_seed_k_of_many_equals_a_single_run_with_seed_k(three_seeds):
  single = seeds.run(CFG, "layernorm", [5], chunk_size=7, progress=False)
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
  plain = train.train(CFG, "layernorm", seeds.experiment_keys(5).train, progress=False)
  np.testing.assert_allclose(three_seeds.losses[1], plain.losses, rtol=1e-5)


def test_batchnorm_seed_k_of_many_equals_single_up_to_unidentifiable_biases():
  """Biases right before a BatchNorm get a zero gradient in exact arithmetic, so their
  float32 gradient is rounding noise, which Adam scales to steps of size ~lr. Batched and
  single runs round differently, so those biases (and the running means that track them)
  drift apart by ~lr per step, while the training loss, blind to them, agrees to 1e-5."""
  many = seeds.run(CFG, "batchnorm", [4, 5], chunk_size=5, progress=False)
  single = seeds.run(CFG, "batchnorm", [5], chunk_size=7, progress=False)
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
  grouped = seeds.run(CFG, "layernorm", [4, 5, 6], seeds_per_call=2, progress=False)
  np.testing.assert_allclose(grouped.losses, three_seeds.losses, rtol=1e-5)
  np.testing.assert_allclose(grouped.landscape, three_seeds.landscape, rtol=1e-5)


def test_bad_seed_list():
  with pytest.raises(ValueError, match="seeds"):
    seeds.run(CFG, "none", [], progress=False)


def test_confidence_interval_known_answer():
  s = experiment.across_seeds([1.0, 2.0, 3.0, None])
  assert s["n"] == 3 and s["mean"] == 2.0 and s["std"] == 1.0
  half = scipy.stats.t.ppf(0.975, 2) / np.sqrt(3)
  np.testing.assert_allclose(s["ci95"], [2 - half, 2 + half])
  assert experiment.across_seeds([None])["mean"] is None
  assert experiment.across_seeds([5.0])["ci95"] == [None, None]


def test_cli_with_seeds_writes_seed_axes_and_intervals(tmp_path, capsys):
  status = cli.main(
    [
      "--out",
      str(tmp_path),
      "--no-progress",
      "--no-measures",
      "--surface",
      "3",
      "--seeds",
      "3",
      "--norms",
      "layernorm,none",
    ],
    prog="t",
    description="",
    default=CFG,
    default_out="",
    name="t",
    title="t",
  )
  assert status == 0
  arrays, summary = results.load(tmp_path)
  assert arrays["none"]["loss"].shape == (3, CFG.steps)
  assert arrays["none"]["spectrum"].shape == (3, CFG.embed_dim)
  final = summary["norms"]["layernorm"]["final_loss"]
  assert final["n"] == 3 and final["ci95"][0] < final["mean"] < final["ci95"][1]
  assert summary["norms"]["layernorm"]["seeds"] == [0, 1, 2]
  assert "±" in capsys.readouterr().out
  with np.load(tmp_path / "surfaces.npz") as grids:
    assert grids["none/loss"].shape == (3, 3)
    np.testing.assert_allclose(grids["none/alphas"], [-CFG.landscape_range, 0, CFG.landscape_range])
  assert (tmp_path / "surfaces.png").is_file()
  loaded = results.load_variables(tmp_path, "none")
  assert jax.tree.leaves(loaded)[0].shape[0] == 3


SHARDED = textwrap.dedent("""
  import json, sys
  import jax, numpy as np
  from jaxnorm import config, seeds
  cfg = config.TINY.replace(steps=8, landscape_points=3)
  mesh = seeds.seed_mesh()
  x = seeds.shard_seeds(np.arange(8.0), mesh)
  shares = sorted(s.data.shape[0] for s in x.addressable_shards)
  r = seeds.run(cfg, "layernorm", [0, 1, 2], chunk_size=4, progress=False)
  one = seeds.run(cfg, "layernorm", [0, 1, 2], chunk_size=4, progress=False,
                  mesh=seeds.seed_mesh(jax.devices()[:1]))
  json.dump({"devices": jax.device_count(), "shares": shares,
             "loss_diff": float(np.abs(r.losses - one.losses).max()),
             "landscape_diff": float(np.abs(r.landscape - one.landscape).max())}, sys.stdout)
""")


def test_sharded_over_host_devices_equals_one_device():
  env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
  proc = subprocess.run(
    [sys.executable, "-c", SHARDED], capture_output=True, text=True, env=env, timeout=600
  )
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert out["devices"] == 4
  assert out["shares"] == [2, 2, 2, 2]  # each device holds its share of the seed axis
  assert out["loss_diff"] < 1e-5 and out["landscape_diff"] < 1e-5
