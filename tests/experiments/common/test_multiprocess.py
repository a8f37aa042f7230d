"""Several JAX processes on this machine, as on a cluster (`experiments.launch`).

Each run is a real multi-process run: two processes of two CPU devices each meet through
`jax.distributed` on 127.0.0.1 and all-reduce over gloo. They are compared with one process of
four devices (the same mesh size, so the same per-device shares).
"""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

REPO = pathlib.Path(__file__).resolve().parents[3]
# Long enough to kill a process mid-run; a checkpoint every 10 steps.
RANDOM_SETS = ["-m", "experiments.random_sets",
               "--config=experiments/configs/random_sets.py:test",
               "--config.train.steps=120", "--config.train.checkpoint_every=10",
               "--config.train.log_every=10", "--config.train.eval_every=60"]
CLEVR = ["-m", "experiments.clevr", "--config=experiments/configs/clevr.py:test",
         "--config.eval.pictures=False"]
HEARTBEAT = 10  # seconds without heartbeats before the survivor stops

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="uses /proc to find processes")


def _env(devices: int) -> dict[str, str]:
  env = {k: v for k, v in os.environ.items() if not k.startswith("IDSPN_")}
  env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  env["JAX_PLATFORMS"] = "cpu"
  return env


def _launch_command(processes: int, *args: str) -> list[str]:
  return [sys.executable, "-m", "experiments.launch", f"--processes={processes}",
          "--devices_per_process=2", f"--heartbeat_timeout={HEARTBEAT}", "--grace=120", "--",
          sys.executable, *args]


def _run(command: list[str], *, devices: int = 2, timeout: float = 600
         ) -> subprocess.CompletedProcess:
  return subprocess.run(command, cwd=REPO, env=_env(devices), capture_output=True, text=True,
                        timeout=timeout)


def _records(workdir: pathlib.Path) -> list[dict]:
  return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(workdir: pathlib.Path) -> dict[tuple[str, int], float]:
  return {(r["split"], r["step"]): r["loss"] for r in _records(workdir)}


def _params(workdir: pathlib.Path, step: int) -> list[np.ndarray]:
  """The parameters of a checkpoint, read on one device whatever mesh wrote them."""
  path = workdir / "checkpoints" / str(step) / "state"
  checkpointer = ocp.StandardCheckpointer()
  meta = checkpointer.metadata(path)
  tree = getattr(getattr(meta, "item_metadata", meta), "tree", meta)
  device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), tree)
  return [np.asarray(x) for x in jax.tree.leaves(checkpointer.restore(path, target)["params"])]


@pytest.fixture(scope="module")
def random_sets_runs(tmp_path_factory) -> dict[str, pathlib.Path]:
  """Random sets :test, uninterrupted, as 2 processes x 2 devices and 1 process x 4."""
  root = tmp_path_factory.mktemp("random_sets")
  runs = {"two": root / "two", "one": root / "one"}
  done = _run(_launch_command(2, *RANDOM_SETS, f"--workdir={runs['two']}"))
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  done = _run([sys.executable, *RANDOM_SETS, f"--workdir={runs['one']}"], devices=4)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  return runs


def _assert_same_losses(two: pathlib.Path, one: pathlib.Path) -> None:
  two_losses, one_losses = _losses(two), _losses(one)
  assert two_losses.keys() == one_losses.keys()
  assert len([k for k in two_losses if k[0] == "train"]) >= 2
  for key in sorted(two_losses, key=str):  # the gradient all-reduce sums in another order
    np.testing.assert_allclose(two_losses[key], one_losses[key], rtol=2e-5, err_msg=str(key))


def test_two_processes_train_as_one_process_of_as_many_devices(random_sets_runs):
  _assert_same_losses(random_sets_runs["two"], random_sets_runs["one"])
  # Process 0 alone writes the workdir's logs and summary.
  summary = json.loads((random_sets_runs["two"] / "summary.json").read_text())
  assert summary["step"] == 120


def test_two_processes_train_clevr_as_one_process(tmp_path):
  data = tmp_path / "clevr_data"  # rendered once, by process 0, then read by both
  two, one = tmp_path / "two", tmp_path / "one"
  done = _run(_launch_command(2, *CLEVR, f"--config.data.root={data}", f"--workdir={two}"))
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  done = _run([sys.executable, *CLEVR, f"--config.data.root={data}", f"--workdir={one}"],
              devices=4)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  _assert_same_losses(two, one)


def _checkpoint_steps(workdir: pathlib.Path) -> list[int]:
  """The finished checkpoints (orbax writes each into a temporary folder first)."""
  folder = workdir / "checkpoints"
  if not folder.is_dir():
    return []
  return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _children(pid: int) -> list[int]:
  path = pathlib.Path(f"/proc/{pid}/task/{pid}/children")
  return [int(p) for p in path.read_text().split()] if path.exists() else []


def test_a_killed_process_stops_the_run_and_a_restart_resumes_it_exactly(
    random_sets_runs, tmp_path):
  workdir = tmp_path / "killed"
  log = (tmp_path / "launch.log").open("w")
  launcher = subprocess.Popen(_launch_command(2, *RANDOM_SETS, f"--workdir={workdir}"),
                              cwd=REPO, env=_env(2), stdout=log, stderr=subprocess.STDOUT)
  try:
    # Wait for a checkpoint past the first, then kill -9 process 1 mid-run.
    deadline = time.monotonic() + 300
    while not any(step >= 20 for step in _checkpoint_steps(workdir)):
      assert launcher.poll() is None, (tmp_path / "launch.log").read_text()[-3000:]
      assert time.monotonic() < deadline, "no checkpoint within 300 s"
      time.sleep(0.1)
    workers = _children(launcher.pid)
    assert len(workers) == 2
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.monotonic()
    code = launcher.wait(timeout=HEARTBEAT + 110)
  finally:
    if launcher.poll() is None:
      launcher.kill()
    log.close()
  output = (tmp_path / "launch.log").read_text()
  # The survivor ended by itself (the launcher's grace is 120 s), naming the dead process.
  assert time.monotonic() - killed_at < HEARTBEAT + 60, output[-3000:]
  assert code == 128 + signal.SIGKILL
  assert "process 1 failed (signal 9)" in output
  assert "stopping process" not in output  # not killed by the launcher
  assert "another task died" in output or "unhealthy" in output, output[-3000:]
  steps = _checkpoint_steps(workdir)
  assert steps and steps[-1] < 120  # stopped mid-run; its last checkpoint is kept

  resumed = _run(_launch_command(2, *RANDOM_SETS, f"--workdir={workdir}"))
  assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
  assert f"resumed from the checkpoint of step {steps[-1]}" in resumed.stdout + resumed.stderr
  reference = random_sets_runs["two"]
  for got, want in zip(_params(workdir, 120), _params(reference, 120), strict=True):
    np.testing.assert_array_equal(got, want)
  assert (json.loads((workdir / "summary.json").read_text())
          == json.loads((reference / "summary.json").read_text()))


def test_a_batch_the_processes_cannot_share_is_refused_before_training(tmp_path):
  done = _run(_launch_command(2, *RANDOM_SETS, "--config.train.batch_size=5",
                              f"--workdir={tmp_path / 'odd'}"), timeout=300)
  assert done.returncode != 0
  output = done.stdout + done.stderr
  assert "train.batch_size=5 cannot be split over 2 processes" in output
  assert not (tmp_path / "odd" / "checkpoints").exists()
