"""What a run writes and prints besides checkpoints: ``metrics.jsonl`` and TensorBoard events,
the ``config.json`` record (kept across resumes with other settings), the summary table
(``summary.md``, ``summary.json``) and the progress bar."""

from __future__ import annotations

import json
import logging
import pathlib
import sys

import ml_collections
from flax import traverse_util


class Writers:
  """Metrics to ``metrics.jsonl`` and TensorBoard event files in the workdir."""

  def __init__(self, workdir: pathlib.Path, enabled: bool):
    self.enabled = enabled
    self.jsonl = workdir / "metrics.jsonl"
    self.tb = None
    if enabled:
      from tensorboardX import SummaryWriter

      self.tb = SummaryWriter(str(workdir / "tensorboard"))

  def write(self, step: int, split: str, metrics: dict[str, float]) -> None:
    if not self.enabled:
      return
    record = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
    try:
      with self.jsonl.open("a") as f:
        f.write(json.dumps(record) + "\n")
      for k, v in metrics.items():
        self.tb.add_scalar(f"{split}/{k}", float(v), int(step))
      self.tb.flush()
    except OSError as err:
      logging.error("could not write metrics to %s: %s", self.jsonl.parent, err)

  def close(self) -> None:
    if self.tb is not None:
      self.tb.close()


def config_changes(old: dict, new: dict) -> list[str]:
  """What differs between two configs (as their JSON dicts): ``"model.momentum: 0.9 -> 0.7"``,
  one entry per dotted key, sorted; a key only one has shows ``(absent)`` on the other side."""
  a, b = (traverse_util.flatten_dict(c, sep=".") for c in (old, new))
  absent = object()
  out = []
  for key in sorted(set(a) | set(b)):
    x, y = a.get(key, absent), b.get(key, absent)
    if x != y:
      out.append(f"{key}: {'(absent)' if x is absent else repr(x)} -> "
                 f"{'(absent)' if y is absent else repr(y)}")
  return out


def record_config(config: ml_collections.ConfigDict, workdir: pathlib.Path,
                   resumed_step: int | None) -> None:
  """Writes ``config.json``, keeping the record of a run that this call resumes or evaluates.

  A fresh run writes its config. ``eval_only`` leaves an existing ``config.json`` alone. A
  resumed run whose config differs from the recorded one logs each difference, keeps the
  recorded file as ``config_before_step_<step>.json`` (numbered if that exists) and writes
  its own.
  """
  path = workdir / "config.json"
  text = config.to_json_best_effort(indent=2)
  eval_only = config.get("eval_only", False)
  if path.exists() and (resumed_step is not None or eval_only):
    try:
      recorded = json.loads(path.read_text())
    except (OSError, ValueError):
      recorded = None
    changes = (config_changes(recorded, json.loads(text)) if isinstance(recorded, dict)
               else [f"{path} could not be read"])
    if not changes:
      return
    if eval_only:
      logging.info("Evaluating with settings that differ from the run's config.json, which is "
                   "kept: %s", "; ".join(changes))
      return
    backup = workdir / f"config_before_step_{resumed_step}.json"
    count = 1
    while backup.exists():
      count += 1
      backup = workdir / f"config_before_step_{resumed_step}_{count}.json"
    backup.write_bytes(path.read_bytes())
    logging.warning("Resuming the run at step %d with a config that differs from the one it "
                    "ran with: %s. Its config.json until now is kept as %s.", resumed_step,
                    "; ".join(changes), backup)
  path.write_text(text)


def summarize(state, step, task, workdir, run_eval, is_main):
  """Evaluates every split and extra evaluation set with ``run_eval(step, split, state)``,
  prints the table (a row each) and saves it as summary.md and summary.json; returns ``state``."""
  results = {split: run_eval(step, split, state)
             for split in (*task.eval_splits, *task.extra_eval_splits)}
  if is_main:
    names = sorted({k for m in results.values() for k in m})
    lines = [f"| split | {' | '.join(names)} |", "|---|" + "---|" * len(names)]
    for split, metrics in results.items():
      cells = " | ".join(f"{metrics[k]:.5g}" if k in metrics else "" for k in names)
      lines.append(f"| {split} | {cells} |")
    table = "\n".join(lines)
    print(f"\n{task.name} after {step} steps:\n{table}\n", flush=True)
    (workdir / "summary.md").write_text(table + "\n")
    (workdir / "summary.json").write_text(json.dumps({"step": step, **results}, indent=2))
  return state


class Progress:
  """A tqdm bar with step, loss and speed; plain log lines where stderr is no terminal."""

  def __init__(self, start: int, total: int, enabled: bool):
    self.bar = None
    if enabled and sys.stderr.isatty():
      from tqdm import tqdm

      self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True)
    self.last = start

  def update(self, step: int, metrics: dict) -> None:
    text = f"loss={float(metrics['loss']):.4g}"
    if float(metrics.get("aux_loss", 0.0)):
      text += f" aux_loss={float(metrics['aux_loss']):.4g}"
    text += f" {metrics['steps_per_second']:.2f} steps/s"
    if self.bar is not None:
      self.bar.update(step - self.last)
      self.bar.set_postfix_str(text)
    else:
      logging.info("step %d: %s", step, text)
    self.last = step

  def close(self) -> None:
    if self.bar is not None:
      self.bar.close()


class _DropOrbaxInfo(logging.Filter):
  """Keeps orbax's warnings and errors, drops its per-save INFO lines."""

  def filter(self, record: logging.LogRecord) -> bool:
    return record.levelno >= logging.WARNING or "/orbax/" not in record.pathname


def quiet_orbax_logs() -> None:
  """Silences orbax's INFO chatter on absl's handler (our own INFO lines stay)."""
  from absl import logging as absl_logging

  handler = absl_logging.get_absl_handler()
  if not any(isinstance(f, _DropOrbaxInfo) for f in handler.filters):
    handler.addFilter(_DropOrbaxInfo())
