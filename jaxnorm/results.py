"""Saving and reloading an experiment's results, atomically.

An output folder holds:
  results.npz            per normalization N: N/loss (steps,), N/alphas (P,), N/offsets (P,),
                         N/landscape (P,), N/spectrum (D,); with several seeds each array has
                         a leading seed axis.
  summary.json           the config, per-normalization scalars, wall times, versions, device.
  variables_N.msgpack    trained {'params', 'batch_stats'} of N (flax.serialization).

Each file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file nor replaces a previous run's file with
a partial one.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax
import flax.serialization
import jax
import numpy as np

from jaxnorm.config import Config

RESULTS = "results.npz"
SUMMARY = "summary.json"
ARRAYS = ("loss", "alphas", "offsets", "landscape", "spectrum")


def atomic_write(path: Path, write: Callable[[io.BufferedWriter], None]) -> None:
  """Writes `path` through a temporary file in the same folder and an atomic rename."""
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  try:
    with os.fdopen(fd, "wb") as f:
      write(f)
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise


def variables_file(norm: str) -> str:
  return f"variables_{norm}.msgpack"


def environment() -> dict[str, Any]:
  """Versions and the device the run used."""
  device = jax.devices()[0]
  return {
    "jax": jax.__version__,
    "flax": flax.__version__,
    "numpy": np.__version__,
    "platform": device.platform,
    "device": device.device_kind,
    "device_count": jax.device_count(),
  }


def save(
  out_dir: str | os.PathLike,
  arrays: dict[str, dict[str, np.ndarray]],
  summary: dict[str, Any],
  variables: dict[str, dict] | None = None,
) -> None:
  """Writes results.npz, summary.json and one variables file per normalization."""
  out = Path(out_dir)
  flat = {
    f"{norm}/{name}": np.asarray(value)
    for norm, named in arrays.items()
    for name, value in named.items()
  }
  for norm, tree in (variables or {}).items():
    payload = flax.serialization.to_bytes(jax.device_get(tree))
    atomic_write(out / variables_file(norm), lambda f, b=payload: f.write(b))
  atomic_write(out / RESULTS, lambda f: np.savez(f, **flat))
  text = json.dumps(summary, indent=2, allow_nan=False).encode()
  atomic_write(out / SUMMARY, lambda f: f.write(text))


def load(out_dir: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
  """(arrays per normalization, summary) as written by `save`."""
  out = Path(out_dir)
  missing = [name for name in (RESULTS, SUMMARY) if not (out / name).is_file()]
  if missing:
    raise FileNotFoundError(f"{out} holds no saved results (missing {', '.join(missing)})")
  arrays: dict[str, dict[str, np.ndarray]] = {}
  with np.load(out / RESULTS) as npz:
    for key in npz.files:
      norm, name = key.split("/", 1)
      arrays.setdefault(norm, {})[name] = npz[key]
  summary = json.loads((out / SUMMARY).read_text())
  return arrays, summary


def load_variables(out_dir: str | os.PathLike, norm: str) -> dict:
  """The trained {'params', 'batch_stats'} of `norm`, as nested dicts of numpy arrays."""
  raw = (Path(out_dir) / variables_file(norm)).read_bytes()
  restored = flax.serialization.msgpack_restore(raw)
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def config_to_dict(cfg: Config) -> dict[str, Any]:
  return {field: getattr(cfg, field) for field in cfg.__dataclass_fields__}


def config_from_dict(fields: dict[str, Any]) -> Config:
  """Inverse of `config_to_dict` after a JSON round trip (lists back to tuples)."""

  def as_tuple(v):
    return tuple(as_tuple(x) for x in v) if isinstance(v, list) else v

  return Config(**{k: as_tuple(v) for k, v in fields.items()})
