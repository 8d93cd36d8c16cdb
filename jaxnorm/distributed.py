"""Runs over several processes and hosts, with JAX's own multi-process runtime.

Every process runs the same script with the same options plus where it stands in the run:

    python experiments/exp2.py --seeds 4 --coordinator localhost:12355 \
      --num-processes 2 --process-id 0   # and the same with --process-id 1

or, under a cluster manager JAX detects (Slurm, Open MPI, a Cloud TPU slice, GKE),
`--distributed` alone. `initialize` calls `jax.distributed.initialize`; from then on
`jax.devices()` lists the devices of every process, the seed axis is split over all of them
(`programs.seed_mesh`), each process runs the same compiled programs on its own devices' seeds,
and `programs.to_host` gathers the results (`multihost_utils.process_allgather`) so that every
process holds the whole `result.ExperimentResult`. Process 0 alone writes the run folder,
draws the figures, prints and shows progress (`is_main`); the others stay quiet.

A process that fails prints one line and ends; the others learn of it at their next gather
(at the latest one training chunk later: the gather fails as soon as a peer's connection
closes) and end with one line that says so (`peer_failed`). The others wait at a `barrier`
until process 0 has written the run folder, so that its failure there is theirs too. On the
CPU the collectives are Gloo's over TCP (`jax_cpu_collectives_implementation`).
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import socket

import jax
import numpy as np
from jax.experimental import multihost_utils

# How long a process waits for the others to join (seconds): a process started late, or
# a coordinator address nobody listens on, fails with one line after this.
JOIN_TIMEOUT_S = 120


@dataclasses.dataclass(frozen=True)
class Processes:
  """Where this process stands in a run over several processes.

  coordinator: host:port of process 0's coordination service (None: JAX's detection of
    the cluster's environment; with `num_processes` and `process_id` None as well).
  """

  coordinator: str | None
  num_processes: int | None
  process_id: int | None

  def __post_init__(self):
    given = [x is not None for x in (self.coordinator, self.num_processes, self.process_id)]
    if any(given) and not all(given):
      raise ValueError(
        "--coordinator, --num-processes and --process-id go together (or --distributed "
        "alone, where JAX detects the cluster)"
      )
    if self.num_processes is not None and not 0 <= self.process_id < self.num_processes:
      raise ValueError(
        f"--process-id {self.process_id} is invalid: 0 .. {self.num_processes - 1} for "
        f"--num-processes {self.num_processes}"
      )
    if self.coordinator is not None:
      host, _, port = self.coordinator.rpartition(":")
      if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(
          f"--coordinator {self.coordinator!r} is invalid: host:port, e.g. localhost:12355"
        )


def initialize(processes: Processes) -> None:
  """Joins the run (`jax.distributed.initialize`); before any other use of JAX's devices.

  Raises RuntimeError with one line if the processes do not all join in JOIN_TIMEOUT_S,
  or JAX finds no cluster (`--distributed` outside one).
  """
  if processes.process_id == 0:
    check_port_free(processes.coordinator)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  # JAX's preemption service would take SIGTERM for a notice to checkpoint at a sync point
  # and carry on; jaxnorm has no such points, and SIGTERM stops a run as in one process.
  jax.config.update("jax_enable_preemption_service", False)
  try:
    jax.distributed.initialize(
      processes.coordinator,
      processes.num_processes,
      processes.process_id,
      initialization_timeout=JOIN_TIMEOUT_S,
    )
  except Exception as e:  # JAX raises several kinds; all mean the run cannot start
    first = (str(e).strip().splitlines() or [type(e).__name__])[0]
    if processes.coordinator is None:
      raise RuntimeError(
        f"--distributed: JAX finds no cluster here to take the processes from ({first}); "
        "give --coordinator, --num-processes and --process-id"
      ) from None
    raise RuntimeError(
      f"cannot join the run at {processes.coordinator} (the processes wait "
      f"{JOIN_TIMEOUT_S} s for each other): {first}"
    ) from None


def check_port_free(coordinator: str) -> None:
  """Raises RuntimeError with one line if the port of `coordinator` (host:port), where
  process 0 starts JAX's coordination service on every interface, is already taken on
  this machine: JAX's start-up would then fail after its join timeout, or crash."""
  port = int(coordinator.rpartition(":")[2])
  for family, address in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
    try:
      probe = socket.socket(family, socket.SOCK_STREAM)
    except OSError:  # no IPv6 on this machine
      continue
    with probe:
      try:
        # As a server binds: a port that only closed connections still hold is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((address, port))
        probe.listen()
      except OSError as e:
        if e.errno == errno.EADDRINUSE:
          raise RuntimeError(
            f"--coordinator {coordinator}: port {port} is in use by another program on this "
            "machine; choose a free port for process 0's coordination service"
          ) from None
        if e.errno != errno.EADDRNOTAVAIL:
          raise RuntimeError(f"--coordinator {coordinator}: cannot use port {port}: {e}") from None


def is_main() -> bool:
  """Whether this process writes, prints and shows progress: process 0 (or the only one)."""
  return jax.process_index() == 0


def check_same(text: str) -> None:
  """Raises ValueError unless every process of the run passes the same `text` (e.g. the
  experiment's spec): processes started with different options would run different
  programs and wait on each other forever. One process: nothing to compare."""
  if jax.process_count() == 1:
    return
  digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8)
  all_digests = multihost_utils.process_allgather(digest)  # (processes, 32)
  differ = [i for i, d in enumerate(all_digests) if not np.array_equal(d, all_digests[0])]
  if differ:
    raise ValueError(
      f"process(es) {', '.join(map(str, differ))} were started with other options than "
      "process 0: every process runs the same command (only --process-id and --out may differ)"
    )


def barrier(name: str) -> None:
  """Waits until every process of the run gets here (none alone: nothing to wait for).
  Raises, in the processes that wait, if another one stops before it gets here."""
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(name)


def where() -> str:
  """'process i of n: ' in a run over several processes, else ''."""
  if not jax.distributed.is_initialized():
    return ""
  return f"process {jax.process_index()} of {jax.process_count()}: "


def peer_failed(error: BaseException) -> bool:
  """Whether `error` is this process learning that another one stopped: a collective
  (Gloo) or the coordination service lost a peer."""
  if not jax.distributed.is_initialized():
    return False
  text = str(error)
  return any(mark in text for mark in ("Gloo", "heartbeat", "coordination service", "Connection"))
