"""How a config's model options reach the iDSPN layer, and what makes the layer DSPN.

Every experiment keeps the keyword arguments of `idspn_jax.IDSPN` in one sub-dict,
``config.model.idspn``, keyed by the layer's attribute names (``steps``, ``learning_rate``,
``momentum``, ``backward``, ``clip_norm``, ...), so a command line reads e.g.
``--config.model.idspn.backward=cg --config.model.idspn.steps=40``. `idspn_options` turns the
sub-dict into the layer's arguments: a value of None is not passed (the layer's default, or the
experiment's own default, applies), ``clip_norm`` 0 turns clipping off, and the decoder's
settings are applied on top. Widths that also size other modules (``hidden``, ``latent``) stay
in ``config.model``.

DSPN (Zhang, Hare, Prugel-Bennett. Deep Set Prediction Networks. NeurIPS 2019) is the same
layer with `DSPN`'s settings: plain gradient descent in the inner loop (momentum 0),
backpropagated through its unrolled steps (backward "unroll"). The random-sets and CLEVR
experiments select it with ``config.model.decoder = "dspn"`` (default "idspn"), numbering with
its model name ``dspn``. A ``model.idspn`` value that contradicts a DSPN setting (say
``backward="approx"``) is an error naming both; a value equal to DSPN's, or None, is fine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import idspn_jax
from experiments.common.validation import ConfigError
from idspn_jax._encoders import POOLS
from idspn_jax._energies import ENERGIES
from idspn_jax._inner import IMPLICIT_POINTS

#: The decoders of `idspn_options`: the iDSPN layer as configured, or DSPN.
DECODERS = ("idspn", "dspn")
#: What makes the iDSPN layer DSPN, applied on top of ``config.model.idspn``.
DSPN = {"momentum": 0.0, "backward": "unroll"}
#: Layer attributes that the experiments' models set themselves (sizes, the encoder module).
MODEL_FIXED = frozenset({"set_size", "set_dim", "latent", "hidden", "encoder", "parent", "name"})
FSPOOL_METHODS = ("auto", "sort", "rank")


def layer_defaults() -> dict[str, Any]:
  """The iDSPN layer's keyword options and their defaults (its dataclass fields)."""
  return {f.name: f.default for f in dataclasses.fields(idspn_jax.IDSPN)
          if f.name not in MODEL_FIXED}


def setting(options: Mapping[str, Any], key: str) -> Any:
  """The value the layer runs with for ``key``: from ``options``, else the layer's default."""
  return options[key] if key in options else layer_defaults()[key]


def _bad(where: str, key: str, value, expected: str) -> ConfigError:
  return ConfigError(f"{where}.{key} must be {expected}, got {value!r}")


def _check_value(key: str, value, where: str) -> None:
  """Raises unless ``value`` can be the layer's ``key`` (None is checked by the caller)."""
  is_int = isinstance(value, int) and not isinstance(value, bool)
  is_number = isinstance(value, int | float) and not isinstance(value, bool)
  choices = {"backward": idspn_jax.BACKWARD_MODES, "implicit_at": IMPLICIT_POINTS,
             "energy": tuple(ENERGIES), "pool": POOLS, "fspool_method": FSPOOL_METHODS}
  if key in choices and value not in choices[key]:
    raise ConfigError(f"{where}.{key}={value!r} is not one of {tuple(choices[key])}")
  if key in ("steps", "cg_maxiter", "backprop_steps") and not (is_int and value >= 1):
    raise _bad(where, key, value, "a positive integer")
  if key in ("learning_rate", "tol") and not (is_number and value > 0):
    raise _bad(where, key, value, "a number > 0")
  if key in ("clip_norm", "cg_ridge") and not (is_number and value >= 0):
    raise _bad(where, key, value, "a number >= 0")
  if key == "momentum" and not (is_number and 0 <= value < 1):
    raise _bad(where, key, value, "a number >= 0 and < 1")
  if key in ("nesterov", "learn_start", "project_start") and not isinstance(value, bool):
    raise _bad(where, key, value, "True or False")
  if key == "loop_unroll" and not (value is True or (is_int and value >= 1)):
    raise _bad(where, key, value, "a positive integer or True")


