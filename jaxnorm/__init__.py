"""jaxnorm: normalization, flat minima and isotropy experiments in JAX/Flax.

    import jaxnorm
    spec = jaxnorm.pipeline.ExperimentSpec(jaxnorm.QUICK, num_seeds=4)
    result = jaxnorm.pipeline.run(spec)      # every number the command line prints

The flow, one module per step: config -> data -> model (norms) -> loss -> train (seeds)
-> analysis (landscape, directions, curvature, spectrum, isotropy) -> pipeline ->
summary / report / plotting / results.
"""

from jaxnorm import data, model, norms, pipeline
from jaxnorm.config import PAPER, PRESETS, QUICK, TINY, Config

__all__ = ["Config", "PAPER", "PRESETS", "QUICK", "TINY", "data", "model", "norms", "pipeline"]
