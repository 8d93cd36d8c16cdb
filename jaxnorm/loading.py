"""Reading a run folder back: `load` (an `ExperimentResult`), `load_variables` (one
model's trained variables), `load_sweep`, and `config_from_dict`; the folder's layout is
`jaxnorm.results`' (its one writer), which gives these names too.

Each file is checked against run.json before it is read (`manifests.verify`); anything
that cannot be read raises `ResultsError` with a one-line reason. Folders written before
format 2 (no seed axis for one seed, measures only in summary.json), before manifests,
and before the layer-wise dissection (no layer arrays: `layer_spectra` and
`layer_measures` are None) are read too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import flax.serialization
import numpy as np

from jaxnorm import families as families_lib
from jaxnorm import manifests, predictions, runfolder, summary
from jaxnorm.config import Config
from jaxnorm.families import MeasureConfig
from jaxnorm.result import ExperimentResult, Matched, NormResult, SweepResult
from jaxnorm.spec import ExperimentSpec

RESULTS = "results.npz"
SUMMARY = "summary.json"


class ResultsError(ValueError):
  """A folder that holds no results jaxnorm can read; the message says why."""


def variables_file(norm: str) -> str:
  return f"variables_{norm}.msgpack"


def load(out_dir: str | os.PathLike, *, variables: bool = False) -> ExperimentResult:
  """The result saved in `out_dir`; with `variables`, each model's trained variables too
  (as `load_variables`; else `NormResult.variables` is None).

  Raises ResultsError, with a one-line reason, for a folder without results, with files
  that are not the ones its run.json lists, or with files jaxnorm cannot read.
  """
  out = Path(out_dir)
  missing = [name for name in (RESULTS, SUMMARY) if not (out / name).is_file()]
  if missing:
    raise ResultsError(f"{out} holds no saved results (missing {', '.join(missing)})")
  try:
    manifests.verify(out, (RESULTS, SUMMARY))
  except runfolder.RunFolderError as e:
    raise ResultsError(str(e)) from None
  try:
    info = json.loads((out / SUMMARY).read_text())
    with np.load(out / RESULTS) as npz:
      flat = {key: npz[key] for key in npz.files}
    result = _result(info, flat)
  except Exception as e:  # any failure to parse files from outside is the folder's fault
    raise ResultsError(f"{out} holds results jaxnorm cannot read ({type(e).__name__}: {e})") from e
  if variables:
    norms = {n: r._replace(variables=load_variables(out, n)) for n, r in result.norms.items()}
    result = result._replace(norms=norms)
  return result


def _predictions(info: dict[str, Any], name: str) -> tuple[predictions.Prediction, ...]:
  """The run's own predictions; a folder written before summary.json recorded them was
  written by the experiment script of its name, with that script's predictions."""
  if "predictions" in info:
    return tuple(predictions.from_dict(p) for p in info["predictions"])
  return predictions.BY_NAME[name].predictions if name in predictions.BY_NAME else ()


def _measure_config(info: dict[str, Any], measured: bool) -> MeasureConfig | None:
  """The run's measure families and estimator settings; a folder from before summary.json
  recorded them took today's defaults and every family (the only choice then)."""
  saved = info.get("measure_config", {} if measured else None)
  return None if saved is None else MeasureConfig(**{"families": families_lib.FAMILIES, **saved})


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
      matched=_matched(a),
      trajectory_steps=a.get("trajectory_steps"),
      trajectory=a.get("trajectory"),
      hessian_density=(a["hessian_density_nodes"], a["hessian_density_weights"])
      if "hessian_density_nodes" in a
      else None,
      layer_spectra=a.get("layer_spectra"),
      layer_measures=_layer_measures(a, ""),
      epoch_accuracy=a.get("epoch_accuracy"),
    )
  for norm, r in norms.items():  # summary.json against results.npz
    if len(r.seeds) != num_seeds or r.losses.shape[0] != num_seeds:
      raise ValueError(
        f"summary.json says {num_seeds} seeds, results.npz holds {norm}'s {len(r.seeds)}"
      )
  if info.get("measure_config", {}) is None and any(r.measures for r in norms.values()):
    raise ValueError("summary.json says the run was not measured, results.npz holds measures")
  levels = tuple(float(m["level"]) for m in info.get("matched", []))
  name = info.get("experiment", "exp2")
  spec = ExperimentSpec(
    matched_losses=levels,
    config=cfg,
    num_seeds=num_seeds,
    name=name,
    title=info.get("title", ExperimentSpec.title),
    measures=_measure_config(info, measured=any(r.measures for r in norms.values())),
    analysis_dtype=info.get("analysis_dtype", "float32"),
    surface_points=info.get("surface_points"),
    # Before summary.json recorded it: 2 Lanczos steps or more where a trajectory was kept.
    curvature_iterations=info.get(
      "curvature_iterations", 2 if any(r.trajectory is not None for r in norms.values()) else 0
    ),
    chunk_size=info.get("chunk_size", ExperimentSpec.chunk_size),
    predictions=_predictions(info, name),
  )
  seconds = float(info.get("seconds", {}).get("total", 0.0))
  return ExperimentResult(spec, norms, seconds, info.get("environment", {}))


