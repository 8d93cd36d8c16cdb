import os
import pathlib
import subprocess
import sys

from jaxnorm import runtime

_COMPILE_ONCE = """
import sys
import jax, jax.numpy as jnp
from jaxnorm import runtime
path = runtime.enable_compilation_cache(sys.argv[1], min_compile_time_secs=0)
print(path)
print(jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).sum())
"""


def test_default_cache_dir(monkeypatch, tmp_path):
  monkeypatch.delenv(runtime.CACHE_ENV, raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert runtime.default_cache_dir() == tmp_path / "jaxnorm" / "xla"
  monkeypatch.delenv("XDG_CACHE_HOME")
  assert runtime.default_cache_dir() == pathlib.Path.home() / ".cache" / "jaxnorm" / "xla"
  monkeypatch.setenv(runtime.CACHE_ENV, str(tmp_path / "mine"))
  assert runtime.default_cache_dir() == tmp_path / "mine"


def test_compilations_are_written_to_the_cache(tmp_path):
  """In a fresh process (the cache is process-wide state), a jitted call leaves an entry."""
  cache = tmp_path / "xla"
  env = dict(os.environ, PYTHONPATH=str(pathlib.Path(__file__).parents[1]), JAX_PLATFORMS="cpu")
  out = subprocess.run(
    [sys.executable, "-c", _COMPILE_ONCE, str(cache)],
    env=env,
    capture_output=True,
    text=True,
    check=True,
  )
  assert out.stdout.splitlines()[0] == str(cache)
  assert any(cache.iterdir())
