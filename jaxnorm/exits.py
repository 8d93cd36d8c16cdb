"""How a command ends: its exit statuses, the stop signals and failures it turns into them,
and output that cannot be written.

Exit statuses (`EXIT_*`): 0 done; 1 done, but a model diverged; 2 bad options, an output
folder that cannot take the run or an environment that cannot run it, found before any
work starts; 3 an unexpected error (traceback in `<out>.failed/traceback.txt` where it can
be written), whatever raised it; 129, 130 and 143 stopped by SIGHUP (a closed terminal),
Ctrl-C (SIGINT) and SIGTERM. Every one of them ends with at most one line on standard
error, never a traceback. Whatever the status, the output folder holds one whole run: the
previous one, or the new one once it is complete (`runfolder`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn

from jaxnorm import distributed, runfolder, signals
from jaxnorm.norms import label

EXIT_DIVERGED = 1
EXIT_USAGE = 2
EXIT_FAILED = 3
EXIT_HUNG_UP = 128 + signal.SIGHUP  # 129
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143


class Interrupted(BaseException):
  """SIGHUP, SIGINT or SIGTERM arrived while `main` ran; `status` is 128 + the signal."""

  def __init__(self, signum: int):
    super().__init__(signum)
    self.status = 128 + signum


# The stop signals received since `interruptible` began (`raise_pending`).
_received: list[int] = []


def _interrupt(signum: int, frame) -> NoReturn:
  """SIGHUP/SIGINT/SIGTERM handler of `main`: raises `Interrupted`. Every time: Python drops an
  exception raised inside a garbage-collector callback, so a second Ctrl-C must still work;
  and the signal is recorded, so that `raise_pending` stops the run where one was lost."""
  del frame
  _received.append(signum)
  raise Interrupted(signum)


def raise_pending() -> None:
  """Raises `Interrupted` if a stop signal arrived since `interruptible` began: its own
  exception may have been dropped (raised inside a garbage-collector callback, as during
  long allocating work such as tokenizing), and the run must not go on as if none came."""
  if _received:
    raise Interrupted(_received[-1])


def _cleaning_up() -> None:
  """From here until `main` returns, the stop signals (SIGHUP, SIGINT, SIGTERM) are
  ignored: the cleanup after an interruption or a failure is not interrupted again."""
  signals.ignore_stop_signals()


class Position:
  """Where a run is, for the one line an interruption or failure prints."""

  def __init__(self):
    self.norm, self.phase, self.step, self.steps = "", "start", 0, 0

  def update(self, norm: str, phase: str, step: int) -> None:
    self.norm, self.phase, self.step = norm, phase, step

  def __str__(self) -> str:
    return {
      "start": "while compiling and starting the first model",
      "train": f"at step {self.step} of {self.steps} of {label(self.norm)}",
      "analyze": f"while analyzing {label(self.norm)}",
      "write": "while writing the run folder",
      "wait": "while process 0 wrote and reported the run",
      "done": "after the run folder was written",
    }[self.phase]


def _folder_state(staging: runfolder.Staging) -> str:
  if staging.committed:
    return f"{staging.target} holds the new run"
  if staging.had_previous_run:
    return f"{staging.target} still holds the previous run"
  return f"{staging.target} holds no run"


def guarded(prog: str, staging: runfolder.Staging | None, position: Position, work) -> int | None:
  """Runs `work()` (`main` has SIGHUP/SIGINT/SIGTERM raise `Interrupted`). Interrupted:
  removes the staging folder, prints one line, returns 129/130/143. Any other exception:
  keeps what was written and the traceback in `<out>.failed`, prints one line, returns 3.
  Otherwise returns None (and `work` has committed or discarded `staging`). `staging` is
  None in the processes of a distributed run other than process 0, which write nothing."""
  who = f"{prog}: {distributed.where()}"
  try:
    work()
    return None
  except (Interrupted, KeyboardInterrupt) as e:
    _cleaning_up()
    if staging is not None:
      staging.discard()
    state = "" if staging is None else f"; {_folder_state(staging)}"
    print(f"{who}interrupted {position}{state}", file=sys.stderr)
    return e.status if isinstance(e, Interrupted) else EXIT_INTERRUPTED
  except Exception as e:  # one line for the user, the traceback in a file
    _cleaning_up()
    text = traceback.format_exc()
    if staging is None:
      place = ""
    elif staging.committed:
      staging.discard()
      place = "; (traceback not kept)"
    else:
      place = _keep_failed(staging, text)
    first = (str(e).splitlines() or [""])[0]
    if distributed.peer_failed(e):
      cause = f"another process of the run stopped ({type(e).__name__}: {first[:200]})"
    else:
      cause = f"{type(e).__name__}: {first}"
    state = "" if staging is None else f"; {_folder_state(staging)}"
    print(f"{who}error {position}: {cause}{place}{state}", file=sys.stderr)
    return EXIT_FAILED
  finally:
    if staging is not None:
      staging.discard()  # a no-op after commit or keep_as_failed


def _keep_failed(staging: runfolder.Staging, text: str) -> str:
  """Moves what a failed run wrote to `<out>.failed` with the traceback `text`; what the
  one line says of it. Never raises: on a full disk the traceback may not fit."""
  try:
    failed = staging.keep_as_failed()
  except OSError as e:
    return f"; what was written could not be kept ({e.strerror or e})"
  try:
    runfolder.write_bytes(failed / "traceback.txt", text.encode())
  except OSError as e:
    (failed / "traceback.txt").unlink(missing_ok=True)
    return f"; what was written is in {failed}, the traceback could not be kept ({e.strerror or e})"
  return f"; what was written and the traceback are in {failed}"


class _Output:
  """A text stream that passes writes on to `stream` until one fails (standard output
  redirected to a full disk, a closed pipe); from then on it drops them, the file
  descriptor points to /dev/null (so that the interpreter's last flush cannot fail), and
  one line on standard error says so. Everything else is the stream's."""

  def __init__(self, stream, prog: str, name: str):
    self._stream, self._prog, self._name, self.failed = stream, prog, name, False

  def _fail(self, error: OSError) -> None:
    self.failed = True
    _to_devnull(self._stream)
    if self._name == "stdout":
      _say(
        f"{self._prog}: cannot write to standard output ({error.strerror or error}); the run "
        "goes on without printing",
        sys.stderr,
      )

  def write(self, text: str) -> int:
    if not self.failed:
      try:
        return self._stream.write(text)
      except OSError as e:
        self._fail(e)
    return len(text)

  def flush(self) -> None:
    if not self.failed:
      try:
        self._stream.flush()
      except OSError as e:
        self._fail(e)

  def __getattr__(self, name: str):
    return getattr(self._stream, name)


def _to_devnull(stream) -> None:
  """Points the file descriptor of `stream` to /dev/null, where every write succeeds."""
  with contextlib.suppress(OSError, ValueError):
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, stream.fileno())
    os.close(devnull)


