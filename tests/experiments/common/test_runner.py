"""The shared runner, on the random-sets experiment's tiny `test` config."""

import errno
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from experiments.common import checkpointing, reporting, train
from experiments.configs import random_sets as random_sets_config
from experiments.random_sets import task as random_sets

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _config(**train_overrides):
  config = random_sets_config.get_config("test")
  config.train.learning_rate = 1e-2
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


def _records(workdir, split):
  lines = (pathlib.Path(workdir) / "metrics.jsonl").read_text().splitlines()
  return [r for r in map(json.loads, lines) if r["split"] == split]


def _params(state):
  return jax.tree.map(np.asarray, jax.device_get(state.params))


def _assert_trees_equal(a, b):
  for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
  """An uninterrupted run of 20 steps: (workdir, final parameters)."""
  workdir = tmp_path_factory.mktemp("uninterrupted")
  config = _config()
  state = train.train_and_evaluate(config, workdir, random_sets.create_task(config))
  return workdir, _params(state)


class _Interrupting:
  """Wraps a task's training data to raise ``error`` when step ``at`` is requested."""

  def __init__(self, task, at, error):
    self.task, self.at, self.error = task, at, error

  def __call__(self, start_step):
    for step, batch in enumerate(self.task.train_batches(start_step), start_step):
      if step == self.at:
        raise self.error
      yield batch


def _with_data(task, train_batches):
  import dataclasses

  return dataclasses.replace(task, train_batches=train_batches)


def test_tiny_run_trains_and_writes_everything(reference_run):
  workdir, _ = reference_run
  losses = [r["loss"] for r in _records(workdir, "train")]
  assert len(losses) == 4 and losses[-1] < losses[0]
  summary = json.loads((workdir / "summary.json").read_text())
  assert summary["step"] == 20 and set(summary) >= {"val", "test"}
  assert list((workdir / "tensorboard").glob("events.out.tfevents.*"))
  assert (workdir / "summary.md").read_text().startswith("| split | loss |")
  assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["10", "15", "20"]


def test_the_summary_reuses_the_loops_evaluation_of_the_same_state(reference_run):
  # The last state was scored at step 20 in the loop: the summary takes those metrics instead
  # of scoring it again (and writing its rows twice). "test" is scored by the summary alone.
  workdir, _ = reference_run
  summary = json.loads((workdir / "summary.json").read_text())
  for split in ("val", "test"):
    steps = [r["step"] for r in _records(workdir, split)]
    assert len(steps) == len(set(steps)), (split, steps)
  assert [r["step"] for r in _records(workdir, "val")] == [10, 20]
  assert [r["step"] for r in _records(workdir, "test")] == [20]
  assert summary["val"] == {k: v for k, v in _records(workdir, "val")[-1].items()
                            if k not in ("step", "split")}


def test_the_summary_of_the_best_checkpoint_reuses_its_evaluation(tmp_path):
  config = _config(steps=10, eval_every=5, checkpoint_every=5)
  config.eval.final_checkpoint = "best"
  train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  summary = json.loads((tmp_path / "summary.json").read_text())
  val = _records(tmp_path, "val")
  assert [r["step"] for r in val] == [5, 10]
  best = min(val, key=lambda r: r["loss"])
  assert summary["step"] == best["step"] and summary["val"]["loss"] == best["loss"]


def test_resume_after_ctrl_c_equals_an_uninterrupted_run(reference_run, tmp_path):
  _, expected = reference_run
  config = _config()
  task = random_sets.create_task(config)
  with pytest.raises(KeyboardInterrupt):
    train.train_and_evaluate(
      config, tmp_path, _with_data(task, _Interrupting(task, 12, KeyboardInterrupt()))
    )
  # Ctrl-C saved the state after the 12 finished steps.
  assert checkpointing.Checkpoints(tmp_path).latest_step() == 12
  state = train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  _assert_trees_equal(_params(state), expected)


