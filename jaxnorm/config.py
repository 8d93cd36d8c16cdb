"""Experiment configuration: one frozen, validated dataclass and its named presets.

The defaults are the reference notebook's `Config` (Experiment 2 of "Stability and
Expression: The Dual-Mechanism of Normalization in Deep Learning"), including the one
per-model override it makes: the un-normalized model trains at 5e-4 instead of 1e-4.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from jaxnorm import data, norms
from jaxnorm.fields import (
  FieldTypeError,
  as_flag,
  as_float,
  as_int,
  as_str,
  as_tuple,
  wrong_type,
)

PAPER_NORMS = ("layernorm", "batchnorm", "none")
# Seeds become JAX keys through int32 arrays: larger ones would wrap onto other seeds.
MAX_SEED = 2**31 - 1
# Training steps are counted in int32 (batch t is drawn from fold_in(data key, t)).
MAX_STEPS = 2**31 - 1
# Neighbouring slice points linspace(-r, r, P) stay distinct in float32 (24-bit mantissa).
MAX_LANDSCAPE_POINTS = 2**23
FLOAT32_MAX = 3.4028234663852886e38
# float32's smallest normal number. Training computes in float32, and XLA flushes smaller
# (subnormal) numbers to 0: a learning rate below it would train nothing.
FLOAT32_TINY = 1.1754943508222875e-38
# What each `Config.matmul_precision` means for float32 matrix products (jax.lax.Precision).
MATMUL_PRECISIONS = {
  "highest": "full float32 everywhere, as PyTorch on CPU and CUDA (the default; faithful)",
  "high": "NVIDIA GPUs: TF32 (10-bit mantissa); TPUs: 3-pass bfloat16 (about float32)",
  "default": "the backend's fastest: TF32 on NVIDIA GPUs, 1-pass bfloat16 on TPUs; CPU: float32",
}


NORM_PLACEMENTS = ("post", "pre")
READOUTS = ("last", "first")


@dataclasses.dataclass(frozen=True)
class Config:
  """Everything that defines an Experiment 2 run. Derived sizes are properties."""

  # Task: "low-rank associative recall" over n_entities x m_attributes keys.
  n_entities: int = 20
  m_attributes: int = 20
  # Model: one post-norm Transformer block with one head, read out at the last position.
  embed_dim: int = 128
  num_heads: int = 1
  num_blocks: int = 1
  # "post": norm after each residual sum (the reference's); "pre": norm before each
  # branch, and a final norm before the readout.
  norm_placement: str = "post"
  # The position whose output is read out: "last" (where the query sits: Experiment 2)
  # or "first" (Experiment 4's [CLS]; on the synthetic task it holds a context key).
  readout: str = "last"
  # Readout size; None: the task's (the vocabulary for the synthetic task, as the
  # reference, whose labels are tokens; the classes of a text data set).
  num_classes: int | None = None
  # The data: None for the synthetic task; a text data set's shape (`data.TextShape`:
  # Experiment 4's AG News, `jaxnorm.agnews`), whose arrays a run is given. With it, the
  # vocabulary and length are the data's, and n_entities, m_attributes are unused.
  text: data.TextShape | None = None
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
  # slice is really taken at cumsum(alphas). True reproduces that (docs/faithfulness.md).
  landscape_cumulative: bool = False
  norms: tuple[str, ...] = PAPER_NORMS
  seed: int = 0
  # Float32 matrix products: "highest" computes them in full float32 on every backend, as
  # PyTorch does; "high" and "default" allow faster, less precise products on GPUs and TPUs
  # (see MATMUL_PRECISIONS).
  matmul_precision: str = "highest"

  def __post_init__(self):
    # Each field as its plain Python type (numpy scalars too), so that configs compare,
    # hash and print alike and summary.json can hold them; FieldTypeError otherwise.
    for field, convert in FIELD_TYPES.items():
      object.__setattr__(self, field, convert(f"Config.{field}", getattr(self, field)))
    validate(self)

  @property
  def num_keys(self) -> int:
    """Number of distinct keys (tokens 0 .. num_keys - 1): 400."""
    return self.n_entities * self.m_attributes

  @property
  def vocab_size(self) -> int:
    """Keys plus the two spare tokens the reference reserves (never emitted): 402; a text
    data set's tokenizer vocabulary."""
    return self.num_keys + 2 if self.text is None else self.text.vocab_size

  @property
  def theoretical_rank(self) -> int:
    """Keys drawn per example (query + context): 40."""
    return self.n_entities + self.m_attributes

  @property
  def seq_len(self) -> int:
    """39 context keys, one padding 0, the query: 41; a text data set's length."""
    return self.theoretical_rank + 1 if self.text is None else self.text.seq_len

  @property
  def output_classes(self) -> int:
    """The readout's size: `num_classes`, or the task's (vocabulary or text classes)."""
    if self.num_classes is not None:
      return self.num_classes
    return self.vocab_size if self.text is None else self.text.num_classes

  @property
  def task(self) -> data.Task | data.TextTask:
    """The sizes that fix a batch's shape, a small static argument for jitted code."""
    if self.text is not None:
      t = self.text
      return data.TextTask(t.num_train, t.num_test, t.seq_len, self.batch_size)
    return data.Task(self.num_keys, self.theoretical_rank, self.batch_size)

  def learning_rate_for(self, norm: str) -> float:
    """The learning rate the model with normalization `norm` trains at."""
    return dict(self.learning_rate_overrides).get(norm, self.learning_rate)

  def replace(self, **changes) -> Config:
    return dataclasses.replace(self, **changes)