def _say(line: str, stream=None) -> None:
  """Prints `line` on `stream` (default: standard error); an error writing it is ignored."""
  with contextlib.suppress(OSError, ValueError):
    print(line, file=stream or sys.stderr, flush=True)


@contextlib.contextmanager
def tolerant_output(prog: str):
  """Within the block, standard output and error that cannot be written are `_Output`s
  (a closed one, None in Python, writes to /dev/null)."""
  saved = sys.stdout, sys.stderr
  closed = [open(os.devnull, "w") for stream in saved if stream is None]  # noqa: SIM115
  out, err = (stream if stream is not None else closed.pop() for stream in saved)
  sys.stdout, sys.stderr = _Output(out, prog, "stdout"), _Output(err, prog, "stderr")
  try:
    yield
  finally:
    sys.stdout.flush()
    sys.stderr.flush()
    sys.stdout, sys.stderr = saved
    for stream in (out, err):
      if stream not in saved:
        stream.close()


def run_tool(prog: str, body: Callable[[], int]) -> int:
  """`body()` for the scripts that read saved runs (compare_runs.py, findings_tables.py):
  its parser's errors pass (one line, exit 2); Ctrl-C, one line and 130; any other
  exception, one line and 3. Standard output that cannot be written is 3 too, as printing
  is these tools' whole work (the line on standard error says so: `_Output`)."""
  with tolerant_output(prog):
    try:
      status = body()
      sys.stdout.flush()
      return EXIT_FAILED if status == 0 and getattr(sys.stdout, "failed", False) else status
    except KeyboardInterrupt:
      _say(f"{prog}: interrupted")
      return EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  a bug or an unforeseen input: one line
      _say(f"{prog}: error: {type(e).__name__}: {' '.join(str(e).split())}")
      return EXIT_FAILED


def interruptible(prog: str, body) -> int:
  """`body()` with SIGHUP/SIGINT/SIGTERM raising `Interrupted`, and output that cannot be
  written dropped (`_Output`). Interrupted before a run folder was begun (parsing,
  checks): one line and 129/130/143. Any exception that `body` lets escape: one line and
  3."""
  _received.clear()
  with tolerant_output(prog), signals.signals_handled(_interrupt):
    try:
      status = body()
    except (Interrupted, KeyboardInterrupt) as e:
      _cleaning_up()
      _say(f"{prog}: interrupted before the run started; nothing was written")
      status = e.status if isinstance(e, Interrupted) else EXIT_INTERRUPTED
    except Exception as e:  # noqa: BLE001  a bug or an unforeseen environment: one line
      _cleaning_up()
      first = (str(e).strip().splitlines() or [""])[0]
      _say(f"{prog}: {distributed.where()}error: {type(e).__name__}: {first}")
      status = EXIT_FAILED
  return status


def exit_process(status: int) -> NoReturn:
  """Ends the script with `status`. After an interruption or a failure, compilations may
  still run in worker threads, which the interpreter would wait for: the process ends at
  once instead, its output flushed. The status is known: stop signals that arrive from
  here on are ignored (a Ctrl-C as a finished run exits changes nothing)."""
  signals.ignore_stop_signals()
  for stream in (sys.stdout, sys.stderr):
    try:
      if stream is not None:  # None: closed when the process started
        stream.flush()
    except (OSError, ValueError, AttributeError):
      _to_devnull(stream)  # what it could not write is dropped, the exit is not stopped
  if status in (EXIT_FAILED, EXIT_HUNG_UP, EXIT_INTERRUPTED, EXIT_TERMINATED):
    os._exit(status)
  sys.exit(status)
