"""What the tests of several modules share: hand-built results for the tests of what reads
them (reports, tables and figures), `cli.main`'s keyword arguments for a test experiment,
and the small configurations, models and training states the tests start from."""

from pathlib import Path

import jax
import numpy as np

from jaxnorm import config, data, families, model, train
from jaxnorm.predictions import Experiment
from jaxnorm.result import NormResult

ROOT = Path(__file__).resolve().parents[1]

# The configuration of conftest's `measured_result` (before its normalizations and seed).
CFG = config.TINY.replace(steps=12, landscape_points=5)
# Its measures: every family, cheap estimator settings.
CHEAP_MEASURES = families.MeasureConfig(
  families=families.FAMILIES,
  lanczos_iterations=6,
  trace_probes=4,
  sharpness_samples=4,
  slice_directions=2,
)


def cli_kwargs(cfg=config.TINY, predictions=()) -> dict:
  """`cli.main`'s keyword arguments for an experiment `t` of `cfg` with `predictions`."""
  return dict(experiment=Experiment("t", "t", cfg, tuple(predictions)), prog="t", description="")


# The experiment `t` of the tiny preset, without predictions, as a script runs it.
TEST_SCRIPT = cli_kwargs()


def norm_result(norm, seeds=1, *, final_loss=1.0, rise=0.5, measures=None, rng=None, **fields):
  """A `NormResult` of `norm` over seeds 0 .. `seeds` - 1, learning rate 1e-3, no
  seed diverged, no variables and no surface, unless `fields` say otherwise.

  Every seed alike: 5 training steps at `final_loss`, a 3-point slice that rises by `rise`
  at alpha = -0.5 from a loss of 1 at alpha = 0, and the singular values 4, 2, 1. With a
  NumPy Generator `rng` instead: random values over 30 steps, a 7-point slice and 16
  singular values. `measures`: name -> one value, or one per seed.
  """
  if rng is None:
    arrays = dict(
      losses=np.full((seeds, 5), final_loss),
      alphas=np.array([-0.5, 0.0, 0.5]),
      offsets=np.array([-0.5, 0.0, 0.5]),
      landscape=np.tile([1.0 + rise, 1.0, 1.0], (seeds, 1)),
      base_loss=np.ones(seeds),
      spectrum=np.tile([4.0, 2.0, 1.0], (seeds, 1)),
    )
  else:
    arrays = dict(
      losses=rng.uniform(0.1, 5, (seeds, 30)),
      alphas=np.linspace(-0.5, 0.5, 7),
      offsets=np.linspace(-0.5, 0.5, 7),
      landscape=rng.uniform(0, 1, (seeds, 7)),
      base_loss=rng.uniform(0, 1, (seeds,)),
      spectrum=np.sort(rng.uniform(0.1, 10, (seeds, 16)))[..., ::-1],
    )
  measured = {
    name: np.broadcast_to(np.asarray(value, np.float64), (seeds,)).copy()
    for name, value in (measures or {}).items()
  }
  return NormResult(
    **{
      "norm": norm,
      "learning_rate": 1e-3,
      "seeds": np.arange(seeds),
      **arrays,
      "measures": measured,
      "surface_grid": None,
      "surface": None,
      "variables": None,
      "first_nonfinite_step": np.full(seeds, -1),
      "seconds": {"train": 0.0, "analysis": 0.0},
      **fields,
    }
  )


# Smaller than TINY so that the dense Hessian (P ~ 1.2k) is cheap: 4 x 4 keys, D = 8.
HESSIAN_CFG = config.TINY.replace(n_entities=4, m_attributes=4, embed_dim=8, num_heads=1)


def tiny_model_problem(norm, key):
  """A `norm` model of HESSIAN_CFG at its initialization and one batch:
  (model, params, batch_stats, tokens, labels)."""
  cfg = HESSIAN_CFG
  m = model.build(cfg, norm)
  tokens, labels = data.batch(jax.random.fold_in(key, 1), cfg)
  variables = jax.jit(m.init, static_argnames="train")(
    jax.random.fold_in(key, 2), tokens, train=False
  )
  return m, variables["params"], variables.get("batch_stats", {}), tokens, labels


def model_and_state(cfg, norm, key, lr=None):
  """The `norm` model of `cfg` and its initial training state at `lr` (by default the
  configured rate of `norm`)."""
  m = model.build(cfg, norm)
  lr = cfg.learning_rate_for(norm) if lr is None else lr
  return m, train.init_state(m, cfg.task, key, lr)


# Put first on a script's PYTHONPATH as sitecustomize.py: the process stops itself (SIGSTOP)
# as it begins to import JAX, after the script's first import set its stop handlers.
STOP_AT_JAX = """
import os, signal, sys

class StopAtJax:
  def find_spec(self, name, path=None, target=None):
    if name == "jax":
      sys.meta_path.remove(self)
      os.kill(os.getpid(), signal.SIGSTOP)
    return None

sys.meta_path.insert(0, StopAtJax())
"""
