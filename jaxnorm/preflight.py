"""Checks made before any compilation or training: will the run fit in memory?

`Config` and `ExperimentSpec` check each value on its own (ranges, seeds, the landscape
axis); what is left is the whole run against the machine. `memory_estimate` adds up the
largest arrays a run holds at once, from the sizes alone:

  n     parameters: 2 V D + N (12 D^2 + 13 D) + V (embedding, N blocks' attention, FFN
                   and norms, readout; counted from the models' shapes)
  train per seed:  6 n (parameters, gradients, Adam's two moments, the donated copy)
                   + 2 N B L (19 D + 2 H L) (activations kept for the backward pass, per
                   block) + 2 B K (the uniforms a batch is drawn from; on a text data
                   set instead its token arrays and labels, (N + N_test) (L + 1), and an
                   epoch's permutation, 2 N)
  analysis per seed: c (n + B L (4 D + H L)) (c = `landscape.DEFAULT_CHUNK` perturbed
                   models evaluated together, each holding its FFN or attention
                   activations) + (lanczos + 2) n (Lanczos basis; "hessian" family)
                   + (2 D + 2) n (the slices' directions, D = slice_directions; "slices")
                   + max(c D / 2, 3 R) n (the temporaries of the slices' perturbed models or
                   of adaptive sharpness' R = sharpness_samples samples, fitted)
                   + 3 (N + 1) B L D (every depth's activations for the layer spectra);
                   with "batch_stats" and a normalization whose training mode mixes tokens
                   (BatchNorm: the batch-statistics measures run every position of every
                   perturbed model, not the last), or with several blocks (every position
                   feeds the next block), c (n + B L (48 D + 2 H L)) instead; with several
                   blocks and "hessian", + 16 x 2 N B L (19 D + 2 H L) (the 16
                   Hutchinson probes evaluated together, `curvature.TRACE_CHUNK`, each
                   carrying every block's activations through its Hessian-vector product)
  results:         S (steps + P + A^2) (loss history, slice, 2D slice), twice (device and
                   host copies), and S n for the trained variables

in float32 (4 bytes; the analysis twice that with `analysis_dtype` float64), for the seeds
of one compiled call split over the devices. It is an
estimate of the order of magnitude, meant to refuse a run that cannot fit (a batch, seed
count or slice far too large) with one line before any work, not to predict the exact peak.
Measured on the 2-core CPU (`/usr/bin/time -f %M python experiments/exp2.py --quick --steps
20 --norms layernorm --seeds S`): peak resident memory 1.36 GB for S = 1 and 2.90 GB for
S = 8, 0.22 GB per added seed, where the estimate gives 0.23 GB per seed (the rest is the
JAX runtime and the compiler, which the estimate leaves out). The analysis terms against
XLA's own count (`memory_analysis().temp_size_in_bytes` of the compiled analysis, reference
config, one seed, float32, every measure family): LayerNorm 0.185 GB (estimate 0.39), No Norm
0.173 GB (0.39), BatchNorm 1.98 GB (2.30; the 48 D per position is fitted to this number);
the deep preset (6 blocks, LayerNorm, one seed, the "hessian" family) 6.44 GB (6.88: nearly
all of it the 16 probes' activations). Where the parameters dominate (the tiny preset with
100 blocks, LayerNorm) XLA's temporaries are 90 n with the "slices" family alone, 100 n with
"sharpness" alone and 130 n at the standard level: the max(c D / 2, 3 R) term is fitted to
these (the estimate counted 40 n before, and a 10000-block tiny model passed the check and
was killed for memory at 24 GB). It makes the one-block estimates above about twice XLA's
count (0.12 GB of them is that term): an upper bound there.
"""

from __future__ import annotations

import functools
import math
import os
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxnorm import curvature, landscape, norms
from jaxnorm import model as model_lib
from jaxnorm.spec import ExperimentSpec

FLOAT32 = 4  # bytes
GiB = 2**30


class MemoryEstimate(NamedTuple):
  """Bytes a run needs at once, per device, by part."""

  train: int  # one compiled call's training: parameters, optimizer state, activations
  analysis: int  # one compiled call's analysis: perturbed models, Lanczos basis
  results: int  # loss histories, slices, surfaces and variables of every seed

  @property
  def total(self) -> int:
    return max(self.train, self.analysis) + self.results

  def largest_part(self) -> str:
    parts = {"training": self.train, "analysis": self.analysis, "results": self.results}
    return max(parts, key=parts.get)


def num_parameters(spec: ExperimentSpec) -> int:
  """The number of parameters of the largest model of `spec`, from the shapes of their
  initializations (`jax.eval_shape`: nothing is computed or allocated)."""
  cfg = spec.config
  tokens = jax.ShapeDtypeStruct((1, cfg.seq_len), jnp.int32)

  def count(norm: str) -> int:
    init = functools.partial(model_lib.build(cfg, norm).init, train=False)
    # The key made inside the trace too: made outside, it is computed (and compiled).
    shapes = jax.eval_shape(lambda t: init(jax.random.key(0), t), tokens)
    return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes["params"]))

  return max(count(norm) for norm in cfg.norms)


