"""Saving an `ExperimentResult` to a folder and loading it back, atomically per file.

A run folder holds:
  results.npz            per normalization N, every per-seed array with its seed axis S:
                         N/seeds (S,), N/loss (S, steps), N/alphas (P,), N/offsets (P,),
                         N/landscape (S, P), N/base_loss (S,), N/spectrum (S, K),
                         N/first_nonfinite_step (S,), N/measure/<name> (S,) for every
                         analyzed measure, N/surface_grid (A,) and N/surface (S, A, A)
                         when a 2D slice was taken.
  summary.json           `summary.summary_dict`: config, every measure across seeds, wall
                         times, versions, device ("format": 2).
  variables_N.msgpack    trained {'params', 'batch_stats'} of N, leaves (S, ...)
                         (flax.serialization).

Each file is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file nor replaces a previous run's file with a
partial one. `load` also reads folders written before format 2 (no seed axis for one
seed, measures only in summary.json).
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import numpy as np

from jaxnorm import measures, summary
from jaxnorm.config import Config
from jaxnorm.pipeline import ExperimentResult, ExperimentSpec, NormResult

RESULTS = "results.npz"
SUMMARY = "summary.json"


class ResultsError(ValueError):
  """A folder that holds no results jaxnorm can read; the message says why."""


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


def arrays(r: NormResult) -> dict[str, np.ndarray]:
  """results.npz's arrays of one normalization (keys without the `N/` prefix)."""
  out = {
    "seeds": r.seeds,
    "loss": r.losses,
    "alphas": r.alphas,
    "offsets": r.offsets,
    "landscape": r.landscape,
    "base_loss": r.base_loss,
    "spectrum": r.spectrum,
    "first_nonfinite_step": r.first_nonfinite_step,
    **{f"measure/{name}": values for name, values in r.measures.items()},
  }
  if r.surface is not None:
    out.update(surface_grid=r.surface_grid, surface=r.surface)
  return out


def save(out_dir: str | os.PathLike, result: ExperimentResult) -> None:
  """Writes results.npz, summary.json and one variables file per normalization."""
  out = Path(out_dir)
  flat = {
    f"{norm}/{name}": np.asarray(value)
    for norm, r in result.norms.items()
    for name, value in arrays(r).items()
  }
  for norm, r in result.norms.items():
    if r.variables is not None:
      payload = flax.serialization.to_bytes(jax.device_get(r.variables))
      atomic_write(out / variables_file(norm), lambda f, b=payload: f.write(b))
  atomic_write(out / RESULTS, lambda f: np.savez(f, **flat))
  text = json.dumps(summary.summary_dict(result), indent=2, allow_nan=False).encode()
  atomic_write(out / SUMMARY, lambda f: f.write(text))


def load(out_dir: str | os.PathLike) -> ExperimentResult:
  """The result saved in `out_dir` (without variables: see `load_variables`).

  Raises ResultsError, with a one-line reason, for a folder without results or with
  files jaxnorm cannot read.
  """
  out = Path(out_dir)
  missing = [name for name in (RESULTS, SUMMARY) if not (out / name).is_file()]
  if missing:
    raise ResultsError(f"{out} holds no saved results (missing {', '.join(missing)})")
  try:
    info = json.loads((out / SUMMARY).read_text())
    with np.load(out / RESULTS) as npz:
      flat = {key: npz[key] for key in npz.files}
    return _result(info, flat)
  except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
    raise ResultsError(f"{out} holds results jaxnorm cannot read ({type(e).__name__}: {e})") from e


def _result(info: dict[str, Any], flat: dict[str, np.ndarray]) -> ExperimentResult:
  by_norm: dict[str, dict[str, np.ndarray]] = {}
  for key, value in flat.items():
    norm, name = key.split("/", 1)
    by_norm.setdefault(norm, {})[name] = value
  cfg = config_from_dict(info["config"])
  num_seeds = int(info.get("seeds", 1))
  legacy = info.get("format", 1) < summary.FORMAT
  norms = {}
  for norm, a in by_norm.items():
    entry = info["norms"][norm]
    if legacy:
      a = _from_format_1(a, entry, num_seeds, cfg.seed)
    surface = a.get("surface")
    norms[norm] = NormResult(
      norm=norm,
      learning_rate=float(entry.get("learning_rate", cfg.learning_rate_for(norm))),
      seeds=a["seeds"],
      losses=a["loss"],
      alphas=a["alphas"],
      offsets=a["offsets"],
      landscape=a["landscape"],
      base_loss=a["base_loss"],
      spectrum=a["spectrum"],
      measures={k.split("/", 1)[1]: v for k, v in a.items() if k.startswith("measure/")},
      surface_grid=a.get("surface_grid"),
      surface=surface,
      variables=None,
      first_nonfinite_step=a["first_nonfinite_step"],
      seconds=dict(entry.get("seconds", {})),
    )
  spec = ExperimentSpec(
    config=cfg,
    num_seeds=num_seeds,
    name=info.get("experiment", "exp2"),
    title=info.get("title", ExperimentSpec.title),
    measures=measures.MeasureConfig() if any(r.measures for r in norms.values()) else None,
  )
  seconds = float(info.get("seconds", {}).get("total", 0.0))
  return ExperimentResult(spec, norms, seconds, info.get("environment", {}))


def _from_format_1(
  a: dict[str, np.ndarray], entry: dict[str, Any], num_seeds: int, first_seed: int
) -> dict[str, np.ndarray]:
  """A format-1 folder's arrays in format 2: the seed axis was dropped for one seed, the
  loss at alpha = 0 and the measures lived in summary.json only."""
  a = dict(a)
  if num_seeds == 1:
    a.update({k: a[k][None] for k in ("loss", "landscape", "spectrum")})

  def per_seed(value) -> np.ndarray:
    if isinstance(value, dict):
      value = value["values"]
    values = value if isinstance(value, list) else [value]
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)

  a["seeds"] = np.asarray(entry.get("seeds", [first_seed + i for i in range(num_seeds)]))
  a["base_loss"] = per_seed(entry["loss_at_alpha0"])
  steps = entry.get("first_nonfinite_step")
  steps = steps if isinstance(steps, list) else [steps]
  a["first_nonfinite_step"] = np.array([-1 if s is None else s for s in steps])
  for name, value in entry.get("measures", {}).items():
    a[f"measure/{name}"] = per_seed(value)
  return a


def load_variables(out_dir: str | os.PathLike, norm: str) -> dict:
  """The trained {'params', 'batch_stats'} of `norm`, nested dicts of numpy arrays with a
  leading seed axis (format 2; a format-1 folder of one seed has none)."""
  raw = (Path(out_dir) / variables_file(norm)).read_bytes()
  restored = flax.serialization.msgpack_restore(raw)
  return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}


def config_from_dict(fields: dict[str, Any]) -> Config:
  """Inverse of `summary.config_to_dict` after a JSON round trip (lists back to tuples)."""

  def as_tuple(v):
    return tuple(as_tuple(x) for x in v) if isinstance(v, list) else v

  known = Config.__dataclass_fields__
  return Config(**{k: as_tuple(v) for k, v in fields.items() if k in known})
