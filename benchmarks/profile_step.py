"""Where a training step's time goes: its FLOPs, its matrix products alone, the step itself.

    python benchmarks/profile_step.py                      # the paper preset, every norm
    python benchmarks/profile_step.py --norms batchnorm --top 25

For each normalization, on whatever device JAX uses:

* FLOPs of one step: XLA's cost analysis of one jitted `train.train_step` (the compiled
  chunk is a loop, whose body XLA's count does not multiply by the trip count), and the
  share of it in matrix products, counted from the step's jaxpr (2 m n k per product).
* The products alone: every `dot_general` of the step's jaxpr (its shapes, dimension
  numbers and precision), compiled and timed on its own, summed. Their FLOPs over that
  time is the rate this device gives these shapes, an upper bound for the step's own.
* The step: `programs.train_chunk` of --chunk steps, one seed, as benchmarks/bench.py
  times it, the minimum of --rounds; its FLOPs over that time is the rate achieved.
* With --top K, the K ops that took the most of one profiled chunk (`jax.profiler`),
  ops running at once sharing their time; --trace DIR keeps that trace for Perfetto or
  TensorBoard.

Nothing else should run on the machine meanwhile: timings are minima over rounds, and a
busy machine only makes them longer.
"""

from __future__ import annotations

import argparse
import collections
import glob
import math
import re
import sys
import tempfile
import time

import jax
import jax.numpy as jnp

from jaxnorm import config, data, keys, programs, train
from jaxnorm import model as model_lib


def dot_products(jaxpr) -> list:
  """Every dot_general equation of a (closed) jaxpr, sub-jaxprs included."""
  jaxpr = getattr(jaxpr, "jaxpr", jaxpr)
  found = []
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == "dot_general":
      found.append(eqn)
    for value in eqn.params.values():
      for sub in value if isinstance(value, (list, tuple)) else (value,):
        if hasattr(sub, "eqns") or hasattr(getattr(sub, "jaxpr", None), "eqns"):
          found += dot_products(sub)
  return found


def dot_flops(eqn) -> int:
  lhs, rhs = (v.aval.shape for v in eqn.invars)
  (contract, _), _ = eqn.params["dimension_numbers"]
  k = math.prod(lhs[i] for i in contract)
  return 2 * math.prod(eqn.outvars[0].aval.shape) * k


def best_of(fn, rounds: int) -> float:
  """Minimum wall seconds of fn() over `rounds` calls, after one warm-up call."""
  fn()
  times = []
  for _ in range(rounds):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def products_alone(eqns, rounds: int) -> float:
  """Seconds of every product of `eqns` run alone, each shape compiled once, summed."""
  counts = collections.Counter()
  for eqn in eqns:
    lhs, rhs = (v.aval for v in eqn.invars)
    p = eqn.params
    counts[
      (lhs.shape, lhs.dtype, rhs.shape, rhs.dtype, p["dimension_numbers"], p["precision"])
    ] += 1
  total = 0.0
  key = jax.random.key(0)
  for (ls, ld, rs, rd, dims, precision), count in counts.items():
    a, b = jax.random.normal(key, ls, ld), jax.random.normal(key, rs, rd)
    product = jax.jit(lambda a, b, d=dims, p=precision: jax.lax.dot_general(a, b, d, p))
    compiled = product.lower(a, b).compile()
    total += count * best_of(lambda c=compiled, a=a, b=b: jax.block_until_ready(c(a, b)), rounds)
  return total


def top_ops(trace_dir: str, steps: int, k: int) -> list[tuple[float, str]]:
  """(ms per step, op) of the k ops with most wall time in the trace; ops that overlap in
  time share it."""
  path = sorted(glob.glob(f"{trace_dir}/**/*.xplane.pb", recursive=True))[-1]
  profile = jax.profiler.ProfileData.from_file(path)
  skip = ("ThunkExecutor", "SlinkyThreadPool", "ThreadpoolListener", "end:", "while", "call")
  events = [
    (event.start_ns, event.start_ns + event.duration_ns, event.name)
    for plane in profile.planes
    for line in plane.lines
    if line.name.startswith("tf_XLA")
    for event in line.events
    if not event.name.startswith(skip)
  ]
  edges = sorted([(s, 1, i) for i, (s, _, _) in enumerate(events)])
  edges += sorted([(e, -1, i) for i, (_, e, _) in enumerate(events)])
  edges.sort()
  share, active, last = collections.Counter(), set(), None
  for t, kind, i in edges:
    if last is not None and active:
      for j in active:
        share[events[j][2]] += (t - last) / len(active)
    (active.add if kind == 1 else active.discard)(i)
    last = t
  return [(ns / 1e6 / steps, name) for name, ns in share.most_common(k)]