def check_idspn(options: Mapping[str, Any], *, fixed: Iterable[str] = (),
                where: str = "config.model.idspn") -> None:
  """Checks a ``model.idspn`` sub-dict: its keys are the layer's attributes, its values fit.

  Args:
    options: The sub-dict (None values allowed: they are not passed).
    fixed: Attributes the experiment's model sets itself, beyond the sizes.
    where: The sub-dict's name in messages.

  Raises:
    ConfigError: naming the key.
  """
  allowed = set(layer_defaults()) - set(fixed)
  for key, value in options.items():
    if key not in allowed:
      why = ("is set by the experiment's model" if key in MODEL_FIXED | set(fixed)
             else "is not an option of idspn_jax.IDSPN")
      raise ConfigError(f"{where}.{key} {why}; options: {', '.join(sorted(allowed))}")
    if value is not None:
      _check_value(key, value, where)


def _check_together(options: Mapping[str, Any], where: str) -> None:
  """Raises for options the layer accepts one by one but not together."""
  backward, steps = setting(options, "backward"), setting(options, "steps")
  if backward == "unroll" and setting(options, "implicit_at") != "previous":
    raise ConfigError(f"{where}.implicit_at places the implicit gradient, which backward "
                      "'unroll' has none of: leave it at 'previous' or use 'approx' or 'cg'")
  if backward == "unroll" and setting(options, "tol") is not None:
    raise ConfigError(f"{where}.tol (early stopping) cannot be backpropagated through: it "
                      "needs backward 'approx' or 'cg'")
  kept = setting(options, "backprop_steps")
  if kept is not None and backward != "unroll":
    raise ConfigError(f"{where}.backprop_steps={kept} truncates backward 'unroll' only, but "
                      f"backward is {backward!r}")
  if kept is not None and kept > steps:
    raise ConfigError(f"{where}.backprop_steps={kept} exceeds the {steps} inner steps")


def idspn_options(options: Mapping[str, Any], *, decoder: str = "idspn",
                  defaults: Mapping[str, Any] | None = None, fixed: Iterable[str] = (),
                  where: str = "config.model.idspn") -> dict[str, Any]:
  """The keyword arguments of `idspn_jax.IDSPN` for a ``model.idspn`` sub-dict.

  Args:
    options: The sub-dict: layer attribute -> value, None for "not set".
    decoder: "idspn" (the options as they are) or "dspn" (`DSPN`'s settings on top).
    defaults: The experiment's own defaults, under the set options (numbering's reference
      settings per model).
    fixed: Attributes the experiment's model sets itself (they may not appear in ``options``).
    where: The sub-dict's name in messages.

  Returns:
    ``defaults``, updated with the set options (``clip_norm`` 0 becomes None, no clipping) and,
    for DSPN, with `DSPN`.

  Raises:
    ConfigError: for an unknown key or decoder, a bad value, or a set value that contradicts
      DSPN's settings.
  """
  if decoder not in DECODERS:
    raise ConfigError(f"unknown decoder {decoder!r}; expected one of {DECODERS}")
  check_idspn(options, fixed=fixed, where=where)
  out = dict(defaults or {})
  for key, value in options.items():
    if value is not None:
      out[key] = None if key == "clip_norm" and value == 0 else value
  if decoder == "dspn":
    settings = ", ".join(f"{k}={v!r}" for k, v in DSPN.items())
    for key, value in DSPN.items():
      if options.get(key) is not None and options[key] != value:
        raise ConfigError(
          f"DSPN runs its inner loop with {settings}, but {where}.{key}={options[key]!r}: "
          f"leave it unset or set it to {value!r}, or use iDSPN")
    out.update(DSPN)
  _check_together(out, where)
  return out


def inner_steps(config) -> int:
  """The inner steps that ``config.model.idspn`` gives the layer (its default if unset)."""
  steps = config.model.idspn.get("steps")
  return layer_defaults()["steps"] if steps is None else steps
