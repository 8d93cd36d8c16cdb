"""Conversion to and from PyTorch state_dict names; needs no PyTorch (the names and shapes
are checked against the real module in test_parity.py)."""

import chex
import jax
import numpy as np
import pytest

from jaxnorm import config, data, model, norms, torch_compat

NORMS = sorted(norms.REGISTRY)


def _variables(norm, key, cfg=config.TINY):
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


def _deep(num_blocks=3, placement="post"):
  return config.TINY.replace(num_blocks=num_blocks, norm_placement=placement, num_classes=40)


def _layout(cfg):
  return {"num_blocks": cfg.num_blocks, "placement": cfg.norm_placement}


@pytest.mark.parametrize("placement", ["post", "pre"])
@pytest.mark.parametrize("norm", NORMS)
def test_deep_round_trip_is_exact(norm, placement, key):
  cfg = _deep(placement=placement)
  _, variables = _variables(norm, key, cfg)
  layout = _layout(cfg)
  state_dict = torch_compat.to_torch(variables, norm, num_batches_tracked=3, **layout)
  assert list(state_dict) == torch_compat.torch_names(norm, **layout)
  chex.assert_trees_all_equal(torch_compat.from_torch(state_dict, norm, **layout), variables)
  again = torch_compat.from_torch(state_dict, norm, **layout)
  chex.assert_trees_all_equal(
    torch_compat.to_torch(again, norm, num_batches_tracked=3, **layout), state_dict
  )
  direction = jax.tree.map(lambda p: p * 0 + 1, variables["params"])
  flat = torch_compat.params_to_torch(direction, norm, **layout)
  assert list(flat) == torch_compat.torch_names(norm, buffers=False, **layout)
  chex.assert_trees_all_equal(torch_compat.params_from_torch(flat, norm, **layout), direction)
  has_final = placement == "pre" and bool(norms.get(norm).torch_params)
  assert any(name.startswith("final_norm.") for name in state_dict) == has_final
  assert not any(name.startswith("transformer_block.") for name in state_dict)
  assert state_dict["to_vocab.weight"].shape == (40, cfg.embed_dim)


def test_deep_blocks_are_split_along_the_leading_axis(key):
  cfg = _deep(placement="pre")
  _, variables = _variables("batchnorm", key, cfg)
  state_dict = torch_compat.to_torch(variables, "batchnorm", num_batches_tracked=2, **_layout(cfg))
  blocks, d = variables["params"]["blocks"], cfg.embed_dim
  stats = variables["batch_stats"]["blocks"]
  for i in range(cfg.num_blocks):
    prefix = f"blocks.{i}."
    kernel = np.asarray(blocks["attention"]["in_proj"]["kernel"][i])
    np.testing.assert_array_equal(state_dict[prefix + "attention.in_proj_weight"], kernel.T)
    assert state_dict[prefix + "attention.in_proj_weight"].shape == (3 * d, d)
    down = np.asarray(blocks["ffn"]["down"]["kernel"][i])
    np.testing.assert_array_equal(state_dict[prefix + "ffn.2.weight"], down.T)
    scale = np.asarray(blocks["norm2"]["scale"][i])
    np.testing.assert_array_equal(state_dict[prefix + "norm2.weight"], scale)
    var = np.asarray(stats["norm1"]["var"][i])
    np.testing.assert_array_equal(state_dict[prefix + "norm1.running_var"], var)
    assert state_dict[prefix + "norm1.num_batches_tracked"] == 2
  final = variables["batch_stats"]["final_norm"]
  np.testing.assert_array_equal(state_dict["final_norm.running_mean"], final["mean"])
  np.testing.assert_array_equal(
    state_dict["final_norm.bias"], variables["params"]["final_norm"]["bias"]
  )
  assert state_dict["final_norm.num_batches_tracked"] == 2
  # Different blocks hold different arrays (the split does not repeat one block).
  w = [state_dict[f"blocks.{i}.attention.in_proj_weight"] for i in range(cfg.num_blocks)]
  assert not np.array_equal(w[0], w[1]) and not np.array_equal(w[1], w[2])


def test_wrong_layout_is_a_clear_error(key):
  cfg = _deep(placement="pre")
  _, variables = _variables("layernorm", key, cfg)
  with pytest.raises(ValueError, match=r"leading axis.*num_blocks=2.*Check `num_blocks`"):
    torch_compat.to_torch(variables, "layernorm", num_blocks=2, placement="pre")
  with pytest.raises(ValueError, match=r"missing \['transformer_block/attention.*Check the `norm`"):
    torch_compat.to_torch(variables, "layernorm", placement="pre")
  with pytest.raises(ValueError, match=r"unexpected \['final_norm/bias'.*`placement`"):
    torch_compat.to_torch(variables, "layernorm", num_blocks=3, placement="post")
  state_dict = torch_compat.to_torch(variables, "layernorm", **_layout(cfg))
  with pytest.raises(ValueError, match=r"missing \['blocks.3.attention.in_proj_bias'"):
    torch_compat.from_torch(state_dict, "layernorm", num_blocks=4, placement="pre")
  with pytest.raises(ValueError, match=r"unexpected \['blocks.2.attention.in_proj_bias'"):
    torch_compat.from_torch(state_dict, "layernorm", num_blocks=2, placement="pre")
  del state_dict["final_norm.weight"]
  with pytest.raises(ValueError, match=r"lacks \['final_norm.weight'\]"):
    torch_compat.params_from_torch(state_dict, "layernorm", num_blocks=3, placement="pre")
  for bad in ({"num_blocks": 0}, {"num_blocks": True}, {"placement": "middle"}):
    with pytest.raises(ValueError, match=f"{next(iter(bad))}=.* is invalid"):
      torch_compat.torch_names("layernorm", **bad)
