"""Conversion between jaxnorm variables and the reference PyTorch model's `state_dict`.

jaxnorm's parameter tree mirrors the reference module tree, so each tensor has one
counterpart. Flax `Dense` kernels are (in, out), PyTorch `Linear` weights (out, in): they
are transposed, the fused attention projection included ((D, 3D) kernel <->
`in_proj_weight` (3D, D), rows q, k, v). BatchNorm's `batch_stats` `mean` / `var` are
PyTorch's `running_mean` / `running_var` (both store the unbiased variance).

The layout follows the model (`Config.num_blocks`, `Config.norm_placement`), which the
caller states, as it states the norm (`num_blocks=cfg.num_blocks,
placement=cfg.norm_placement`; the defaults are the reference's one post-norm block):

| jaxnorm                                         | PyTorch (`torch_reference`)           |
|-------------------------------------------------|---------------------------------------|
| one block: `transformer_block/...`              | `transformer_block.*` (both models)   |
| N > 1 blocks: `blocks/...`, leading axis N      | `blocks.{i}.*`, i = 0 .. N - 1        |
| pre-norm: `final_norm/...`                      | `final_norm.*`                        |
| `to_vocab` (D, C), C = num_classes or V         | `to_vocab.weight` (C, D)              |

The layout is an argument rather than guessed from the arrays because the arrays cannot
always tell: a pre-norm model whose norm has no parameters (none, l2) has no `final_norm`
entry, and a state_dict that lost a block or its final norm would otherwise pass for
another model. Arrays of another layout are refused with a ValueError naming what is
missing and unexpected.

Arrays cross as NumPy, so this module does not need PyTorch: load the result with
`{k: torch.from_numpy(v) for k, v in sd.items()}`; a PyTorch `state_dict()` can be passed
back as is (its tensors convert with `np.asarray`).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxnorm import norms

PyTree = Any
BLOCK = "transformer_block"  # the one block's name in both frameworks
BLOCKS = "blocks"  # the stacked blocks (jaxnorm) and the ModuleList (PyTorch)
PLACEMENTS = ("post", "pre")


class Entry(NamedTuple):
  """One PyTorch tensor: its path in the jaxnorm tree, its name, whether it is transposed,
  and for stacked blocks its index along the leading block axis (None otherwise)."""

  path: tuple[str, ...]
  name: str
  transposed: bool = False
  block: int | None = None


def _check_layout(num_blocks: int, placement: str) -> None:
  if isinstance(num_blocks, bool) or not isinstance(num_blocks, numbers.Integral) or num_blocks < 1:
    raise ValueError(f"num_blocks={num_blocks!r} is invalid: must be an integer >= 1")
  if placement not in PLACEMENTS:
    raise ValueError(f"placement={placement!r} is invalid: choose from {list(PLACEMENTS)}")


# (path inside a module, PyTorch name inside it, transposed) for each tensor of a module.
Rows = list[tuple[tuple[str, ...], str, bool]]

ATTENTION_FFN: Rows = [
  (("attention", "in_proj", "kernel"), "attention.in_proj_weight", True),
  (("attention", "in_proj", "bias"), "attention.in_proj_bias", False),
  (("attention", "out_proj", "kernel"), "attention.out_proj.weight", True),
  (("attention", "out_proj", "bias"), "attention.out_proj.bias", False),
  (("ffn", "up", "kernel"), "ffn.0.weight", True),
  (("ffn", "up", "bias"), "ffn.0.bias", False),
  (("ffn", "down", "kernel"), "ffn.2.weight", True),
  (("ffn", "down", "bias"), "ffn.2.bias", False),
]


def _in_norm(pairs: tuple[tuple[str, str], ...]) -> Rows:
  """A norm layer's rows from its registry pairs (`NormSpec.torch_params` or `torch_buffers`)."""
  return [((flax_name,), torch_name, False) for flax_name, torch_name in pairs]


