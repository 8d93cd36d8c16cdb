"""Saving an `ExperimentResult` to a run folder and loading it back.

A run folder holds:
  results.npz            per normalization N, every per-seed array with its seed axis S:
                         N/seeds (S,), N/loss (S, steps), N/alphas (P,), N/offsets (P,),
                         N/landscape (S, P), N/base_loss (S,), N/spectrum (S, K),
                         N/first_nonfinite_step (S,), N/measure/<name> (S,) for every
                         analyzed measure, N/surface_grid (A,) and N/surface (S, A, A)
                         when a 2D slice was taken; N/hessian_density_nodes and
                         N/hessian_density_weights (S, m) with measures;
                         N/trajectory_steps (C,) and N/trajectory (S, C, 2) (lambda_max,
                         preconditioned sharpness) when tracked;
                         N/layer_spectra (S, N + 1, K) (the layer-wise dissection:
                         every depth's singular values) and N/layer_measure/<name>
                         (S, N + 1) or (S, N) for every layer measure
                         (`families.LAYER_FAMILY_MEASURES`); per matched-loss level i
                         (`result.Matched`) N/matched/<i>/{level, step (S,),
                         landscape (S, P), base_loss (S,), spectrum (S, K),
                         measure/<name> (S,), layer_spectra (S, N + 1, K),
                         layer_measure/<name>}; N/epoch_accuracy (S, E) on a text data
                         set (each epoch's running training accuracy).
  summary.json           `summary.summary_dict`: config, every measure across seeds, wall
                         times, versions, device ("format": 2).
  variables_N.msgpack    trained {'params', 'batch_stats'} of N, leaves (S, ...)
                         (flax.serialization).
  figure2.png, .pdf      Figure 2 (`plotting.figure2`); layers, isotropy_depth (.png, .pdf):
                         the figures layer by layer (`layer_plots`); measures.md
                         (`report.markdown`) and hessian_density.png; surfaces.png with a
                         2D slice; curvature.png with curvature over training.
  run.json               the manifest: every file's size and SHA-256, the versions.

A sweep's folder holds one such run folder per rate (`result.rate_folder`), and sweep.md,
sweep.json and sweep.png.

This module is the one writer of run folders: the command line, the sweep and a notebook
all write through `write_run` (`save`, `write_sweep`). `save` writes a whole run folder
through `runfolder` (staged beside the target, swapped in at once), so an interrupted save
leaves the previous run untouched. The reading half (`load`, `load_variables`,
`load_sweep`, `config_from_dict`, `ResultsError`) is `jaxnorm.loading`, whose names this
module gives too.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import flax.serialization
import jax
import numpy as np
from flax import traverse_util

from jaxnorm import layer_plots, plotting, report, runfolder, summary
from jaxnorm.loading import (  # the reading half, importable from here too
  RESULTS,
  SUMMARY,
  ResultsError,
  config_from_dict,
  load,
  load_sweep,
  load_variables,
  variables_file,
)
from jaxnorm.result import ExperimentResult, Matched, NormResult, SweepResult, rate_folder

__all__ = [
  "RESULTS",
  "SUMMARY",
  "ResultsError",
  "arrays",
  "config_from_dict",
  "load",
  "load_sweep",
  "load_variables",
  "manifest_info",
  "save",
  "variables_file",
  "write_figures",
  "write_run",
  "write_sweep",
]


def arrays(r: NormResult) -> dict[str, np.ndarray]:
  """results.npz's arrays of one normalization (keys without the `N/` prefix)."""
  tree: dict = {
    "seeds": r.seeds,
    "loss": r.losses,
    "alphas": r.alphas,
    "offsets": r.offsets,
    "landscape": r.landscape,
    "base_loss": r.base_loss,
    "spectrum": r.spectrum,
    "first_nonfinite_step": r.first_nonfinite_step,
    "measure": dict(r.measures),
  }
  if r.surface is not None:
    tree.update(surface_grid=r.surface_grid, surface=r.surface)
  if r.trajectory is not None:
    tree.update(trajectory_steps=r.trajectory_steps, trajectory=r.trajectory)
  if r.hessian_density is not None:
    tree.update(hessian_density_nodes=r.hessian_density[0])
    tree.update(hessian_density_weights=r.hessian_density[1])
  tree |= _layer_arrays(r)
  if r.epoch_accuracy is not None:
    tree["epoch_accuracy"] = r.epoch_accuracy
  tree["matched"] = {
    str(i): {
      "level": np.asarray(m.level),
      "step": m.step,
      "landscape": m.landscape,
      "base_loss": m.base_loss,
      "spectrum": m.spectrum,
      "measure": dict(m.measures),
      **_layer_arrays(m),
    }
    for i, m in enumerate(r.matched)
  }
  return traverse_util.flatten_dict(tree, sep="/")


