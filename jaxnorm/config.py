"""Experiment configuration: one frozen, validated dataclass and its named presets.

The defaults are the reference notebook's `Config` (Experiment 2 of "Stability and
Expression: The Dual-Mechanism of Normalization in Deep Learning"), including the one
per-model override it makes: the un-normalized model trains at 5e-4 instead of 1e-4.
"""

from __future__ import annotations

import dataclasses
import math

from jaxnorm import data, norms

PAPER_NORMS = ("layernorm", "batchnorm", "none")
# Seeds become JAX keys through int32 arrays: larger ones would wrap onto other seeds.
MAX_SEED = 2**31 - 1
# Training steps are counted in int32 (batch t is drawn from fold_in(data key, t)).
MAX_STEPS = 2**31 - 1
# Neighbouring slice points linspace(-r, r, P) stay distinct in float32 (24-bit mantissa).
MAX_LANDSCAPE_POINTS = 2**23
FLOAT32_MAX = 3.4028234663852886e38
# What each `Config.matmul_precision` means for float32 matrix products (jax.lax.Precision).
MATMUL_PRECISIONS = {
  "highest": "full float32 everywhere, as PyTorch on CPU and CUDA (the default; faithful)",
  "high": "NVIDIA GPUs: TF32 (10-bit mantissa); TPUs: 3-pass bfloat16 (about float32)",
  "default": "the backend's fastest: TF32 on NVIDIA GPUs, 1-pass bfloat16 on TPUs; CPU: float32",
}


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines an Experiment 2 run. Derived sizes are properties."""

  # Task: "low-rank associative recall" over n_entities x m_attributes keys.
  n_entities: int = 20
  m_attributes: int = 20
  # Model: one post-norm Transformer block.
  embed_dim: int = 128
  num_heads: int = 1
  # Training: Adam with optax's (= PyTorch's) default betas and eps.
  learning_rate: float = 1e-4
  # Per-normalization learning rates that replace `learning_rate`, as (name, lr) pairs.
  learning_rate_overrides: tuple[tuple[str, float], ...] = (("none", 5e-4),)
  batch_size: int = 128
  steps: int = 4000
  # Analysis: 1D landscape slice over alphas = linspace(-range, range, points).
  landscape_points: int = 40
  landscape_range: float = 0.5
  # The reference forgets to restore the weights between landscape points, so its
  # slice is really taken at cumsum(alphas). True reproduces that (see README).
  landscape_cumulative: bool = False
  norms: tuple[str, ...] = PAPER_NORMS
  seed: int = 0
  # Float32 matrix products: "highest" computes them in full float32 on every backend, as
  # PyTorch does; "high" and "default" allow faster, less precise products on GPUs and TPUs
  # (see MATMUL_PRECISIONS).
  matmul_precision: str = "highest"

  def __post_init__(self):
    validate(self)

  @property
  def num_keys(self) -> int:
    """Number of distinct keys (tokens 0 .. num_keys - 1): 400."""
    return self.n_entities * self.m_attributes

  @property
  def vocab_size(self) -> int:
    """Keys plus the two spare tokens the reference reserves (never emitted): 402."""
    return self.num_keys + 2

  @property
  def theoretical_rank(self) -> int:
    """Keys drawn per example (query + context): 40."""
    return self.n_entities + self.m_attributes

  @property
  def seq_len(self) -> int:
    """39 context keys, one padding 0, the query: 41."""
    return self.theoretical_rank + 1

  @property
  def task(self) -> data.Task:
    """The sizes that fix a batch's shape, a small static argument for jitted code."""
    return data.Task(self.num_keys, self.theoretical_rank, self.batch_size)

  def learning_rate_for(self, norm: str) -> float:
    """The learning rate the model with normalization `norm` trains at."""
    return dict(self.learning_rate_overrides).get(norm, self.learning_rate)

  def replace(self, **changes) -> Config:
    return dataclasses.replace(self, **changes)


def _fail(field: str, value, allowed: str):
  raise ValueError(f"Config.{field}={value!r} is invalid: {allowed}.")


def _positive_int(cfg: Config, field: str):
  value = getattr(cfg, field)
  if not isinstance(value, int) or isinstance(value, bool) or value < 1:
    _fail(field, value, "must be an integer >= 1")


def _positive_finite(field: str, value):
  if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
    _fail(field, value, "must be a finite number > 0")