def describe(hlo: str) -> dict[str, str]:
  """Op name -> its result shape, and "(product)" for a fusion that holds a dot, from the
  compiled program's text."""
  bodies = dict(re.findall(r"^%?(\S+) \(.*?\{\n(.*?)\n\}", hlo, re.M | re.S))
  out = {}
  for name, shape, op, rest in re.findall(r"^\s*%?(\S+) = (\S+) (\S+?)\((.*)$", hlo, re.M):
    called = re.search(r"calls=%?([\w.]+)", rest)
    product = op == "dot" or (called and " dot(" in bodies.get(called.group(1), ""))
    out[name] = f"{shape.split('{')[0]}{' (product)' if product else ''}"
  return out


def profile(cfg: config.Config, norm: str, args) -> dict:
  m = model_lib.build(cfg, norm)
  k = jax.vmap(keys.run_keys)(jnp.arange(1))
  lr = jnp.full(1, cfg.learning_rate_for(norm), jnp.float32)
  with jax.default_matmul_precision(cfg.matmul_precision):
    states = programs.init_states(m, cfg.task, k.train, lr)
    one = jax.tree.map(lambda a: a[0], states)
    tokens, labels = data.batch_at(one.data_key, 0, cfg.task)
    step = jax.jit(lambda s, t, y: train.train_step(m, s, t, y))
    cost = step.lower(one, tokens, labels).compile().cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    eqns = dot_products(jax.make_jaxpr(step)(one, tokens, labels))
    chunk = programs.train_chunk.lower(m, cfg.task, states, args.chunk).compile()
  box = [states]

  def run_chunk():
    box[0], losses = chunk(box[0])
    jax.block_until_ready(losses)

  step_s = best_of(run_chunk, args.rounds) / args.chunk
  out = {
    "flops": cost["flops"],
    "dot_flops": sum(dot_flops(e) for e in eqns),
    "dots": len(eqns),
    "dots_alone_s": products_alone(eqns, 5 * args.rounds),
    "step_s": step_s,
  }
  if args.top or args.trace:
    trace_dir = args.trace or tempfile.mkdtemp(prefix="jaxnorm-profile-")
    with jax.profiler.trace(trace_dir):
      run_chunk()
    shapes = describe(chunk.as_text())
    top = top_ops(trace_dir, args.chunk, args.top) if args.top else []
    out["top"] = [(ms, f"{name:28s} {shapes.get(name, '')}") for ms, name in top]
  return out


def main() -> int:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--preset", default="paper", choices=sorted(config.PRESETS))
  p.add_argument("--norms", help="comma-separated; default: the preset's")
  p.add_argument("--chunk", type=int, default=50, help="steps per timed chunk")
  p.add_argument("--rounds", type=int, default=5, help="timed chunks (minimum taken)")
  p.add_argument("--top", type=int, default=0, help="list the K costliest ops of the step")
  p.add_argument("--trace", help="keep the profile of one chunk in this folder")
  args = p.parse_args()
  cfg = config.PRESETS[args.preset]
  norms = args.norms.split(",") if args.norms else cfg.norms
  dev = jax.devices()[0]
  print(f"{dev.platform} device: {dev.device_kind}; jax {jax.__version__}; preset {args.preset}")
  print()
  print(
    "| norm | step GFLOP (XLA) | in products | products alone: ms, GFLOP/s | "
    "step: ms, GFLOP/s | step / products alone |"
  )
  print("|---|---|---|---|---|---|")
  tops = {}
  for norm in norms:
    r = profile(cfg, norm, args)
    alone_rate = r["dot_flops"] / r["dots_alone_s"] / 1e9
    step_rate = r["flops"] / r["step_s"] / 1e9
    print(
      f"| {norm} | {r['flops'] / 1e9:.2f} | {r['dot_flops'] / 1e9:.2f} ({r['dots']} products) "
      f"| {r['dots_alone_s'] * 1e3:.2f}, {alone_rate:.0f} | {r['step_s'] * 1e3:.2f}, "
      f"{step_rate:.0f} | {r['step_s'] / r['dots_alone_s']:.2f} |",
      flush=True,
    )
    tops[norm] = r.get("top", [])
  for norm, top in tops.items():
    if top:
      print(f"\n{norm}: costliest ops (ms per step, wall time shared among concurrent ops)")
      for ms, name in top:
        print(f"  {ms:7.3f}  {name}")
  return 0


if __name__ == "__main__":
  sys.exit(main())