def _names(where: str, value: Any) -> tuple[str, ...]:
  return as_tuple(where, value, as_str, "normalization names (strings)")


def _optional_int(where: str, value: Any) -> int | None:
  return None if value is None else as_int(where, value)


def _text_shape(where: str, value: Any) -> data.TextShape | None:
  """None, or a `data.TextShape` (also from a list, or the dict of its fields that
  summary.json holds), each field typed."""
  if value is None:
    return None
  if isinstance(value, dict) and set(value) == set(data.TextShape._fields):  # summary.json's
    value = tuple(value[name] for name in data.TextShape._fields)
  if not isinstance(value, (tuple, list)) or len(value) != len(data.TextShape._fields):
    wrong_type(where, value, f"None or a data.TextShape {data.TextShape._fields}")
  kinds = (as_str, as_int, as_int, as_int, as_int, as_int, as_str)
  return data.TextShape(
    *(k(f"{where}[{i}]", v) for i, (k, v) in enumerate(zip(kinds, value, strict=True)))
  )


def _rate_pair(where: str, value: Any) -> tuple[str, float]:
  if not isinstance(value, tuple) or len(value) != 2:
    wrong_type(where, value, "a (normalization name, learning rate) pair")
  return as_str(f"{where}[0]", value[0]), as_float(f"{where}[1]", value[1])


def _rate_pairs(where: str, value: Any) -> tuple[tuple[str, float], ...]:
  return as_tuple(where, value, _rate_pair, "(normalization name, learning rate) pairs")


# Every field of Config and the type it must have (`Config.__post_init__` converts it).
FIELD_TYPES: dict[str, Callable[[str, Any], Any]] = {
  "n_entities": as_int,
  "m_attributes": as_int,
  "embed_dim": as_int,
  "num_heads": as_int,
  "num_blocks": as_int,
  "norm_placement": as_str,
  "readout": as_str,
  "num_classes": _optional_int,
  "text": _text_shape,
  "learning_rate": as_float,
  "learning_rate_overrides": _rate_pairs,
  "batch_size": as_int,
  "steps": as_int,
  "landscape_points": as_int,
  "landscape_range": as_float,
  "landscape_cumulative": as_flag,
  "norms": _names,
  "seed": as_int,
  "matmul_precision": as_str,
}


def learning_rate_error(rate: float) -> str | None:
  """Why `rate` cannot be a learning rate, or None if it can: it must be finite and > 0,
  and stay so in float32, where training computes: between float32's smallest normal
  number (XLA flushes smaller ones to 0, so 1e-50 or 1e-40 would train nothing) and its
  largest (larger ones become inf)."""
  if not (math.isfinite(rate) and rate > 0):
    return "must be a finite number > 0"
  if not FLOAT32_TINY <= rate <= FLOAT32_MAX:
    return (
      f"must be between {FLOAT32_TINY:.4g} and {FLOAT32_MAX:.4g}: training computes in "
      "float32, where it would be " + ("0 (nothing would train)" if rate < 1 else "inf")
    )
  return None


def check_learning_rates(rates: Any) -> tuple[float, ...]:
  """`rates` (a sequence of numbers, not a string) as a tuple of floats; ValueError unless
  there is one at least and each is one a model can train at (`learning_rate_error`),
  `FieldTypeError` (a ValueError) for a rate that is not a number."""
  if isinstance(rates, (str, bytes)):
    raise FieldTypeError(f"rates={rates!r} is invalid: must be a sequence of numbers.")
  rates = tuple(as_float(f"rates[{i}]", r) for i, r in enumerate(rates))
  if not rates:
    raise ValueError("a sweep needs at least one learning rate")
  for rate in rates:
    why = learning_rate_error(rate)
    if why is not None:
      raise ValueError(f"learning rate {rate!r} is invalid: {why}")
  return rates


def _fail(field: str, value, allowed: str):
  raise ValueError(f"Config.{field}={value!r} is invalid: {allowed}.")