def validate(cfg: Config) -> None:
  """Raises ValueError naming the first invalid field, its value and what is allowed."""
  for field in (
    "n_entities",
    "m_attributes",
    "embed_dim",
    "num_heads",
    "batch_size",
    "steps",
    "landscape_points",
  ):
    _positive_int(cfg, field)
  if cfg.embed_dim % cfg.num_heads:
    _fail("embed_dim", cfg.embed_dim, f"must be divisible by num_heads={cfg.num_heads}")
  if cfg.theoretical_rank > cfg.num_keys:
    _fail(
      "n_entities",
      cfg.n_entities,
      f"draws n_entities + m_attributes = {cfg.theoretical_rank} distinct keys per "
      f"example but only n_entities * m_attributes = {cfg.num_keys} exist",
    )
  if cfg.steps > MAX_STEPS:
    _fail("steps", cfg.steps, f"must be <= {MAX_STEPS} (steps are counted in int32)")
  if not 3 <= cfg.landscape_points <= MAX_LANDSCAPE_POINTS:
    _fail(
      "landscape_points",
      cfg.landscape_points,
      f"must be between 3 (both sides of the minimum and alpha = 0) and {MAX_LANDSCAPE_POINTS} "
      "(neighbouring points distinct in float32)",
    )
  _positive_finite("learning_rate", cfg.learning_rate)
  _positive_finite("landscape_range", cfg.landscape_range)
  # The slice's farthest offset: range, or for the cumulative slice about P range / 2.
  farthest = cfg.landscape_range * (cfg.landscape_points if cfg.landscape_cumulative else 1)
  if farthest >= FLOAT32_MAX / 2**10:
    _fail(
      "landscape_range",
      cfg.landscape_range,
      "puts slice offsets beyond what float32 represents with room to perturb weights",
    )
  if not isinstance(cfg.norms, tuple) or not cfg.norms:
    _fail("norms", cfg.norms, "must be a non-empty tuple of normalization names")
  for name in cfg.norms:
    if name not in norms.REGISTRY:
      _fail("norms", cfg.norms, f"{name!r} is unknown; choose from {sorted(norms.REGISTRY)}")
  if len(set(cfg.norms)) != len(cfg.norms):
    _fail("norms", cfg.norms, "must not repeat a name")
  for name, lr in cfg.learning_rate_overrides:
    if name not in norms.REGISTRY:
      _fail("learning_rate_overrides", name, f"unknown; choose from {sorted(norms.REGISTRY)}")
    _positive_finite(f"learning_rate_overrides[{name!r}]", lr)
  if cfg.batch_size < 2 and any(norms.REGISTRY[n].needs_batch for n in cfg.norms):
    _fail(
      "batch_size", cfg.batch_size, "must be >= 2 with a batch-statistics normalization (batchnorm)"
    )
  if cfg.matmul_precision not in MATMUL_PRECISIONS:
    _fail("matmul_precision", cfg.matmul_precision, f"choose from {sorted(MATMUL_PRECISIONS)}")
  if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or not 0 <= cfg.seed <= MAX_SEED:
    _fail("seed", cfg.seed, f"must be an integer in [0, {MAX_SEED}] (JAX keys from int32 seeds)")


# The reference notebook's configuration.
PAPER = Config()
# Same task and model, few steps: a smoke run in well under a minute on 2 CPU cores.
QUICK = Config(steps=200, landscape_points=21)
# A shrunken task and model for unit tests: 6 x 6 keys, D = 16, two heads.
TINY = Config(
  n_entities=6,
  m_attributes=6,
  embed_dim=16,
  num_heads=2,
  batch_size=8,
  steps=30,
  landscape_points=7,
  learning_rate=3e-3,
  learning_rate_overrides=(("none", 1e-2),),
)

# Experiment 1 of the paper: LayerNorm vs No Norm, a 50-point slice.
EXP1 = Config(norms=("layernorm", "none"), landscape_points=50)
# Experiment 3: Experiment 2 plus the parameter-free "Manual L2 Norm", trained at 1e-4.
EXP3 = Config(norms=("layernorm", "batchnorm", "none", "l2"))

# The reference configuration with every model at the same learning rate, 1e-4: the
# control for the one rate the reference changes (No Norm at 5e-4).
EQUAL_LR = PAPER.replace(learning_rate_overrides=())

PRESETS = {
  "paper": PAPER,
  "equal_lr": EQUAL_LR,
  "quick": QUICK,
  "tiny": TINY,
  "exp1": EXP1,
  "exp3": EXP3,
}
