"""Checkpoints with orbax: the last K, the best by a metric, and recovery from bad ones."""

from __future__ import annotations

import logging
import os
import pathlib
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class CheckpointError(RuntimeError):
  """A checkpoint could not be written, or a workdir's checkpoints do not fit the model (the
  message says where and why)."""


def _manager(directory: pathlib.Path, *, keep: int, best_metric: str | None = None,
             best_mode: str = "min") -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
    max_to_keep=keep,
    create=True,
    # Synchronous saves: a save that returns is on disk, so Ctrl-C right after it is safe.
    enable_async_checkpointing=False,
    best_fn=(lambda metrics: float(metrics[best_metric])) if best_metric else None,
    best_mode=best_mode,
    keep_checkpoints_without_metrics=False if best_metric else True,
  )
  # A named item: orbax then never has to guess the layout from what is on disk.
  return ocp.CheckpointManager(directory.resolve(), item_names=("state",), options=options)


class Checkpoints:
  """The last ``keep`` checkpoints under ``workdir/checkpoints``, the best under ``workdir/best``.

  Orbax writes each checkpoint to a temporary folder and renames it when complete, so a
  killed save never looks like a checkpoint. A checkpoint that fails to restore (corrupt or
  truncated files) is skipped with a warning, and the previous one is tried; so is one whose
  parameters do not fit the model (see ``misfits``).
  """

  def __init__(self, workdir: str | os.PathLike, *, keep: int = 3, best_metric: str | None = None,
               best_mode: str = "min"):
    self.workdir = pathlib.Path(workdir)
    self.best_metric = best_metric
    self._last = _manager(self.workdir / "checkpoints", keep=keep)
    self._best = (
      _manager(self.workdir / "best", keep=1, best_metric=best_metric, best_mode=best_mode)
      if best_metric
      else None
    )

  def latest_step(self) -> int | None:
    return self._last.latest_step()

  def all_steps(self) -> list[int]:
    """The steps of the kept (last K) checkpoints, oldest first."""
    return sorted(self._last.all_steps())

  def misfits(self, abstract_state: Any, *, best: bool = False) -> dict[int, str]:
    """Checkpoints (or best checkpoints) whose parameters do not fit ``abstract_state``:
    step -> how they differ. Read from orbax's metadata, without restoring."""
    manager = self._best if best else self._last
    if manager is None:
      return {}
    out = {}
    for step in manager.all_steps():
      misfit = _params_misfit(pathlib.Path(manager.directory) / str(step) / "state",
                              abstract_state)
      if misfit:
        out[step] = misfit
    return out

  def restore(self, step: int, abstract_state: Any) -> Any:
    """The checkpoint of ``step``, shaped like ``abstract_state``."""
    restored = self._last.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
    return restored.state

  def save(self, step: int, state: Any) -> None:
    """Saves ``state`` as step ``step`` (replacing an existing checkpoint of that step)."""
    self._save(self._last, step, state)

  def save_best(self, step: int, state: Any, metrics: dict[str, float]) -> None:
    """Offers ``state`` to the best-checkpoint slot with its evaluation ``metrics``."""
    if self._best is None:
      return
    if self.best_metric not in metrics:
      raise KeyError(
        f"best_metric {self.best_metric!r} is not among the evaluation metrics {sorted(metrics)}"
      )
    self._save(self._best, step, state, metrics={k: float(v) for k, v in metrics.items()})

  def _save(self, manager, step, state, metrics=None):
    try:
      if step in manager.all_steps():
        manager.delete(step)
      manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state)),
                   metrics=metrics, force=True)
      manager.wait_until_finished()
    except OSError as err:
      raise CheckpointError(
        f"could not write the checkpoint of step {step} under {manager.directory}: {err} "
        "(is the disk full or the folder read-only?); earlier checkpoints are untouched"
      ) from err

  def restore_latest(self, abstract_state: Any, *, best: bool = False) -> tuple[int, Any] | None:
    """Restores the newest readable checkpoint (or the best one), or None if there is none."""
    manager = self._best if best else self._last
    if manager is None:
      raise ValueError("no best checkpoint is kept: set train.best_metric")
    # Checked before restoring: orbax would fail deep inside its async reads.
    misfits = self.misfits(abstract_state, best=best)
    for step in sorted(manager.all_steps(), reverse=True):
      if step in misfits:
        logging.warning("checkpoint of step %d under %s does not fit this model: %s", step,
                        manager.directory, misfits[step])
        continue
      try:
        state = manager.restore(
          step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state))
        ).state
      except Exception as err:  # Any failure to read means: fall back to an older one.
        logging.warning(
          "checkpoint of step %d under %s is unreadable (%s: %s); trying the previous one",
          step, manager.directory, type(err).__name__, str(err).splitlines()[0][:200],
        )
        continue
      if not all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(state)
                 if np.issubdtype(np.asarray(x).dtype, np.floating)):
        logging.warning("checkpoint of step %d holds non-finite values; trying the previous one",
                        step)
        continue
      return step, state
    return None

  def close(self) -> None:
    self._last.close()
    if self._best is not None:
      self._best.close()


def _shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  return {jax.tree_util.keystr(path): tuple(leaf.shape)
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _params_misfit(item_dir: pathlib.Path, abstract_state: Any, *, show: int = 3) -> str | None:
  """How the parameters stored in a checkpoint differ from ``abstract_state.params``, or None.

  None also when there is nothing to compare (no ``params``, no readable metadata): restoring
  then decides, and a corrupt checkpoint fails there.
  """
  params = getattr(abstract_state, "params", None)
  if params is None or not item_dir.is_dir():
    return None
  try:
    stored = ocp.StandardCheckpointHandler().metadata(item_dir).tree["params"]
  except Exception:  # Unreadable metadata: left to restore, which reports it.
    return None
  have, want = _shapes(stored), _shapes(params)
  problems = [f"{k} is {have[k]} in the checkpoint, {want[k]} in the model"
              for k in sorted(have.keys() & want.keys()) if have[k] != want[k]]
  problems += [f"{k} only in the checkpoint" for k in sorted(have.keys() - want.keys())]
  problems += [f"{k} only in the model" for k in sorted(want.keys() - have.keys())]
  if not problems:
    return None
  more = f" (and {len(problems) - show} more)" if len(problems) > show else ""
  return "; ".join(problems[:show]) + more
