"""Conversion to and from PyTorch state_dict names; needs no PyTorch (the names and shapes
are checked against the real module in test_parity.py)."""

import chex
import jax
import numpy as np
import pytest

from jaxnorm import config, data, model, norms, torch_compat

NORMS = sorted(norms.REGISTRY)


def _variables(norm, key):
  cfg = config.TINY
  m = model.build(cfg, norm)
  tokens, _ = data.batch(key, cfg)
  variables = m.init(key, tokens, train=False)
  variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
  if variables["batch_stats"]:  # BatchNorm: non-trivial running statistics
    _, updates = m.apply(variables, tokens, train=True, mutable=["batch_stats"])
    variables = {"params": variables["params"], "batch_stats": updates["batch_stats"]}
  return cfg, variables


@pytest.mark.parametrize("norm", NORMS)
def test_round_trip_is_exact(norm, key):
  cfg, variables = _variables(norm, key)
  state_dict = torch_compat.to_torch(variables, norm, num_batches_tracked=3)
  assert list(state_dict) == torch_compat.torch_names(norm)
  chex.assert_trees_all_equal(torch_compat.from_torch(state_dict, norm), variables)
  again = torch_compat.from_torch(state_dict, norm)
  chex.assert_trees_all_equal(torch_compat.to_torch(again, norm, num_batches_tracked=3), state_dict)
  d, v = cfg.embed_dim, cfg.vocab_size
  assert state_dict["token_embeddings.weight"].shape == (v, d)
  assert state_dict["transformer_block.attention.in_proj_weight"].shape == (3 * d, d)
  assert state_dict["transformer_block.ffn.0.weight"].shape == (4 * d, d)
  assert state_dict["to_vocab.weight"].shape == (v, d)
  assert all(a.flags.writeable and a.flags.c_contiguous for a in state_dict.values())


def test_kernels_are_transposed_and_qkv_rows_stacked(key):
  _, variables = _variables("layernorm", key)
  d = config.TINY.embed_dim
  state_dict = torch_compat.to_torch(variables, "layernorm")
  kernel = np.asarray(variables["params"]["transformer_block"]["attention"]["in_proj"]["kernel"])
  w = state_dict["transformer_block.attention.in_proj_weight"]
  for i in range(3):  # rows [i D, (i + 1) D) of PyTorch's weight are q, k, v
    np.testing.assert_array_equal(w[i * d : (i + 1) * d], kernel[:, i * d : (i + 1) * d].T)
  up = np.asarray(variables["params"]["transformer_block"]["ffn"]["up"]["kernel"])
  np.testing.assert_array_equal(state_dict["transformer_block.ffn.0.weight"], up.T)


def test_batch_stats_map_to_running_buffers(key):
  _, variables = _variables("batchnorm", key)
  state_dict = torch_compat.to_torch(variables, "batchnorm", num_batches_tracked=5)
  stats = variables["batch_stats"]["transformer_block"]
  for i in (1, 2):
    prefix = f"transformer_block.norm{i}."
    np.testing.assert_array_equal(state_dict[prefix + "running_mean"], stats[f"norm{i}"]["mean"])
    np.testing.assert_array_equal(state_dict[prefix + "running_var"], stats[f"norm{i}"]["var"])
    assert state_dict[prefix + "num_batches_tracked"] == 5
    assert state_dict[prefix + "num_batches_tracked"].dtype == np.int64


@pytest.mark.parametrize("norm", NORMS)
def test_params_only_conversion_for_directions(norm, key):
  _, variables = _variables(norm, key)
  direction = jax.tree.map(lambda p: p * 0 + 1, variables["params"])
  flat = torch_compat.params_to_torch(direction, norm)
  assert list(flat) == torch_compat.torch_names(norm, buffers=False)
  chex.assert_trees_all_equal(torch_compat.params_from_torch(flat, norm), direction)


def test_wrong_norm_is_a_clear_error(key):
  _, variables = _variables("layernorm", key)
  with pytest.raises(ValueError, match="Check the `norm` argument"):
    torch_compat.to_torch(variables, "batchnorm")
  state_dict = torch_compat.to_torch(variables, "layernorm")
  with pytest.raises(ValueError, match="Check the `norm` argument"):
    torch_compat.from_torch(state_dict, "none")