def test_resume_after_a_crash_equals_an_uninterrupted_run(reference_run, tmp_path):
  _, expected = reference_run
  config = _config()
  task = random_sets.create_task(config)
  with pytest.raises(RuntimeError, match="simulated crash"):
    train.train_and_evaluate(
      config, tmp_path, _with_data(task, _Interrupting(task, 13, RuntimeError("simulated crash")))
    )
  assert checkpointing.Checkpoints(tmp_path).latest_step() == 10
  state = train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  _assert_trees_equal(_params(state), expected)


def test_eval_only_reproduces_the_logged_metric(reference_run, tmp_path):
  workdir, _ = reference_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  logged = [r for r in _records(tmp_path, "val") if r["step"] == 20][-1]["loss"]
  config = _config()
  config.eval_only = True
  train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  assert json.loads((tmp_path / "summary.json").read_text())["val"]["loss"] == logged


def test_a_resume_with_another_config_keeps_the_old_one_and_says_what_changed(
    reference_run, tmp_path, caplog):
  workdir, _ = reference_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  recorded = (tmp_path / "config.json").read_text()
  # Evaluating with other settings leaves the run's record alone.
  config = _config()
  config.eval_only = True
  config.eval.batch_size = 4
  train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  assert (tmp_path / "config.json").read_text() == recorded
  # Resuming with the same config changes nothing; with another, the differences are logged
  # and the old record is kept beside the new one.
  config = _config()
  train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  assert not list(tmp_path.glob("config_before_step_*.json"))
  config = _config(steps=25, learning_rate=5e-3)
  with caplog.at_level(logging.WARNING, logger="absl"):
    train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  assert "Resuming the run at step 20 with a config that differs" in caplog.text
  assert "train.learning_rate: 0.01 -> 0.005" in caplog.text
  assert "train.steps: 20 -> 25" in caplog.text
  assert (tmp_path / "config_before_step_20.json").read_text() == recorded
  assert json.loads((tmp_path / "config.json").read_text())["train"]["steps"] == 25


def test_config_changes_names_each_dotted_key():
  old = {"model": {"momentum": 0.9, "steps": 20}, "seed": 0, "data": {"root": "a"}}
  new = {"model": {"momentum": 0.7, "steps": 20, "pool": "fs"}, "seed": 0}
  assert reporting.config_changes(old, new) == [
    "data.root: 'a' -> (absent)", "model.momentum: 0.9 -> 0.7", "model.pool: (absent) -> 'fs'"]
  assert reporting.config_changes(new, new) == []


def test_eval_only_without_a_checkpoint_is_a_clear_error(tmp_path):
  config = _config()
  config.eval_only = True
  with pytest.raises(FileNotFoundError, match="no checkpoint found"):
    train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))


def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(reference_run, tmp_path, caplog):
  workdir, _ = reference_run
  shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
  for f in (tmp_path / "checkpoints" / "20").rglob("*"):
    if f.is_file():
      f.write_bytes(b"\x00garbage")
  (tmp_path / "checkpoints" / "25").mkdir()  # a partial checkpoint: an empty folder
  config = _config()
  mesh = train.create_mesh()
  state = train.create_train_state(config, random_sets.create_task(config), mesh)
  with caplog.at_level(logging.WARNING):
    step, restored = checkpointing.Checkpoints(tmp_path).restore_latest(state)
  assert step == 15
  assert "checkpoint of step 20" in caplog.text and "unreadable" in caplog.text
  assert all(np.all(np.isfinite(x)) for x in jax.tree.leaves(jax.device_get(restored.params)))


