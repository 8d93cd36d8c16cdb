"""Process-wide JAX settings that experiments opt into, and the environment a run records.

`enable_compilation_cache` turns on JAX's persistent compilation cache, so a second run
of an experiment (same code, shapes, JAX version and device) loads its compiled train
loop and analyses from disk instead of compiling them again.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import flax
import jax
import numpy as np
import optax

CACHE_ENV = "JAXNORM_CACHE_DIR"


def default_cache_dir() -> pathlib.Path:
  """$JAXNORM_CACHE_DIR, else $XDG_CACHE_HOME/jaxnorm/xla, else ~/.cache/jaxnorm/xla."""
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV]).expanduser()
  base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
  return pathlib.Path(base).expanduser() / "jaxnorm" / "xla"


def enable_compilation_cache(
  path: str | os.PathLike | None = None,
  *,
  min_compile_time_secs: float = 0.0,
  min_entry_size_bytes: int = -1,
) -> pathlib.Path:
  """Stores every compilation that took at least `min_compile_time_secs` under `path`
  (default: `default_cache_dir()`) and reuses it in later processes. Returns the path.

  Call it before the first jitted call whose compilation should be cached. Every
  program is kept by default (JAX's default threshold is 1 s): a run compiles few
  programs, and the smallest (`keys.run_keys`, 0.3 s on a busy 2-core CPU) would
  otherwise be kept or not as the machine's speed decides, and compiled again on the
  second run. `min_entry_size_bytes=-1` accepts entries of any size. The cache is trusted
  code: do not point it at a directory that others can write to. Raises OSError if the
  folder cannot be created or written.
  """
  cache_dir = pathlib.Path(path).expanduser() if path is not None else default_cache_dir()
  cache_dir.mkdir(parents=True, exist_ok=True)
  # A folder that exists but cannot be written would make JAX warn once per program and
  # cache nothing: refuse it like one that cannot be created.
  fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=cache_dir)
  os.close(fd)
  os.unlink(probe)
  jax.config.update("jax_compilation_cache_dir", str(cache_dir))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_time_secs))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", int(min_entry_size_bytes))
  return cache_dir


def check_backend() -> None:
  """Raises RuntimeError with one line if JAX cannot start the backend it is asked for
  (e.g. JAX_PLATFORMS=tpu on a machine without a TPU, or a GPU build without its
  driver), saying what to change."""
  try:
    jax.devices()
  except Exception as e:  # RuntimeError mostly; some plugins assert instead
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    asked = os.environ.get("JAX_PLATFORMS")
    cause = f"JAX_PLATFORMS={asked!r} asks for it" if asked else "no JAX_PLATFORMS is set"
    raise RuntimeError(
      f"JAX cannot start its backend ({first}); {cause}: set JAX_PLATFORMS to a platform "
      "this machine has (e.g. cpu), or unset it to let JAX choose"
    ) from None


def environment() -> dict[str, Any]:
  """Versions and the devices a run used."""
  device = jax.devices()[0]
  try:
    jaxnorm_version = version("jaxnorm")
  except PackageNotFoundError:  # run from a source tree that is not installed
    jaxnorm_version = None
  return {
    "jaxnorm": jaxnorm_version,
    "jax": jax.__version__,
    "flax": flax.__version__,
    "optax": optax.__version__,
    "numpy": np.__version__,
    "platform": device.platform,
    "device": device.device_kind,
    "device_count": jax.device_count(),  # over every process of a distributed run
    "process_count": jax.process_count(),
  }