def _positive_int(cfg: Config, field: str):
  value = getattr(cfg, field)
  if value < 1:
    _fail(field, value, "must be an integer >= 1")


def _positive_finite(field: str, value: float):
  if not math.isfinite(value) or value <= 0:
    _fail(field, value, "must be a finite number > 0")


def _learning_rate(field: str, value: float):
  why = learning_rate_error(value)
  if why is not None:
    _fail(field, value, why)


def validate(cfg: Config) -> None:
  """Raises ValueError naming the first invalid field, its value and what is allowed.
  Expects the field types `Config.__post_init__` has already checked (`FIELD_TYPES`)."""
  for field in (
    "n_entities",
    "m_attributes",
    "embed_dim",
    "num_heads",
    "num_blocks",
    "batch_size",
    "steps",
    "landscape_points",
  ):
    _positive_int(cfg, field)
  if cfg.embed_dim % cfg.num_heads:
    _fail("num_heads", cfg.num_heads, f"must divide embed_dim={cfg.embed_dim} (each head D / H)")
  if cfg.norm_placement not in NORM_PLACEMENTS:
    _fail("norm_placement", cfg.norm_placement, f"choose from {list(NORM_PLACEMENTS)}")
  if cfg.readout not in READOUTS:
    _fail("readout", cfg.readout, f"choose from {list(READOUTS)}")
  if cfg.text is not None:
    mixes_batch = any(norms.REGISTRY.get(n, norms.REGISTRY["none"]).needs_batch for n in cfg.norms)
    error = data.text_config_error(
      cfg.text, cfg.num_classes, cfg.batch_size, cfg.steps, mixes_batch
    )
    if error is not None:
      _fail(*error)
  elif cfg.num_classes is not None and cfg.num_classes < cfg.num_keys:
    _fail(
      "num_classes",
      cfg.num_classes,
      f"must be None (the vocabulary) or >= num_keys={cfg.num_keys}: the task's labels are "
      "its keys",
    )
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
  _learning_rate("learning_rate", cfg.learning_rate)
  _positive_finite("landscape_range", cfg.landscape_range)
  if 2 * cfg.landscape_range / (cfg.landscape_points - 1) < FLOAT32_TINY:
    _fail(
      "landscape_range",
      cfg.landscape_range,
      f"puts neighbouring slice points closer than {FLOAT32_TINY:.4g}, float32's smallest "
      "normal number: in float32 they would all be 0",
    )
  # The slice's farthest offset: range, or for the cumulative slice about P range / 2.
  farthest = cfg.landscape_range * (cfg.landscape_points if cfg.landscape_cumulative else 1)
  if farthest >= FLOAT32_MAX / 2**10:
    _fail(
      "landscape_range",
      cfg.landscape_range,
      "puts slice offsets beyond what float32 represents with room to perturb weights",
    )
  if not cfg.norms:
    _fail("norms", cfg.norms, "must be a non-empty tuple of normalization names")
  for name in cfg.norms:
    if name not in norms.REGISTRY:
      _fail("norms", cfg.norms, f"{name!r} is unknown; choose from {sorted(norms.REGISTRY)}")
  if len(set(cfg.norms)) != len(cfg.norms):
    _fail("norms", cfg.norms, "must not repeat a name")
  seen = set()
  for name, lr in cfg.learning_rate_overrides:
    if name not in norms.REGISTRY:
      _fail("learning_rate_overrides", name, f"unknown; choose from {sorted(norms.REGISTRY)}")
    if name in seen:
      _fail(
        "learning_rate_overrides",
        cfg.learning_rate_overrides,
        f"names {name!r} more than once (give each normalization one rate)",
      )
    seen.add(name)
    _learning_rate(f"learning_rate_overrides[{name!r}]", lr)
  if cfg.batch_size < 2 and any(norms.REGISTRY[n].needs_batch for n in cfg.norms):
    _fail(
      "batch_size", cfg.batch_size, "must be >= 2 with a batch-statistics normalization (batchnorm)"
    )
  if cfg.matmul_precision not in MATMUL_PRECISIONS:
    _fail("matmul_precision", cfg.matmul_precision, f"choose from {sorted(MATMUL_PRECISIONS)}")
  if not 0 <= cfg.seed <= MAX_SEED:
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

# The paper's deep model (its Experiment 4 encoder: 6 post-norm blocks, 4 heads) on the
# synthetic task, LayerNorm against manual L2 and no normalization, Adam at 2e-4 as the
# paper trains it; fewer steps and a smaller batch than Experiment 2, so that several
# seeds fit a laptop (measured in the README).
DEEP = Config(
  num_blocks=6,
  num_heads=4,
  norms=("layernorm", "l2", "none"),
  learning_rate=2e-4,
  learning_rate_overrides=(),
  batch_size=64,
  steps=1000,
)

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
  "deep": DEEP,
}