def _layout(block: Rows, norm: Rows, num_blocks: int, placement: str) -> list[Entry]:
  """The rows of every block (`block`: those inside one, its two norms' included), then
  those of the final norm (`norm`: those inside one norm layer; pre-norm only)."""
  block = block + [((f"norm{i}", *p), f"norm{i}.{n}", t) for i in (1, 2) for p, n, t in norm]
  if num_blocks == 1:
    rows = [Entry((BLOCK, *path), f"{BLOCK}.{name}", t) for path, name, t in block]
  else:
    rows = [
      Entry((BLOCKS, *path), f"{BLOCKS}.{i}.{name}", t, i)
      for i in range(num_blocks)
      for path, name, t in block
    ]
  if placement == "pre":
    rows += [Entry(("final_norm", *path), f"final_norm.{name}", t) for path, name, t in norm]
  return rows


def _param_table(norm: str, num_blocks: int = 1, placement: str = "post") -> list[Entry]:
  """Every parameter of the model: embedding, blocks, final norm, readout."""
  return [
    Entry(("token_embeddings", "embedding"), "token_embeddings.weight"),
    *_layout(ATTENTION_FFN, _in_norm(norms.get(norm).torch_params), num_blocks, placement),
    Entry(("to_vocab", "kernel"), "to_vocab.weight", True),
    Entry(("to_vocab", "bias"), "to_vocab.bias"),
  ]


def _stats_table(norm: str, num_blocks: int = 1, placement: str = "post") -> list[Entry]:
  """(path in `batch_stats`, PyTorch buffer name) of the model's running statistics."""
  return _layout([], _in_norm(norms.get(norm).torch_buffers), num_blocks, placement)


def _counters(norm: str, num_blocks: int = 1, placement: str = "post") -> list[str]:
  """PyTorch's `num_batches_tracked` buffers, one per norm layer with running statistics."""
  if not norms.get(norm).torch_buffers:
    return []
  counter = [((), "num_batches_tracked", False)]
  return [row.name for row in _layout([], counter, num_blocks, placement)]


def torch_names(
  norm: str, *, buffers: bool = True, num_blocks: int = 1, placement: str = "post"
) -> list[str]:
  """The reference model's `state_dict` keys for `norm` (and the layout), in jaxnorm's
  table order: parameters, then running statistics, then counters."""
  _check_layout(num_blocks, placement)
  names = [row.name for row in _param_table(norm, num_blocks, placement)]
  if buffers:
    names += [row.name for row in _stats_table(norm, num_blocks, placement)]
    names += _counters(norm, num_blocks, placement)
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


def _model(norm: str, num_blocks: int, placement: str) -> str:
  return f"{norm!r} model with num_blocks={num_blocks}, placement={placement!r}"


def _key(key: str | tuple[str, ...]) -> str:
  """A state_dict name as is, a tree path as "a/b/c"."""
  return "/".join(key) if isinstance(key, tuple) else str(key)


def _check_keys(what: str, got, expected, norm: str, num_blocks: int, placement: str):
  got, expected = set(got), set(expected)
  if got != expected:
    missing = sorted(map(_key, expected - got))
    unexpected = sorted(map(_key, got - expected))
    raise ValueError(
      f"{what} does not match the {_model(norm, num_blocks, placement)}: missing {missing}, "
      f"unexpected {unexpected}. Check the `norm` argument, and `num_blocks` and `placement` "
      "(Config.num_blocks, Config.norm_placement)."
    )


def _check_stacked(
  what: str, flat: dict, table: list[Entry], norm: str, num_blocks: int, placement: str
):
  """Every stacked leaf has `num_blocks` entries along its leading axis."""
  for row in table:
    if row.block == 0 and np.shape(flat[row.path])[:1] != (num_blocks,):
      raise ValueError(
        f"{what} {'/'.join(row.path)} has shape {np.shape(flat[row.path])}, not "
        f"{num_blocks} blocks along its leading axis as the "
        f"{_model(norm, num_blocks, placement)}. Check `num_blocks` (Config.num_blocks)."
      )


def _numpy(x) -> np.ndarray:
  """A writable, contiguous float32 copy (torch.from_numpy warns on read-only arrays).

  `np.asarray` first: PyTorch tensors' `__array__` takes no `copy` argument.
  """
  return np.array(np.asarray(x), dtype=np.float32, copy=True, order="C")