def memory_estimate(
  spec: ExperimentSpec, num_devices: int = 1, runs_per_seed: int = 1
) -> MemoryEstimate:
  """The module docstring's formula, per device, with `runs_per_seed` runs of each seed
  (a learning-rate sweep's rates: `sweep.run`)."""
  cfg = spec.config
  b, seq, d, h, k = cfg.batch_size, cfg.seq_len, cfg.embed_dim, cfg.num_heads, cfg.num_keys
  n = num_parameters(spec)
  num_runs = spec.num_seeds * runs_per_seed
  per_call = min(spec.seeds_per_call or spec.num_seeds, num_runs)  # as `sweep.run`
  seeds_here = math.ceil(per_call / num_devices)
  blocks = cfg.num_blocks
  kept_per_block = 2 * b * seq * (19 * d + 2 * h * seq)  # a block's activations for a backward
  train = 6 * n + blocks * kept_per_block
  if cfg.text is None:
    train += 2 * b * k
  else:  # the token arrays (int32, 4 bytes as a float32) and an epoch's permutation
    t = cfg.text
    train += (t.num_train + t.num_test) * (t.seq_len + 1) + 2 * t.num_train
  analysis = b * seq * 3 * d  # the spectrum's activations
  analysis += (blocks + 1) * b * seq * 3 * d  # every depth's, for the layer spectra
  chunk = landscape.DEFAULT_CHUNK
  families = () if spec.measures is None else spec.measures.families
  every_position = blocks > 1 or (
    "batch_stats" in families
    and any(
      not norms.REGISTRY[norm].per_token_in_train for norm in cfg.norms if norm in norms.REGISTRY
    )
  )
  per_model = b * seq * (48 * d + 2 * h * seq) if every_position else b * seq * (4 * d + h * seq)
  analysis += chunk * (n + per_model)
  if "hessian" in families:
    analysis += (spec.measures.lanczos_iterations + 2) * n
    if blocks > 1:
      analysis += curvature.TRACE_CHUNK * blocks * kept_per_block
  # The temporaries of the slices and of adaptive sharpness: the two run one after the
  # other, so the larger counts. Both fitted to XLA's count (docstring).
  transient = 0
  if "slices" in families:
    dirs = spec.measures.slice_directions
    analysis += (2 * dirs + 2) * n  # the slices' directions
    transient = max(transient, chunk * dirs // 2 * n)  # their perturbed models
  if "sharpness" in families:
    transient = max(transient, 3 * spec.measures.sharpness_samples * n)  # its samples
  analysis += transient
  points = cfg.landscape_points + (spec.surface_points or 0) ** 2
  per_seed_results = 2 * (cfg.steps + points) + n
  return MemoryEstimate(
    train=FLOAT32 * seeds_here * train,
    analysis=FLOAT32 * (2 if spec.analysis_dtype == "float64" else 1) * seeds_here * analysis,
    results=FLOAT32 * math.ceil(num_runs / num_devices) * per_seed_results,
  )


def available_memory(device: jax.Device) -> int | None:
  """Bytes the device can hold: an accelerator's memory limit (`memory_stats`), or for the
  CPU the host memory now available (MemAvailable of /proc/meminfo, else all physical
  memory). None if unknown."""
  try:
    stats = device.memory_stats()
  except Exception:  # some backends do not implement it
    stats = None
  if stats and stats.get("bytes_limit"):
    return int(stats["bytes_limit"])
  try:
    with open("/proc/meminfo") as f:
      for line in f:
        if line.startswith("MemAvailable:"):
          return int(line.split()[1]) * 1024
  except OSError:
    pass
  try:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
  except (ValueError, OSError, AttributeError):
    return None


def check(spec: ExperimentSpec, runs_per_seed: int = 1) -> None:
  """Raises ValueError, one line with the estimate and the limit, when the run cannot fit
  in the memory of the devices it would run on (see `memory_estimate`)."""
  devices = jax.devices()
  limit = available_memory(devices[0])
  if limit is None:
    return
  estimate = memory_estimate(spec, len(devices), runs_per_seed)
  if estimate.total > limit:
    where = f"{devices[0].platform} device" if len(devices) == 1 else "each device"
    raise ValueError(
      f"this run needs about {estimate.total / GiB:.1f} GiB at once (mostly "
      f"{estimate.largest_part()}), more than the {limit / GiB:.1f} GiB available on the "
      f"{where}: use fewer seeds, --seeds-per-call, a smaller --batch-size, or fewer "
      "landscape or surface points or steps"
    )
