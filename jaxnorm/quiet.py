"""Imported first by every script, before the rest of jaxnorm and JAX (standard library
only; `import jaxnorm` itself loads nothing else): until
the command line takes over, a stop signal (SIGHUP, SIGINT, SIGTERM) ends the process
quietly with 128 + the signal, and an exception (a package that fails to import) with one
line and status 3, never a traceback and never 1, the status of a diverged model
(docs/cli.md, "Run folders and exit statuses"); a Python warning is one line too."""

import os
import signal
import sys
import warnings


def _stopped(signum: int, frame) -> None:
  os._exit(128 + signum)


def _failed(kind: type, error: BaseException, traceback) -> None:
  try:
    print(f"{os.path.basename(sys.argv[0])}: error: {kind.__name__}: {error}", file=sys.stderr)
    sys.stderr.flush()
  finally:
    os._exit(3)


def _warning(message, category: type, filename: str, lineno: int, line=None) -> str:
  return f"{os.path.basename(sys.argv[0])}: warning: {' '.join(str(message).split())}\n"


for _signal in (signal.SIGHUP, signal.SIGINT, signal.SIGTERM):
  signal.signal(_signal, _stopped)
sys.excepthook = _failed
warnings.formatwarning = _warning  # a warning, too, is one line