def _to_torch(flat: dict, row: Entry) -> np.ndarray:
  value = flat[row.path] if row.block is None else np.asarray(flat[row.path])[row.block]
  return _numpy(value.T if row.transposed else value)


def _from_torch(state_dict: Mapping[str, Any], table: list[Entry]) -> dict:
  """{path: jnp array} from the PyTorch entries of `table`; stacked blocks' entries are
  stacked along a new leading axis, in block order."""
  parts: dict[tuple[str, ...], list[np.ndarray]] = {}
  for row in table:
    value = _numpy(state_dict[row.name])
    parts.setdefault(row.path, []).append(value.T if row.transposed else value)
  stacked = {row.path for row in table if row.block is not None}
  return {
    path: jnp.asarray(np.stack(values) if path in stacked else values[0])
    for path, values in parts.items()
  }


def params_to_torch(
  params: PyTree, norm: str, *, num_blocks: int = 1, placement: str = "post"
) -> dict[str, np.ndarray]:
  """A jaxnorm `params` tree (or anything shaped like it, e.g. a direction) as
  {PyTorch parameter name: array}, kernels transposed to (out, in), stacked blocks split."""
  _check_layout(num_blocks, placement)
  flat = _flatten(params)
  table = _param_table(norm, num_blocks, placement)
  _check_keys("params", flat, {row.path for row in table}, norm, num_blocks, placement)
  _check_stacked("params", flat, table, norm, num_blocks, placement)
  return {row.name: _to_torch(flat, row) for row in table}


def params_from_torch(
  state_dict: Mapping[str, Any], norm: str, *, num_blocks: int = 1, placement: str = "post"
) -> dict:
  """The inverse of `params_to_torch`; extra entries (buffers) are ignored. jnp arrays."""
  _check_layout(num_blocks, placement)
  table = _param_table(norm, num_blocks, placement)
  missing = [row.name for row in table if row.name not in state_dict]
  if missing:
    raise ValueError(
      f"state_dict lacks {missing} for the {_model(norm, num_blocks, placement)}. Check "
      "`norm`, `num_blocks` and `placement`."
    )
  return _unflatten(_from_torch(state_dict, table))


def to_torch(
  variables: PyTree,
  norm: str,
  *,
  num_batches_tracked: int = 0,
  num_blocks: int = 1,
  placement: str = "post",
) -> dict[str, Any]:
  """jaxnorm variables {'params', 'batch_stats'} as a complete reference `state_dict` of
  NumPy arrays, loadable with `load_state_dict(..., strict=True)` after `torch.from_numpy`.

  jaxnorm does not count BatchNorm updates; `num_batches_tracked` (PyTorch uses it only
  when momentum=None) is set to the given value, e.g. the step count.
  """
  layout = dict(num_blocks=num_blocks, placement=placement)
  state_dict = params_to_torch(variables["params"], norm, **layout)
  flat_stats = _flatten(variables.get("batch_stats", {}))
  stats_table = _stats_table(norm, **layout)
  _check_keys("batch_stats", flat_stats, {row.path for row in stats_table}, norm, **layout)
  _check_stacked("batch_stats", flat_stats, stats_table, norm, **layout)
  for row in stats_table:
    state_dict[row.name] = _to_torch(flat_stats, row)
  for name in _counters(norm, **layout):
    state_dict[name] = np.array(num_batches_tracked, dtype=np.int64)
  return state_dict


def from_torch(
  state_dict: Mapping[str, Any], norm: str, *, num_blocks: int = 1, placement: str = "post"
) -> dict:
  """A reference `state_dict` (NumPy arrays or PyTorch tensors) as jaxnorm variables."""
  layout = dict(num_blocks=num_blocks, placement=placement)
  _check_keys("state_dict", state_dict, torch_names(norm, **layout), norm, **layout)
  stats = _from_torch(state_dict, _stats_table(norm, **layout))
  return {"params": params_from_torch(state_dict, norm, **layout), "batch_stats": _unflatten(stats)}