def _matched(a: dict[str, np.ndarray]) -> tuple[Matched, ...]:
  """The `Matched` analyses among one normalization's arrays (keys matched/<i>/...)."""
  count = len({k.split("/")[1] for k in a if k.startswith("matched/")})
  out = []
  for i in range(count):
    p = f"matched/{i}/"
    out.append(
      Matched(
        level=float(a[p + "level"]),
        step=a[p + "step"],
        landscape=a[p + "landscape"],
        base_loss=a[p + "base_loss"],
        spectrum=a[p + "spectrum"],
        measures={
          k[len(p + "measure/") :]: v for k, v in a.items() if k.startswith(p + "measure/")
        },
        layer_spectra=a.get(p + "layer_spectra"),
        layer_measures=_layer_measures(a, p),
      )
    )
  return tuple(out)


def _layer_measures(a: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray] | None:
  """The layer measures among one normalization's arrays (keys <prefix>layer_measure/...):
  {} for a run without them, None for a folder from before the layer-wise dissection
  (no <prefix>layer_spectra)."""
  if prefix + "layer_spectra" not in a:
    return None
  start = prefix + "layer_measure/"
  return {k[len(start) :]: v for k, v in a.items() if k.startswith(start)}


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
  leading seed axis (format 2; a format-1 folder of one seed has none). Raises
  ResultsError if the file is missing, not the one run.json lists, or unreadable."""
  if not isinstance(norm, str) or not norm or Path(norm).name != norm or norm in (".", ".."):
    raise ResultsError(f"{norm!r} is not the name of a normalization (e.g. 'layernorm')")
  path = Path(out_dir) / variables_file(norm)
  try:
    manifests.verify(out_dir, (path.name,))
    restored = flax.serialization.msgpack_restore(path.read_bytes())
    return {"params": restored["params"], "batch_stats": restored.get("batch_stats", {})}
  except runfolder.RunFolderError as e:
    raise ResultsError(str(e)) from None
  except Exception as e:
    raise ResultsError(f"{path} is not a variables file jaxnorm can read ({e})") from e


def config_from_dict(fields: dict[str, Any]) -> Config:
  """Inverse of `summary.config_to_dict` after a JSON round trip (lists back to tuples)."""

  def as_tuple(v):
    return tuple(as_tuple(x) for x in v) if isinstance(v, list) else v

  known = Config.__dataclass_fields__
  return Config(**{k: as_tuple(v) for k, v in fields.items() if k in known})


def load_sweep(sweep_folder: str | os.PathLike, *, variables: bool = False) -> SweepResult:
  """The sweep saved in `sweep_folder` (sweep.json and one run folder per rate; with
  `variables`, the trained variables too), each file checked against its run.json.
  Raises ResultsError with a one-line reason."""
  sweep_folder = Path(sweep_folder)
  try:
    manifests.verify(sweep_folder, ("sweep.json",))
  except runfolder.RunFolderError as e:
    raise ResultsError(str(e)) from None
  try:
    info = json.loads((sweep_folder / "sweep.json").read_text())
    rates, folders = tuple(info["rates"]), info["folders"]
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ResultsError(f"{sweep_folder} holds no sweep jaxnorm can read ({e})") from None
  return SweepResult(rates, tuple(load(sweep_folder / f, variables=variables) for f in folders))
