"""Joining a multi-process run: `jax.distributed` from the launcher's variables or a cluster's.

Each process of a multi-process run owns its local devices; `jax.distributed.initialize` makes
them one mesh. Two ways in:

* ``python -m experiments.launch --processes=P -- <command>`` starts P processes on this machine
  and hands each one ``IDSPN_COORDINATOR_ADDRESS`` (127.0.0.1:port), ``IDSPN_NUM_PROCESSES``
  and ``IDSPN_PROCESS_ID``; `initialize` reads them. On CPU, the cross-process collectives
  (the gradient all-reduce) run over TCP with gloo (``jax_cpu_collectives_implementation``).
* On a cluster (SLURM, a TPU pod slice, Open MPI), ``--config.distributed=True`` calls
  ``jax.distributed.initialize()`` without arguments, which reads the cluster's own environment.

A process that dies stops sending heartbeats; after ``IDSPN_HEARTBEAT_TIMEOUT`` seconds (default
100, the launcher sets 10) JAX's coordination service reports it to every other process, which
then ends with an error naming the dead task instead of waiting in a collective forever.
"""

from __future__ import annotations

import os

import jax

ADDRESS = "IDSPN_COORDINATOR_ADDRESS"
NUM_PROCESSES = "IDSPN_NUM_PROCESSES"
PROCESS_ID = "IDSPN_PROCESS_ID"
HEARTBEAT_TIMEOUT = "IDSPN_HEARTBEAT_TIMEOUT"


def launched() -> bool:
  """Whether this process was started by `experiments.launch` (its variables are set)."""
  return ADDRESS in os.environ


def _env_int(name: str) -> int:
  value = os.environ.get(name)
  try:
    return int(value)
  except (TypeError, ValueError):
    raise ValueError(f"{name} must be an integer, got {value!r} (set by experiments.launch)"
                     ) from None


def initialize(cluster: bool = False) -> None:
  """Joins the run: from the launcher's variables, or (``cluster``) from the cluster's.

  Does nothing for a single process without either. Must run before any JAX computation.
  """
  if jax.distributed.is_initialized():
    return
  timeout = _env_int(HEARTBEAT_TIMEOUT) if HEARTBEAT_TIMEOUT in os.environ else 100
  if launched():
    num_processes, process_id = _env_int(NUM_PROCESSES), _env_int(PROCESS_ID)
    if not 0 <= process_id < num_processes:
      raise ValueError(f"{PROCESS_ID}={process_id} is not in [0, {NUM_PROCESSES}={num_processes})")
    if jax.config.jax_platforms in (None, "", "cpu"):
      # Cross-process collectives on CPU devices need an implementation; gloo ships with jaxlib.
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
      coordinator_address=os.environ[ADDRESS], num_processes=num_processes,
      process_id=process_id, heartbeat_timeout_seconds=timeout,
    )
  elif cluster:
    jax.distributed.initialize(heartbeat_timeout_seconds=timeout)


_barriers = 0


def barrier(name: str, timeout_seconds: float = 600) -> None:
  """Waits until every process reaches this point (a no-op in a single process).

  Processes drift apart where one does more work than the others (process 0 writes logs and
  pictures) or compiles more slowly; CPU collectives give a process only 30 s to join a new
  gloo context, so the runner meets here, with a generous timeout, before the first training
  step and before each evaluation.
  """
  global _barriers
  if jax.process_count() == 1:
    return
  from jax._src import distributed as _state  # The client of jax.distributed.initialize.

  _barriers += 1
  _state.global_state.client.wait_at_barrier(f"idspn {name} #{_barriers}",
                                             int(timeout_seconds * 1000))


def check_batch_split(batch_size: int, what: str = "train.batch_size") -> None:
  """Refuses a batch that the processes, or their devices, cannot share equally."""
  processes, devices = jax.process_count(), jax.device_count()
  if batch_size % processes:
    raise ValueError(
      f"{what}={batch_size} cannot be split over {processes} processes: each process reads "
      f"an equal share of every batch, so choose a multiple of {processes}"
    )
  if batch_size % devices:
    raise ValueError(
      f"{what}={batch_size} is not divisible by the number of devices ({devices}): choose a "
      f"multiple of {devices}"
    )
