import json
import os
import pathlib
import subprocess
import sys

from jaxnorm import runtime

_COMPILE_ONCE = """
import sys
import jax, jax.numpy as jnp
from jaxnorm import runtime
path = runtime.enable_compilation_cache(sys.argv[1])
print(path)
print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum())
"""

# One small run (one model, two steps, every measure at its cheapest) with the scripts'
# compilation cache (every compilation kept, whatever it cost): prints JAX's counts of
# compilations that used the persistent cache and of those loaded from it.
_RUN_TWICE = """
import collections, json, sys
from jax._src import monitoring
from jaxnorm import config, measures, pipeline, runtime
from jaxnorm.spec import ExperimentSpec
from jaxnorm import families as families_lib
events = collections.Counter()
monitoring.register_event_listener(lambda event, **kwargs: events.update([event]))
runtime.enable_compilation_cache(sys.argv[1])
cfg = config.TINY.replace(steps=2, landscape_points=3, norms=("layernorm",))
cheap = families_lib.MeasureConfig(
  lanczos_iterations=3, trace_probes=2, sharpness_samples=2, slice_directions=2
)
pipeline.run(ExperimentSpec(cfg, num_seeds=1, measures=cheap, name="t"), progress=False)
print(json.dumps({
  "requests": events["/jax/compilation_cache/compile_requests_use_cache"],
  "hits": events["/jax/compilation_cache/cache_hits"],
}))
"""


def _stdout_lines(code: str, cache: pathlib.Path) -> list[str]:
  """The lines `code` prints, run in a fresh process (the cache is process-wide state) on
  the CPU with `cache` as its argument."""
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1]), JAX_PLATFORMS="cpu")
  return subprocess.run(
    [sys.executable, "-c", code, str(cache)], env=env, capture_output=True, text=True, check=True
  ).stdout.splitlines()


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert runtime.default_cache_dir() == tmp_path / "jaxnorm" / "xla"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert runtime.default_cache_dir() == pathlib.Path.home() / ".cache" / "jaxnorm" / "xla"
  monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "mine"))
  assert runtime.default_cache_dir() == tmp_path / "mine"


def test_compilations_are_written_to_the_cache(tmp_path):
  """In a fresh process, a jitted call leaves an entry."""
  cache = tmp_path / "xla"
  assert _stdout_lines(_COMPILE_ONCE, cache)[0] == str(cache)
  assert any(cache.iterdir())


def test_a_second_run_loads_every_program_and_compiles_none(tmp_path):
  """Two processes run the same small experiment on one fresh cache: the first writes every
  program it compiles (init, training chunk and the analysis among them), the second loads
  every one of them and writes nothing. JAX logs a program loaded from the cache as
  "Finished XLA compilation" too, with the seconds the load took; its events tell the two
  apart."""
  cache = tmp_path / "xla"

  def run() -> dict[str, int]:
    return json.loads(_stdout_lines(_RUN_TWICE, cache)[-1])

  first = run()
  written = sorted(p.name for p in cache.iterdir())
  programs = {name.rsplit("-", 2)[0] for name in written}
  assert {"jit_init_states", "jit_train_chunk", "jit_analyze_seeds"} <= programs, written
  second = run()
  assert second["requests"] == first["requests"] > 0
  assert second["hits"] == second["requests"], (first, second)
  assert sorted(p.name for p in cache.iterdir()) == written
