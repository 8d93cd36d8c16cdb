"""Hand-built results for the tests of what reads them (reports, tables and figures), and
the experiment scripts as modules, whose `main(argv)` the tests call in-process."""

import importlib.util
from pathlib import Path

import numpy as np

from jaxnorm.result import NormResult

ROOT = Path(__file__).resolve().parents[1]


def script(name: str):
  """tools/<name>.py as a module (its `if __name__ == "__main__"` part is not run)."""
  spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


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
