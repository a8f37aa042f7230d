"""Inner energies ``L(Y)`` for one set, with the reference's scaling.

``<key>_energy`` is the energy that ``IDSPN(energy="<key>")`` uses (`ENERGIES`): ``"mse"``,
``"mse_regularized"`` and ``"mse_concat_input"``.

Each takes the encoder's ``apply_fn(params, y) -> (K,)`` as a keyword, so that the encoder's
parameters are an explicit argument of `solve` (and get implicit gradients). Bind it with
`functools.partial`::

  energy = functools.partial(idspn_jax.mse_energy, apply_fn=encoder_apply)
  y = idspn_jax.solve(energy, y0, params, z)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

ApplyFn = Callable[[object, jax.Array], jax.Array]

#: Weight of the pull toward the start set in the regularised energy (the reference's 0.1).
REGULARIZER_WEIGHT = 0.1


def _representation_error(apply_fn: ApplyFn, params, y: jax.Array, z: jax.Array) -> jax.Array:
  repr_y = apply_fn(params, y)  # [K]
  if repr_y.shape != z.shape:
    raise ValueError(
      f"the encoder maps the set to shape {tuple(repr_y.shape)} but the target z has shape "
      f"{tuple(z.shape)}"
    )
  return 0.5 * jnp.mean(jnp.square(repr_y - z))


def mse_energy(
  y: jax.Array, params, z: jax.typing.ArrayLike, *, apply_fn: ApplyFn
) -> jax.Array:
  """``L(Y) = 0.5 * mean_k (g(Y)_k - z_k)^2``.

  The reference sums this over the batch, so each set's gradient is exactly this one's.

  Args:
    y: Set of shape [N, D].
    params: Encoder parameters (any pytree).
    z: Target representation of shape [K].
    apply_fn: ``apply_fn(params, y) -> [K]``.

  Returns:
    Scalar energy.
  """
  return _representation_error(apply_fn, params, y, jnp.asarray(z))


def mse_regularized_energy(
  y: jax.Array,
  params,
  z: jax.typing.ArrayLike,
  y_ref: jax.typing.ArrayLike,
  *,
  apply_fn: ApplyFn,
  weight: float = REGULARIZER_WEIGHT,
) -> jax.Array:
  """Squared error plus a pull toward a reference set: ``+ weight * 0.5 * mean((Y - Y_ref)^2)``.

  Used with a learned start set (``y_ref`` is that start set).

  Args:
    y: Set of shape [N, D].
    params: Encoder parameters.
    z: Target representation of shape [K].
    y_ref: Reference set of shape [N, D].
    apply_fn: ``apply_fn(params, y) -> [K]``.
    weight: Weight of the pull (0.1 in the paper).

  Returns:
    Scalar energy.
  """
  y_ref = jnp.asarray(y_ref)
  if y_ref.shape != y.shape:
    raise ValueError(f"y_ref has shape {tuple(y_ref.shape)}, the set has {tuple(y.shape)}")
  pull = 0.5 * jnp.mean(jnp.square(y - y_ref))
  return _representation_error(apply_fn, params, y, jnp.asarray(z)) + weight * pull


def mse_concat_input_energy(
  y: jax.Array, params, z: jax.typing.ArrayLike, x: jax.typing.ArrayLike, *, apply_fn: ApplyFn
) -> jax.Array:
  """Squared error where the encoder sees ``concat(Y, X)`` along features (numbering).

  Args:
    y: Set of shape [N, D].
    params: Encoder parameters (the encoder takes D + Dx features).
    z: Target representation of shape [K].
    x: Input set of shape [N, Dx], element i paired with y's element i.
    apply_fn: ``apply_fn(params, y) -> [K]``.

  Returns:
    Scalar energy.
  """
  x = jnp.asarray(x)
  if x.ndim != 2 or x.shape[0] != y.shape[0]:
    raise ValueError(
      f"the input set must have shape ({y.shape[0]}, dx) to pair with the set {tuple(y.shape)}, "
      f"got {tuple(x.shape)}"
    )
  yx = jnp.concatenate([y, x.astype(y.dtype)], axis=-1)  # [N, D + Dx]
  return _representation_error(apply_fn, params, yx, jnp.asarray(z))


ENERGIES = {
  "mse": mse_energy,
  "mse_regularized": mse_regularized_energy,
  "mse_concat_input": mse_concat_input_energy,
}
