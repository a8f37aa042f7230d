r"""Runs one experiment command as several JAX processes on this machine, as on a cluster.

  python -m experiments.launch --processes=2 --devices_per_process=2 -- \
      python -m experiments.random_sets --config=experiments/configs/random_sets.py:test \
      --workdir=workdirs/rs_2proc

Each process gets its own CPU devices (``--xla_force_host_platform_device_count``) and the
coordinator's loopback address (see `experiments.common.distributed`); together they form one
``data`` mesh of ``processes x devices_per_process`` devices, and each reads its share of every
batch. Process 0's output is shown as it is; the others' lines are prefixed with ``[p<i>]``
(``--quiet_others`` hides them). If a process fails or is killed, the others end on their own
once JAX's coordination service misses its heartbeats (``--heartbeat_timeout``), and the
launcher stops any still running after a grace period; it exits with the first failure's code.
Ctrl-C is passed on to every process (each then saves a checkpoint, together, and exits).

On a cluster, run the experiment command itself under the scheduler (e.g. ``srun``) with
``--config.distributed=True``: ``jax.distributed.initialize()`` reads the cluster's variables.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

from absl import app, flags

from experiments.common import distributed

_FLAGS = flags.FLAGS
flags.DEFINE_integer("processes", 2, "Number of processes.", lower_bound=1)
flags.DEFINE_integer("devices_per_process", 1, "CPU devices of each process.", lower_bound=1)
flags.DEFINE_integer("port", 0, "Coordinator port on 127.0.0.1 (0: a free one).", lower_bound=0)
flags.DEFINE_integer("heartbeat_timeout", 10, "Seconds without heartbeats before a process "
                     "counts as dead and the others stop.", lower_bound=1)
flags.DEFINE_float("grace", 30.0, "Seconds the others get to end on their own after a failure.")
flags.DEFINE_bool("quiet_others", False, "Hide the output of processes other than 0.")


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
    sock.bind(("127.0.0.1", 0))
    return sock.getsockname()[1]


def process_env(base: dict[str, str], *, index: int, processes: int, devices: int, port: int,
                heartbeat_timeout: int) -> dict[str, str]:
  """The environment of process ``index``: its device count and the coordinator's address."""
  env = dict(base)
  xla_flags = [f for f in env.get("XLA_FLAGS", "").split()
               if not f.startswith("--xla_force_host_platform_device_count")]
  env["XLA_FLAGS"] = " ".join([*xla_flags, f"--xla_force_host_platform_device_count={devices}"])
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONUNBUFFERED"] = "1"
  env[distributed.ADDRESS] = f"127.0.0.1:{port}"
  env[distributed.NUM_PROCESSES] = str(processes)
  env[distributed.PROCESS_ID] = str(index)
  env[distributed.HEARTBEAT_TIMEOUT] = str(heartbeat_timeout)
  return env


def _relay(stream, prefix: str, show: bool) -> None:
  for line in iter(stream.readline, b""):
    if show:
      sys.stdout.buffer.write(prefix.encode() + line)
      sys.stdout.buffer.flush()
  stream.close()


def launch(command: list[str], *, processes: int, devices_per_process: int, port: int = 0,
           heartbeat_timeout: int = 10, grace: float = 30.0, quiet_others: bool = False) -> int:
  """Starts ``processes`` copies of ``command``, waits for them; returns the exit code."""
  if not command:
    raise ValueError("no command to launch: put it after `--`")
  port = port or free_port()
  children, relays = [], []
  for index in range(processes):
    env = process_env(os.environ, index=index, processes=processes, devices=devices_per_process,
                      port=port, heartbeat_timeout=heartbeat_timeout)
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    relay = threading.Thread(
      target=_relay, args=(child.stdout, "" if index == 0 else f"[p{index}] ",
                           index == 0 or not quiet_others), daemon=True)
    relay.start()
    children.append(child)
    relays.append(relay)

  def forward(signum, frame):
    del frame
    for child in children:
      if child.poll() is None:
        child.send_signal(signum)

  previous = signal.signal(signal.SIGINT, forward)
  try:
    failed = None  # (index, code) of the first process that failed
    deadline = None
    while any(child.poll() is None for child in children):
      for index, child in enumerate(children):
        code = child.poll()
        if code not in (None, 0) and failed is None:
          failed = (index, code)
          what = f"signal {-code}" if code < 0 else f"exit code {code}"
          print(f"experiments.launch: process {index} failed ({what}); the others stop once "
                f"they miss its heartbeats (within ~{heartbeat_timeout} s)", file=sys.stderr,
                flush=True)
          deadline = time.monotonic() + grace
      if deadline is not None and time.monotonic() > deadline:
        for index, child in enumerate(children):
          if child.poll() is None:
            print(f"experiments.launch: stopping process {index}, still running {grace:.0f} s "
                  "after the failure", file=sys.stderr, flush=True)
            child.kill()
        break
      time.sleep(0.2)
    for child in children:
      child.wait()
    for relay in relays:
      relay.join(timeout=5)
  finally:
    signal.signal(signal.SIGINT, previous)
  if failed is None:
    failed = next(((i, c.returncode) for i, c in enumerate(children) if c.returncode), None)
  if failed is None:
    return 0
  index, code = failed
  return code if code > 0 else 128 - code


def main(argv: list[str]) -> None:
  command = argv[1:]
  if command and command[0] == "--":
    command = command[1:]
  code = launch(command, processes=_FLAGS.processes, devices_per_process=_FLAGS.devices_per_process,
                port=_FLAGS.port, heartbeat_timeout=_FLAGS.heartbeat_timeout, grace=_FLAGS.grace,
                quiet_others=_FLAGS.quiet_others)
  sys.exit(code)


if __name__ == "__main__":
  app.run(main)
