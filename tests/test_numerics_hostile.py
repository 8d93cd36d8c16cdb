"""A global JAX_ENABLE_X64 must not change what is trained or measured: the model, its
state, the data and the analysis stay float32 unless float64 is asked for."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxnorm import analysis, config, keys, landscape, norms, programs, train
from jaxnorm import model as model_lib

ROOT = Path(__file__).resolve().parents[1]
CFG = config.TINY


def _floating_dtypes(tree) -> dict[str, np.dtype]:
  """keystr -> dtype of every floating leaf."""
  return {
    jax.tree_util.keystr(path): x.dtype
    for path, x in jax.tree_util.tree_leaves_with_path(tree)
    if jnp.issubdtype(x.dtype, jnp.floating)
  }


def _not_float32(tree) -> dict[str, np.dtype]:
  return {k: d for k, d in _floating_dtypes(tree).items() if d != jnp.float32}


# The normalizations with variables of their own (the rest of the model is the same for all).
WITH_VARIABLES = sorted(n for n, s in norms.REGISTRY.items() if s.torch_params or s.torch_buffers)


@pytest.mark.hostile
@pytest.mark.parametrize("norm", WITH_VARIABLES)
def test_training_state_stays_float32_under_global_x64(norm):
  model = model_lib.build(CFG, norm)
  train_keys = jax.vmap(lambda s: keys.run_keys(s).train)(jnp.arange(1))
  with jax.enable_x64(True):
    states = programs.init_states(model, CFG.task, train_keys, jnp.full((1,), 1e-3, jnp.float32))
    assert _not_float32(states) == {}
    assert states.step.dtype == jnp.int32
    # A batch is ids, drawn the same way with or without x64.
    tokens, labels = train.training_batch(train_keys[0], 0, CFG.task)
    assert tokens.dtype == labels.dtype == jnp.int32
    trained, losses = programs.train_chunk(model, CFG.task, states, 1)
    assert _not_float32((trained, losses)) == {}
    assert _floating_dtypes(trained) == _floating_dtypes(states)
  assert norms.get(norm).needs_batch == bool(trained.batch_stats)


@pytest.mark.hostile
def test_analysis_of_float32_weights_stays_float32_under_global_x64():
  """Coefficients built with the default dtype would promote the perturbed weights to
  float64: the slices and the surface must be evaluated in the weights' dtype."""
  model = model_lib.build(CFG, "batchnorm")
  keys_S = jax.vmap(keys.run_keys)(jnp.arange(1))
  alphas = landscape.alphas(3, 1.0)
  states = programs.init_states(model, CFG.task, keys_S.train, jnp.full((1,), 1e-3, jnp.float32))
  with jax.enable_x64(True):
    result = analysis.analyze_seeds(
      model, CFG.task, None, states.params, states.batch_stats, keys_S, alphas, alphas, alphas
    )
  assert _not_float32(result) == {}
  assert result.surface.shape == (1, 3, 3)


@pytest.mark.hostile
def test_exp2_runs_in_float32_under_jax_enable_x64(tmp_path):
  """End to end, as a user with JAX_ENABLE_X64=1 in the environment runs it: the model is
  trained and analyzed in float32, so the analysis does not fail on a dtype mismatch.
  Without the measures (a fifth of the time): the slice and spectrum program is the one that
  received the float64 norm parameters. BatchNorm alone (parameters and statistics); each
  normalization with variables in-process above."""
  out, home = tmp_path / "run", tmp_path / "home"
  home.mkdir()
  env = {k: v for k, v in os.environ.items() if k != "XDG_CACHE_HOME"}
  env.update(
    JAX_ENABLE_X64="1",
    HOME=str(home),
    JAXNORM_CACHE_DIR=str(tmp_path / "cache"),
    MPLCONFIGDIR=str(tmp_path / "mpl"),
  )
  args = "--preset tiny --norms batchnorm --steps 4 --landscape-points 3 --no-progress"
  args += " --no-measures"
  proc = subprocess.run(
    [sys.executable, str(ROOT / "experiments" / "exp2.py"), *args.split(), "--out", str(out)],
    capture_output=True,
    text=True,
    cwd=ROOT,
    timeout=600,
    env=env,
  )
  assert proc.returncode == 0, proc.stderr
  summary = json.loads((out / "summary.json").read_text())
  assert summary["config"]["norms"] == ["batchnorm"]
  assert summary["analysis_dtype"] == "float32"
  with np.load(out / "results.npz") as saved:
    assert np.isfinite(saved["batchnorm/landscape"]).all()
