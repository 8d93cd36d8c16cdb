"""Conversion between jaxnorm variables and the reference PyTorch model's `state_dict`.

jaxnorm's parameter tree mirrors the reference module tree, so each tensor has one
counterpart. Flax `Dense` kernels are (in, out), PyTorch `Linear` weights (out, in): they
are transposed, the fused attention projection included ((D, 3D) kernel <->
`in_proj_weight` (3D, D), rows q, k, v). BatchNorm's `batch_stats` `mean` / `var` are
PyTorch's `running_mean` / `running_var` (both store the unbiased variance).

Arrays cross as NumPy, so this module does not need PyTorch: load the result with
`{k: torch.from_numpy(v) for k, v in sd.items()}`; a PyTorch `state_dict()` can be passed
back as is (its tensors convert with `np.asarray`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxnorm import norms

PyTree = Any
BLOCK = "transformer_block"


def _param_table(norm: str) -> list[tuple[tuple[str, ...], str, bool]]:
  """(path in `params`, PyTorch name, transposed) for every parameter of the `norm` model;
  the norms' own parameters are named by their registry entry (`NormSpec.torch_params`)."""
  spec = norms.get(norm)
  table = [
    (("token_embeddings", "embedding"), "token_embeddings.weight", False),
    ((BLOCK, "attention", "in_proj", "kernel"), f"{BLOCK}.attention.in_proj_weight", True),
    ((BLOCK, "attention", "in_proj", "bias"), f"{BLOCK}.attention.in_proj_bias", False),
    ((BLOCK, "attention", "out_proj", "kernel"), f"{BLOCK}.attention.out_proj.weight", True),
    ((BLOCK, "attention", "out_proj", "bias"), f"{BLOCK}.attention.out_proj.bias", False),
    ((BLOCK, "ffn", "up", "kernel"), f"{BLOCK}.ffn.0.weight", True),
    ((BLOCK, "ffn", "up", "bias"), f"{BLOCK}.ffn.0.bias", False),
    ((BLOCK, "ffn", "down", "kernel"), f"{BLOCK}.ffn.2.weight", True),
    ((BLOCK, "ffn", "down", "bias"), f"{BLOCK}.ffn.2.bias", False),
  ]
  for i in (1, 2):
    for flax_name, torch_name in spec.torch_params:
      table.append(((BLOCK, f"norm{i}", flax_name), f"{BLOCK}.norm{i}.{torch_name}", False))
  table.append((("to_vocab", "kernel"), "to_vocab.weight", True))
  table.append((("to_vocab", "bias"), "to_vocab.bias", False))
  return table


def _stats_table(norm: str) -> list[tuple[tuple[str, ...], str]]:
  """(path in `batch_stats`, PyTorch buffer name) for the `norm` model's running statistics."""
  return [
    ((BLOCK, f"norm{i}", stat), f"{BLOCK}.norm{i}.{buffer}")
    for i in (1, 2)
    for stat, buffer in norms.get(norm).torch_buffers
  ]


def _counters(norm: str) -> list[str]:
  """PyTorch's `num_batches_tracked` buffers, which a norm with running statistics has."""
  return [f"{BLOCK}.norm{i}.num_batches_tracked" for i in (1, 2)] if _stats_table(norm) else []


def torch_names(norm: str, *, buffers: bool = True) -> list[str]:
  """The reference model's `state_dict` keys for `norm`, in jaxnorm's table order."""
  names = [name for _, name, _ in _param_table(norm)]
  if buffers:
    names += [name for _, name in _stats_table(norm)] + _counters(norm)
  return names


def _flatten(tree: PyTree) -> dict[tuple[str, ...], Any]:
  return traverse_util.flatten_dict(_as_dict(tree))


def _as_dict(tree: PyTree) -> dict:
  """Nested Mappings (FrozenDict included) as plain dicts, for flax.traverse_util."""
  if isinstance(tree, Mapping):
    return {k: _as_dict(v) for k, v in tree.items()}
  return tree


def _unflatten(flat: dict[tuple[str, ...], Any]) -> dict:
  return traverse_util.unflatten_dict(flat)


def _check_keys(what: str, got, expected, norm: str):
  got, expected = set(got), set(expected)
  if got != expected:
    missing = sorted(map(str, expected - got))
    unexpected = sorted(map(str, got - expected))
    raise ValueError(
      f"{what} does not match the {norm!r} model: missing {missing}, unexpected {unexpected}. "
      "Check the `norm` argument."
    )


def _numpy(x) -> np.ndarray:
  """A writable, contiguous float32 copy (torch.from_numpy warns on read-only arrays).

  `np.asarray` first: PyTorch tensors' `__array__` takes no `copy` argument.
  """
  return np.array(np.asarray(x), dtype=np.float32, copy=True, order="C")


def params_to_torch(params: PyTree, norm: str) -> dict[str, np.ndarray]:
  """A jaxnorm `params` tree (or anything shaped like it, e.g. a direction) as
  {PyTorch parameter name: array}, kernels transposed to (out, in)."""
  flat = _flatten(params)
  table = _param_table(norm)
  _check_keys("params", flat, [path for path, _, _ in table], norm)
  return {name: _numpy(flat[path].T if t else flat[path]) for path, name, t in table}


def params_from_torch(state_dict: dict[str, Any], norm: str) -> dict:
  """The inverse of `params_to_torch`; extra entries (buffers) are ignored. jnp arrays."""
  table = _param_table(norm)
  missing = [name for _, name, _ in table if name not in state_dict]
  if missing:
    raise ValueError(f"state_dict lacks {missing} for the {norm!r} model. Check `norm`.")
  flat = {}
  for path, name, t in table:
    value = _numpy(state_dict[name])
    flat[path] = jnp.asarray(value.T if t else value)
  return _unflatten(flat)


def to_torch(variables: PyTree, norm: str, *, num_batches_tracked: int = 0) -> dict[str, Any]:
  """jaxnorm variables {'params', 'batch_stats'} as a complete reference `state_dict` of
  NumPy arrays, loadable with `load_state_dict(..., strict=True)` after `torch.from_numpy`.

  jaxnorm does not count BatchNorm updates; `num_batches_tracked` (PyTorch uses it only
  when momentum=None) is set to the given value, e.g. the step count.
  """
  state_dict = params_to_torch(variables["params"], norm)
  flat_stats = _flatten(variables.get("batch_stats", {}))
  stats_table = _stats_table(norm)
  _check_keys("batch_stats", flat_stats, [path for path, _ in stats_table], norm)
  for path, name in stats_table:
    state_dict[name] = _numpy(flat_stats[path])
  for name in _counters(norm):
    state_dict[name] = np.array(num_batches_tracked, dtype=np.int64)
  return state_dict


def from_torch(state_dict: dict[str, Any], norm: str) -> dict:
  """A reference `state_dict` (NumPy arrays or PyTorch tensors) as jaxnorm variables."""
  _check_keys("state_dict", state_dict, torch_names(norm), norm)
  stats = {path: jnp.asarray(_numpy(state_dict[name])) for path, name in _stats_table(norm)}
  return {"params": params_from_torch(state_dict, norm), "batch_stats": _unflatten(stats)}