def test_checkpoints_of_another_model_are_refused_and_left_alone(reference_run, tmp_path):
  """Training with a model whose parameters differ from the workdir's checkpoints stops with a
  clear error instead of starting over there (which would replace config.json and, in time,
  the checkpoints)."""
  workdir, _ = reference_run
  shutil.copytree(workdir, tmp_path, dirs_exist_ok=True)
  before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  config = _config()
  config.model.hidden = 2 * config.model.hidden
  with pytest.raises(checkpointing.CheckpointError,
                     match=r"checkpoints of steps \[10, 15, 20\], and none of them restores.*"
                           r"\['mlp'\]\['Dense_0'\]\['kernel'\] is \(2, 16\) in the checkpoint, "
                           r"\(2, 32\) in the model"):
    train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))
  after = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
  assert after == before
  # With the last checkpoints deleted, the other model's best checkpoint still stops it.
  shutil.rmtree(tmp_path / "checkpoints")
  with pytest.raises(checkpointing.CheckpointError, match=r"holds a best checkpoint \(step "):
    train.train_and_evaluate(config, tmp_path, random_sets.create_task(config))


def test_a_full_disk_is_a_clear_error_and_keeps_earlier_checkpoints(reference_run, tmp_path,
                                                                     monkeypatch):
  workdir, _ = reference_run
  shutil.copytree(workdir / "checkpoints", tmp_path / "checkpoints")
  ckpt = checkpointing.Checkpoints(tmp_path)

  def full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(ckpt._last, "save", full)
  with pytest.raises(checkpointing.CheckpointError, match="disk full"):
    ckpt.save(25, {"x": np.zeros(3)})
  assert ckpt.latest_step() == 20


def test_an_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("not a folder")
  config = _config()
  with pytest.raises(OSError, match="not writable"):
    train.train_and_evaluate(config, blocker / "run", random_sets.create_task(config))


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  config = _config()
  task = random_sets.create_task(config)

  def poisoned(start_step):
    for step, batch in enumerate(task.train_batches(start_step), start_step):
      if step >= 12:
        batch = {"set": np.full_like(batch["set"], np.nan)}
      yield batch

  with pytest.raises(train.NonFiniteLossError, match="last good checkpoint is step 10"):
    train.train_and_evaluate(config, tmp_path, _with_data(task, poisoned))
  assert checkpointing.Checkpoints(tmp_path).latest_step() == 10


_MULTI_DEVICE_SCRIPT = """
import json, sys
import jax
from experiments.common import train
from experiments.configs import random_sets as cfg
from experiments.random_sets import task as random_sets
assert jax.device_count() == 4, jax.devices()
config = cfg.get_config("test")
config.train.learning_rate = 1e-2
try:
  config.train.batch_size = 6
  train.train_and_evaluate(config, sys.argv[1] + "/bad", random_sets.create_task(config))
except ValueError as err:
  print("BATCH ERROR:", err)
config.train.batch_size = 8
train.train_and_evaluate(config, sys.argv[1] + "/run", random_sets.create_task(config))
"""


