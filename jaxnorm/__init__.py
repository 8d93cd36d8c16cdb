"""jaxnorm: normalization, flat minima and isotropy experiments in JAX/Flax."""

from jaxnorm import data, model, norms
from jaxnorm.config import PAPER, PRESETS, QUICK, TINY, Config

__all__ = ["Config", "PAPER", "PRESETS", "QUICK", "TINY", "data", "model", "norms"]