def _layer_arrays(r: NormResult | Matched) -> dict:
  """layer_spectra and layer_measure/<name>; nothing for a result without them."""
  if r.layer_spectra is None:
    return {}
  return {"layer_spectra": r.layer_spectra, "layer_measure": dict(r.layer_measures or {})}


def write_run(staging: runfolder.Staging, result: ExperimentResult, folder: str = "") -> None:
  """Writes every file of a run (the list at the top of this module) into a staging
  folder, into its sub-folder `folder` if given, with the sub-folder's run.json when
  `folder` is given; the caller commits the staging folder."""
  for norm, r in result.norms.items():
    if r.variables is not None:
      data = flax.serialization.to_bytes(jax.device_get(r.variables))
      staging.write(str(Path(folder) / variables_file(norm)), data)
  buffer = io.BytesIO()
  np.savez(
    buffer,
    **{
      f"{norm}/{name}": np.asarray(value)
      for norm, r in result.norms.items()
      for name, value in arrays(r).items()
    },
  )
  staging.write(str(Path(folder) / RESULTS), buffer.getvalue())
  text = json.dumps(summary.summary_dict(result), indent=2, allow_nan=False)
  staging.write(str(Path(folder) / SUMMARY), text.encode())
  write_figures(staging, result, folder)
  if folder:
    staging.write_manifest(manifest_info(result), folder)


def write_figures(staging: runfolder.Staging, result: ExperimentResult, folder: str = "") -> None:
  """The figures of a run and its measures.md (`--replot` redraws `manifests.REDRAWN`)."""
  stem = staging.path / folder
  plotting.save_figure(plotting.figure2(result), stem / "figure2")
  layer_plots.save_figures(result, stem)  # layers, isotropy_depth: with layer data only
  if result.spec.surface_points:
    plotting.save_figure(plotting.surfaces(result), stem / "surfaces", formats=("png",))
  if result.spec.curvature_iterations:
    figure = plotting.curvature_over_training(result)
    plotting.save_figure(figure, stem / "curvature", formats=("png",))
  staging.write(str(Path(folder) / "measures.md"), report.markdown(result).encode())
  if any(r.hessian_density is not None for r in result.norms.values()):
    figure = plotting.hessian_density(result)
    plotting.save_figure(figure, stem / "hessian_density", formats=("png",))


def write_sweep(staging: runfolder.Staging, sweep: SweepResult, runs: bool = True) -> None:
  """A sweep's sweep.md, sweep.json and sweep.png, and with `runs` its run folders."""
  if runs:
    for rate, run in zip(sweep.rates, sweep.runs, strict=True):
      write_run(staging, run, rate_folder(rate))
  staging.write("sweep.md", report.sweep_markdown(sweep).encode())
  text = json.dumps(summary.sweep_dict(sweep), indent=2, allow_nan=False)
  staging.write("sweep.json", text.encode())
  plotting.save_figure(plotting.sweep(sweep), staging.path / "sweep", formats=("png",))


def manifest_info(result: ExperimentResult | SweepResult) -> dict:
  """What run.json records besides the files: the experiment and the versions."""
  if isinstance(result, SweepResult):
    result = result.runs[0]
  env = result.environment
  return {"experiment": result.spec.name, **{k: env.get(k) for k in ("jaxnorm", "jax", "flax")}}


def save(result: ExperimentResult | SweepResult, out_dir: str | os.PathLike) -> Path:
  """Replaces the run in `out_dir` by `result` in one step: every file the command line
  writes (results, summary, variables, figures, measures.md, run.json; for a sweep, its
  runs and sweep.md, sweep.json, sweep.png). Interrupted, `out_dir` keeps its previous
  run (see `runfolder`). Raises runfolder.RunFolderError for a folder that cannot take
  the run (it holds files that are not a run's, it is one run of a sweep, ...), and
  ResultsError where saving would delete trained variables the result lacks (a run
  loaded without `variables=True`, saved over its folder). Returns the folder."""
  _keeps_variables(result, Path(out_dir))
  staging = runfolder.begin(out_dir)
  try:
    if isinstance(result, SweepResult):
      write_sweep(staging, result)
    else:
      write_run(staging, result)
    staging.commit(manifest_info(result))
  finally:
    staging.discard()
  return staging.target


def _keeps_variables(result: ExperimentResult | SweepResult, out_dir: Path) -> None:
  """Raises ResultsError when saving `result` would delete trained variables: it has none
  (loaded without them) and `out_dir` holds some."""
  runs = result.runs if isinstance(result, SweepResult) else (result,)
  if all(r.variables is not None for run in runs for r in run.norms.values()):
    return
  held = sorted(out_dir.rglob("variables_*.msgpack")) if out_dir.is_dir() else []
  if held:
    raise ResultsError(
      f"{out_dir} holds trained variables ({held[0].name}, ...) that this result lacks "
      "(loaded without them): saving it there would delete them; load it with "
      "variables=True, or save it to another folder"
    )