def test_four_devices_give_the_same_loss_as_one(reference_run, tmp_path):
  workdir, _ = reference_run
  # The same numerics as this process (tests/conftest.py): float64 and rbg keys.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4",
             JAX_ENABLE_X64="1", JAX_DEFAULT_PRNG_IMPL="rbg")
  out = subprocess.run([sys.executable, "-c", _MULTI_DEVICE_SCRIPT, str(tmp_path)], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "not divisible by the number of devices (4)" in out.stdout
  four = json.loads((tmp_path / "run" / "summary.json").read_text())
  one = json.loads((workdir / "summary.json").read_text())
  np.testing.assert_allclose(four["val"]["loss"], one["val"]["loss"], rtol=1e-4)
  np.testing.assert_allclose(four["test"]["loss"], one["test"]["loss"], rtol=1e-4)


def test_a_config_typo_fails_fast(tmp_path):
  out = subprocess.run(
    [sys.executable, "-m", "experiments.random_sets",
     "--config=experiments/configs/random_sets.py:test", "--config.model.idspn.stepz=3",
     f"--workdir={tmp_path}"],
    cwd=ROOT, capture_output=True, text=True, timeout=120,
  )
  assert out.returncode != 0
  assert "stepz" in out.stderr
  assert not (tmp_path / "checkpoints").exists()
  with pytest.raises(ValueError, match="unknown variant"):
    random_sets_config.get_config("smal")


def test_weight_decay_uses_decoupled_adamw():
  """train.weight_decay > 0: with a zero gradient the first update is -lr * wd * params."""
  config = _config(weight_decay=0.5)
  mesh = train.create_mesh()
  state = train.create_train_state(config, random_sets.create_task(config), mesh)
  zeros = jax.tree.map(np.zeros_like, state.params)
  updates, _ = state.tx.update(zeros, state.opt_state, state.params)
  for update, param in zip(jax.tree.leaves(updates), jax.tree.leaves(state.params)):
    np.testing.assert_allclose(update, -1e-2 * 0.5 * np.asarray(param), rtol=1e-6, atol=1e-12)


@pytest.mark.parametrize("decay", ["step", "linear", "cosine"])
def test_learning_rate_decays_from_the_drop_step_to_the_factor(decay):
  """Constant lr until lr_drop_step; "step" drops at once, "linear"/"cosine" reach the factor
  at the last step, halfway down at the midpoint, and never rise."""
  config = _config(steps=100, learning_rate=1e-2, lr_drop_step=60, lr_drop_factor=0.1,
                   lr_decay=decay)
  lr = train.create_learning_rate(config)
  at = lambda step: float(lr(step))  # noqa: E731
  np.testing.assert_allclose([at(0), at(59)], [1e-2, 1e-2], rtol=1e-6)
  np.testing.assert_allclose(at(100), 1e-3, rtol=1e-5)
  np.testing.assert_allclose(at(80), 1e-3 if decay == "step" else 5.5e-3, rtol=1e-5)
  values = [at(step) for step in range(101)]
  assert all(b <= a + 1e-9 for a, b in zip(values, values[1:]))


def test_learning_rate_decay_options_are_checked():
  with pytest.raises(ValueError, match="lr_decay='cosin'"):
    train.create_learning_rate(_config(lr_drop_step=5, lr_decay="cosin"))
  with pytest.raises(ValueError, match="must come before train.steps"):
    train.create_learning_rate(_config(steps=10, lr_drop_step=10, lr_decay="linear"))


def test_sown_aux_losses_join_the_training_loss_only():
  """A model's ``self.sow(train.AUX_LOSSES, ...)`` terms are added to the training objective
  (and logged as aux_loss); evaluation ignores them."""
  import flax.linen as nn
  import optax

  from experiments.common.train import AUX_LOSSES  # `train` is shadowed inside the module.

  class Sowing(nn.Module):
    @nn.compact
    def __call__(self, batch, *, train=False, steps=None):
      w = self.param("w", nn.initializers.ones, ())
      self.sow(AUX_LOSSES, "penalty", 3.0 * w**2)
      return w * batch["x"]

  task = train.Task(
    name="sowing", model=Sowing(), loss=lambda pred, batch: (pred - batch["y"]) ** 2,
    train_batches=None, eval_batches=None, eval_metrics=None,
  )
  x, y = np.array([1.0, 2.0], np.float32), np.array([0.0, 1.0], np.float32)
  state = train.TrainState.create(apply_fn=task.model.apply, params={"w": np.float32(1.5)},
                                      tx=optax.sgd(0.1), batch_stats={}, rng=jax.random.key(0))
  new, metrics = train.train_step(state, {"x": x, "y": y}, task=task, inner_steps=1)
  w = 1.5
  task_loss = np.mean((w * x - y) ** 2)
  grad = np.mean(2 * (w * x - y) * x) + 6.0 * w
  np.testing.assert_allclose(metrics["loss"], task_loss, rtol=1e-6)
  np.testing.assert_allclose(metrics["aux_loss"], 3.0 * w**2, rtol=1e-6)
  np.testing.assert_allclose(new.params["w"], w - 0.1 * grad, rtol=1e-6)
  _, eval_loss = train.eval_step(state, {"x": x, "y": y}, task=task, inner_steps=1,
                                     key=jax.random.key(0))
  np.testing.assert_allclose(eval_loss, (w * x - y) ** 2, rtol=1e-6)
