"""jaxnorm: normalization, flat minima and isotropy experiments in JAX/Flax.

    from jaxnorm import config, pipeline, results, spec
    result = pipeline.run(spec.ExperimentSpec(config.QUICK, num_seeds=4))
    results.save(result, "runs/mine")     # the files the command line writes

Data flows one way, one module per step: config -> data -> model (norms) -> loss -> train
-> analysis (landscape, directions, curvature, spectrum, isotropy) -> programs -> pipeline
(sweep) -> result -> stats -> summary / report / plotting -> results; cli on top, and the
command `jaxnorm` (commands) over it. The result types (`result`) and the spec (`spec`) sit
below the runner, and no import goes around in a cycle (tests/test_layout.py). Submodules
load when first used (`import jaxnorm` loads no JAX), so `jaxnorm.quiet` can be imported
before anything else.
"""

import importlib

# The one place the version is written: pyproject.toml reads it (`jaxnorm --version`).
__version__ = "0.1.0"
_FROM_CONFIG = ("Config", "PAPER", "PRESETS", "QUICK", "TINY")
__all__ = [*_FROM_CONFIG, "config", "data", "model", "norms", "pipeline", "results", "spec"]


def __getattr__(name: str):
  if name == "quiet":  # process-wide handlers: only on an explicit `import jaxnorm.quiet`
    raise AttributeError("jaxnorm.quiet is loaded only by `import jaxnorm.quiet`")
  if name in _FROM_CONFIG:
    return getattr(importlib.import_module("jaxnorm.config"), name)
  try:
    return importlib.import_module(f"jaxnorm.{name}")
  except ModuleNotFoundError as e:
    if e.name != f"jaxnorm.{name}":
      raise
    raise AttributeError(f"module 'jaxnorm' has no attribute {name!r}") from None
