"""The deep model against the deep PyTorch reference, and what its depth costs to compile:
the "deep" section of `benchmarks/bench.py`.

    python benchmarks/bench.py --skip whole,compile,measures,step                   # 6 blocks
    python benchmarks/bench.py --skip whole,compile,measures,step --depths 1,2,4,6

For each normalization of the deep preset (`config.DEEP`: post-norm blocks, 4 heads, D = 128,
L = 41, its batch; `--norms` chooses others) and each depth N (`--depths`, default the
preset's 6), the model is built twice: its N blocks one `nn.scan` over parameters stacked
on a block axis (`model.build(..., scan_unroll=1)`, as the analysis builds it: the program
holds one block whatever N), and with the scan unrolled (`scan_unroll=N`: N copies of the
block in the program, the same values; as training builds it up to
`model.MAX_UNROLLED_BLOCKS` blocks). For each:

- trace and lower / XLA compile seconds, ahead of time (`jit(...).lower(...).compile()`,
  JAX's in-memory caches cleared first, no persistent cache), of the training program
  (`programs.train_chunk`, one seed, `--chunk` steps: the step the pipeline trains with,
  Adam at the preset's rate) and of the analysis (`analysis.analyze_seeds`, one seed, the
  default measure level `families.DEFAULT_LEVEL`, the preset's slice); an analysis that
  cannot be built at that depth is reported as such, with its error, and the rest timed;
- seconds per training step: the two compiled programs and the reference's PyTorch loop
  (`torch_reference.make_deep_model`, `make_optimizer`, `train_steps` on the notebook's
  per-example batches, PyTorch's default thread count, as bench.py's step section) run in
  turn for `--rounds` rounds of `--chunk` steps each; the median round.

One block (N = 1) is a block without a scan, so it has one program, not two. Before
timing, the rolled and unrolled programs' losses over one chunk from the same initial
states must agree, and the PyTorch model must have as many parameters as jaxnorm's: the
ratios compare the same computation.
"""

from __future__ import annotations

import dataclasses
import statistics

import jax
import jax.numpy as jnp
import numpy as np
import timing

from jaxnorm import analysis, config, families, keys, programs
from jaxnorm import model as model_lib
from jaxnorm import spec as spec_lib

# Relative difference allowed between the losses of the rolled and unrolled programs over
# one chunk: the same operations, which XLA may fuse and order differently in float32.
SAME_LOSSES_RTOL = 1e-4


@dataclasses.dataclass(frozen=True)
class DeepTimes:
  """What the section measures of one normalization at one depth.

  step_s: "scan", "unrolled" (absent at depth 1), "pytorch" -> seconds per step, one value
    per round.
  train_compile, analysis_compile: "scan", "unrolled" -> (trace and lower seconds, XLA
    compile seconds) of that program, or why it could not be built (a string).
  """

  norm: str
  depth: int
  step_s: dict[str, list[float]]
  train_compile: dict[str, tuple[float, float]]
  analysis_compile: dict[str, tuple[float, float] | str]


def unroll_ways(depth: int) -> dict[str, int]:
  """Way of building the blocks -> `scan_unroll`: one scan step per block, or all N blocks
  in one step; one block has no scan, so only "scan"."""
  return {"scan": 1} | ({"unrolled": depth} if depth > 1 else {})


def parameter_count(tree) -> int:
  """Numbers in a tree of arrays or shapes (`jax.ShapeDtypeStruct`s)."""
  return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def check_same_losses(losses: dict[str, np.ndarray]) -> None:
  """Raises ValueError unless every way's losses equal the first way's within
  `SAME_LOSSES_RTOL` (relative to each loss)."""
  (first, expected), *others = losses.items()
  for name, got in others:
    if not np.allclose(got, expected, rtol=SAME_LOSSES_RTOL, atol=0.0):
      worst = float(np.max(np.abs(got - expected) / np.abs(expected)))
      raise ValueError(
        f"the {name} program's losses differ from the {first} program's (largest relative "
        f"difference {worst:.3g} > {SAME_LOSSES_RTOL}): they do not compute the same model"
      )


def failure(error: Exception) -> str:
  """A table cell saying why a program could not be built: its error's type and first
  line, at most 80 characters, without the table's "|"."""
  first_line = (str(error).splitlines() or [""])[0][:80].replace("|", "/")
  return f"fails: {type(error).__name__}: {first_line}"


def compile_programs(cfg: config.Config, norm: str, scan_unroll: int, chunk: int):
  """(training compile seconds, the compiled training program, analysis compile seconds
  or why it could not be built) of the model of `cfg` built with `scan_unroll`, one seed,
  each after `jax.clear_caches()` so that nothing traced before is reused."""
  m = model_lib.build(cfg, norm, scan_unroll=scan_unroll)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  offsets, alphas, _ = programs.slice_axes(spec_lib.ExperimentSpec(cfg))
  with jax.default_matmul_precision(cfg.matmul_precision):
    states = jax.eval_shape(lambda: programs.init_states(m, cfg.task, k.train, lr))
    jax.clear_caches()
    *train_s, train = timing.lower_and_compile(programs.train_chunk, m, cfg.task, states, chunk)
    jax.clear_caches()
    try:
      analysis_s = timing.lower_and_compile(
        analysis.analyze_seeds,
        m,
        cfg.task,
        families.MeasureConfig(),
        states.params,
        states.batch_stats,
        k,
        offsets,
        alphas,
      )[:2]
    except Exception as e:  # noqa: BLE001 - reported in the table; the rest is still timed
      analysis_s = failure(e)
  return tuple(train_s), train, analysis_s


