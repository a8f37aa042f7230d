"""Projections applied after each inner step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def project_rows_to_simplex(y: jax.typing.ArrayLike, *, scale: float = 1.0) -> jax.Array:
  """Projects each row of ``y`` onto the simplex ``{p >= 0, sum(p) = scale}`` (Euclidean).

  Uses `optax.projections.projection_simplex`, vmapped over every axis but the last. Its
  derivative (autodiff through the sort-based threshold) is, almost everywhere,
  ``supp * g - mean_{supp}(g) * supp``, the same as the reference's hand-written backward.

  Args:
    y: Array of shape [..., D].
    scale: What each projected row sums to.

  Returns:
    Array of shape [..., D] whose rows lie on the simplex.
  """
  y = jnp.asarray(y)
  if y.ndim == 0:
    raise ValueError("project_rows_to_simplex needs at least one axis (the row to project)")
  rows = y.reshape(-1, y.shape[-1])  # [R, D]
  out = jax.vmap(lambda r: optax.projections.projection_simplex(r, scale))(rows)
  return out.reshape(y.shape)  # [..., D]
