"""Checks of config values before a run starts: a bad value fails at once, naming its key.

Each experiment's ``validate_config`` calls `check_run` (the loop's ``train.*`` and ``eval.*``
keys) and checks its own ``data.*`` and ``model.*`` keys with the helpers here;
``experiments.common.models.check_idspn`` checks the ``model.idspn`` sub-dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

LR_DECAYS = ("step", "linear", "cosine")
BEST_MODES = ("min", "max")
FINAL_CHECKPOINTS = ("last", "best")


class ConfigError(ValueError):
  """A config value that cannot work; the message names its key (``config.train.steps``)."""


def get(config, key: str) -> Any:
  """The value of a dotted ``key`` of ``config`` (a ConfigDict or a dict)."""
  value = config
  for part in key.split("."):
    value = value[part]
  return value


def _is_int(value) -> bool:
  return isinstance(value, int | float) and not isinstance(value, bool) and int(value) == value


def check_choice(config, key: str, choices: Sequence[Any]) -> None:
  """Raises unless ``config.<key>`` is one of ``choices``."""
  value = get(config, key)
  if value not in choices:
    raise ConfigError(f"config.{key}={value!r} is not one of {tuple(choices)}")


def check_int(config, key: str, *, minimum: int = 1, optional: bool = False) -> None:
  """Raises unless ``config.<key>`` is an integer >= ``minimum`` (or None if ``optional``)."""
  value = get(config, key)
  if optional and value is None:
    return
  if not (_is_int(value) and value >= minimum):
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ConfigError(f"config.{key} must be {what}, got {value!r}")


def check_number(config, key: str, *, minimum: float = 0.0, strict: bool = False,
                 below: float | None = None, optional: bool = False) -> None:
  """Raises unless ``config.<key>`` is a number >= ``minimum`` (> with ``strict``), < ``below``
  when given, or None if ``optional``."""
  value = get(config, key)
  if optional and value is None:
    return
  number = isinstance(value, int | float) and not isinstance(value, bool)
  if not (number and (value > minimum if strict else value >= minimum)
          and (below is None or value < below)):
    bound = f"{'>' if strict else '>='} {minimum:g}" + (f" and < {below:g}" if below else "")
    raise ConfigError(f"config.{key} must be a number {bound}, got {value!r}")


def check_bool(config, key: str, *, optional: bool = False) -> None:
  """Raises unless ``config.<key>`` is True or False (or None if ``optional``)."""
  value = get(config, key)
  if not (isinstance(value, bool) or (optional and value is None)):
    raise ConfigError(f"config.{key} must be True or False, got {value!r}")


def check_fits(config, size_key: str, batch_key: str) -> None:
  """Raises unless the ``config.<size_key>`` examples fill one batch of ``config.<batch_key>``."""
  size, batch = get(config, size_key), get(config, batch_key)
  if size < batch:
    raise ConfigError(f"config.{size_key}={size} examples do not fill one batch of "
                      f"config.{batch_key}={batch}")


def check_run(config) -> None:
  """Checks the shared loop's keys: ``seed``, ``train.*`` and ``eval.*`` (see configs/common.py).

  Raises:
    ConfigError: naming the first key whose value cannot work.
  """
  check_int(config, "seed", minimum=0)
  for key in ("train.steps", "train.batch_size", "train.log_every", "train.checkpoint_every",
              "train.keep_checkpoints", "eval.batch_size", "eval.inner_steps"):
    check_int(config, key)
  check_int(config, "train.eval_every", minimum=0)
  check_int(config, "train.lr_drop_step", minimum=0)
  check_number(config, "train.learning_rate", strict=True)
  check_number(config, "train.lr_drop_factor")
  check_number(config, "train.weight_decay")
  check_number(config, "train.grad_clip_norm")
  check_choice(config, "train.lr_decay", LR_DECAYS)
  train = config.train
  if train.lr_drop_step and train.lr_decay != "step" and train.lr_drop_step >= train.steps:
    raise ConfigError(
      f"config.train.lr_drop_step={train.lr_drop_step} must come before "
      f"config.train.steps={train.steps} for lr_decay={train.lr_decay!r} (the decay ends at "
      "the last step)")
  check_choice(config, "train.best_mode", BEST_MODES)
  if train.best_metric is not None and not isinstance(train.best_metric, str):
    raise ConfigError(f"config.train.best_metric must be a metric's name or empty, got "
                      f"{train.best_metric!r}")
  for key in ("train.inner_steps_schedule", "train.progress_bar", "eval.pictures", "eval_only"):
    check_bool(config, key)
  check_choice(config, "eval.final_checkpoint", FINAL_CHECKPOINTS)
  if config.eval.final_checkpoint == "best" and not train.best_metric:
    raise ConfigError("config.eval.final_checkpoint='best' needs config.train.best_metric (the "
                      "metric that picks the best checkpoint), which is empty")


def check_best_metric(config, metrics: Sequence[str]) -> None:
  """Raises unless ``config.train.best_metric`` is empty, "loss" or one of ``metrics``."""
  best = config.train.best_metric
  if best and best not in ("loss", *metrics):
    raise ConfigError(f"config.train.best_metric={best!r} is not a metric of this task: "
                      f"{', '.join(('loss', *metrics))}")