def initial_states(cfg: config.Config, norm: str):
  """One seed's (seed 0) fresh training states of the model of `cfg`."""
  m = model_lib.build(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  with jax.default_matmul_precision(cfg.matmul_precision):
    return programs.init_states(m, cfg.task, k.train, lr)


def deep_times(cfg: config.Config, norm: str, depth: int, chunk: int, rounds: int) -> DeepTimes:
  """The section's measures (`DeepTimes`) of `norm` at `depth` blocks of `cfg`. Raises
  ValueError when the PyTorch model's parameter count differs from jaxnorm's (before
  compiling anything) or the ways' losses differ (`check_same_losses`)."""
  from jaxnorm import torch_reference as ref

  cfg = cfg.replace(num_blocks=depth)
  states = initial_states(cfg, norm)
  torch_model = ref.make_deep_model(cfg, norm, seed=0)
  torch_count = sum(p.numel() for p in torch_model.parameters())
  if torch_count != parameter_count(states.params):
    raise ValueError(
      f"{norm} at depth {depth}: the PyTorch model has {torch_count} parameters, jaxnorm's "
      f"{parameter_count(states.params)}: they are not the same model"
    )
  train_compile, analysis_compile, runs, first_losses = {}, {}, {}, {}
  for way, unroll in unroll_ways(depth).items():
    train_compile[way], program, analysis_compile[way] = compile_programs(cfg, norm, unroll, chunk)
    runs[way] = timing.jax_chunk(program, jax.tree.map(jnp.copy, states))
    first_losses[way] = np.asarray(runs[way]())  # warm up
  check_same_losses(first_losses)
  runs["pytorch"] = timing.torch_chunk(torch_model, cfg, norm, chunk)
  seconds = timing.alternate(runs, rounds)
  step_s = {way: [s / chunk for s in round_s] for way, round_s in seconds.items()}
  return DeepTimes(norm, depth, step_s, train_compile, analysis_compile)


def _ms(step_s: dict[str, list[float]], way: str) -> str:
  return f"{statistics.median(step_s[way]) * 1e3:.2f}" if way in step_s else "-"


def _ratio(step_s: dict[str, list[float]], way: str) -> str:
  if way not in step_s:
    return "-"
  return f"{statistics.median(step_s['pytorch']) / statistics.median(step_s[way]):.1f}x"


def _compile_cell(times: dict, way: str) -> str:
  if way not in times:
    return "-"
  if isinstance(times[way], str):
    return times[way]
  return "{:.2f} / {:.2f}".format(*times[way])


def table(rows: list[DeepTimes]) -> list[str]:
  """The section's Markdown table: one line per normalization and depth, "-" where a way
  does not exist (one block has no scan to unroll)."""
  lines = [
    "| norm | blocks | scan | unrolled | PyTorch | PyTorch / scan | PyTorch / unrolled "
    "| train_chunk compile, scan | unrolled | analyze_seeds compile, scan | unrolled |",
    "|---|---|---|---|---|---|---|---|---|---|---|",
  ]
  for r in rows:
    cells = [r.norm, str(r.depth)]
    cells += [_ms(r.step_s, way) for way in ("scan", "unrolled", "pytorch")]
    cells += [_ratio(r.step_s, way) for way in ("scan", "unrolled")]
    for times in (r.train_compile, r.analysis_compile):
      cells += [_compile_cell(times, way) for way in ("scan", "unrolled")]
    lines.append("| " + " | ".join(cells) + " |")
  return lines


def section(cfg: config.Config, depths: list[int], chunk: int, rounds: int) -> list[str]:
  """The section's caption and table, for each normalization of `cfg` at each depth; each
  line printed as it is measured."""
  import torch

  lines = [
    f"Deep model ({cfg.norm_placement}-norm blocks, {cfg.num_heads} heads, batch "
    f"{cfg.batch_size}, D = {cfg.embed_dim}, L = {cfg.seq_len}; PyTorch with "
    f"{torch.get_num_threads()} threads): training step (ms; median of {rounds} alternating "
    f"rounds of {chunk} steps) with the blocks as one scan and unrolled, against the deep "
    "PyTorch reference; compile time (s; trace + lower / XLA compile; one seed; the analysis "
    f"at the {families.DEFAULT_LEVEL} level) of each program both ways:",
    "",
  ]
  rows = []
  for norm in cfg.norms:
    for depth in depths:
      rows.append(deep_times(cfg, norm, depth, chunk, rounds))
      print(table(rows[-1:])[-1], flush=True)
  return lines + table(rows)
