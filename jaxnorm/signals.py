"""The stop signals of a run and their handlers, in one place: a closed terminal (SIGHUP),
Ctrl-C (SIGINT) and SIGTERM stop a run alike (`exits` turns them into exit statuses,
`runfolder` defers them while it swaps a run folder in)."""

from __future__ import annotations

import contextlib
import signal
import threading

STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_handled(handler):
  """Within the block, `handler(signum, frame)` handles the `STOP_SIGNALS`; the previous
  handlers come back after it. In the main thread only (elsewhere Python cannot set
  handlers, and the block runs as is)."""
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = {s: signal.signal(s, handler) for s in STOP_SIGNALS}
  try:
    yield
  finally:
    for s, old in previous.items():
      signal.signal(s, old)


@contextlib.contextmanager
def signals_deferred():
  """Stop signals that arrive within the block take effect when it ends, so a
  Ctrl-C never lands between the swap and the record that it happened.

  Python runs signal handlers in the main thread whichever thread the kernel delivered the
  signal to, so handlers (not a signal mask) defer them: they are noted and raised again
  after the block, under the handlers that were in place before it.
  """
  received: list[int] = []
  with signals_handled(lambda signum, frame: received.append(signum)):
    yield
  if received:
    signal.raise_signal(received[0])


def ignore_stop_signals() -> None:
  """From now on the stop signals are ignored (in the main thread; elsewhere a no-op)."""
  if threading.current_thread() is threading.main_thread():
    for s in STOP_SIGNALS:
      signal.signal(s, signal.SIG_IGN)
