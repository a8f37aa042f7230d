"""Projections applied after each inner step."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

PROJECTION_METHODS = ("auto", "sort", "count", "pivot")


def _threshold_on_support(rows: jax.Array, support: jax.Array, scale: float) -> jax.Array:
  """``tau = (sum_S y - scale) / |S|`` for each row's support ``S``; [R, D] -> [R, 1] (an empty
  support counts as one element, so that no row divides by zero)."""
  size = jnp.maximum(jnp.sum(support, axis=-1, keepdims=True, dtype=rows.dtype), 1)
  return (jnp.sum(jnp.where(support, rows, 0.0), axis=-1, keepdims=True) - scale) / size


def _simplex_threshold_by_counting(rows: jax.Array, scale: float) -> jax.Array:
  """Each row's simplex threshold without a sort (no gradient: only the support is used).

  The projection is ``max(y - tau, 0)`` with ``tau = (sum_{i in S} y_i - scale) / |S|`` over
  the support ``S``. Taking element k as the smallest member gives the candidate support
  ``S_k = {i : y_i > y_k, or y_i == y_k and i <= k}``; the support is the largest ``S_k``
  whose threshold stays below ``y_k``, the rule a scan over the sorted row applies. The sizes
  and sums of all ``S_k`` are accumulated one element i at a time (a loop unrolled 16 ways).

  Args:
    rows: Rows of shape [R, D].
    scale: What each projected row sums to.

  Returns:
    Thresholds of shape [R, 1].
  """
  rows = jax.lax.stop_gradient(rows)
  d = rows.shape[-1]
  index = jnp.arange(d)[None, :]  # [1, D]: k

  def accumulate(i, carry):
    count, total = carry
    yi = jax.lax.dynamic_slice_in_dim(rows, i, 1, axis=1)  # [R, 1]
    member = (yi > rows) | ((yi == rows) & (i <= index))  # [R, D]: i in S_k
    return count + member.astype(rows.dtype), total + jnp.where(member, yi, 0.0)

  zeros = jnp.zeros_like(rows)
  count, total = jax.lax.fori_loop(0, d, accumulate, (zeros, zeros), unroll=min(d, 16))
  tau = (total - scale) / count  # [R, D]
  size = jnp.where(rows > tau, count, 0.0)  # [R, D]: |S_k| where k is a valid smallest member
  best = jnp.argmax(size, axis=-1)  # [R]
  return jnp.take_along_axis(tau, best[:, None], axis=-1)  # [R, 1]


def _simplex_threshold_by_pivoting(rows: jax.Array, scale: float) -> jax.Array:
  """Each row's simplex threshold by Michelot's iteration (no gradient, no sort).

  Start from the whole row as the support ``S``; set ``tau = (sum_S y - scale) / |S|`` and drop
  from ``S`` every element at or below ``tau``; repeat until ``S`` stops changing. ``tau`` never
  decreases and never passes the true threshold, so every dropped element is outside the
  optimal support and the loop ends there after at most D passes (a handful in practice: each
  pass is one masked sum over the rows). Arguments and result as
  `_simplex_threshold_by_counting`'s.
  """
  rows = jax.lax.stop_gradient(rows)
  d = rows.shape[-1]

  def body(carry):
    support, tau, _, passes = carry
    smaller = support & (rows > tau)  # [R, D]
    changed = jnp.any(smaller != support)
    return smaller, _threshold_on_support(rows, smaller, scale), changed, passes + 1

  support = jnp.ones(rows.shape, bool)
  carry = (support, _threshold_on_support(rows, support, scale), jnp.array(True), jnp.array(0))
  keep_going = lambda carry: carry[2] & (carry[3] < d)
  return jax.lax.while_loop(keep_going, body, carry)[1]  # [R, 1]


def project_rows_to_simplex(
  y: jax.typing.ArrayLike, *, scale: float = 1.0, method: str = "auto"
) -> jax.Array:
  """Projects each row of ``y`` onto the simplex ``{p >= 0, sum(p) = scale}`` (Euclidean).

  Three exact implementations: ``"sort"`` is `optax.projections.projection_simplex` vmapped
  over rows; ``"count"`` finds each row's support by counting comparisons instead of sorting,
  several times faster on XLA:CPU (whose sort is slow) for the widths used here; ``"pivot"``
  finds it by Michelot's iteration (a few masked sums), faster again. ``"auto"`` takes
  ``"pivot"`` on CPU and ``"sort"`` elsewhere. Their derivatives equal, almost everywhere,
  ``supp * g - mean_{supp}(g) * supp``, the reference's hand-written backward.

  Args:
    y: Array of shape [..., D].
    scale: What each projected row sums to.
    method: ``"auto"``, ``"sort"``, ``"count"`` or ``"pivot"``.

  Returns:
    Array of shape [..., D] whose rows lie on the simplex.
  """
  y = jnp.asarray(y)
  if y.ndim == 0:
    raise ValueError("project_rows_to_simplex needs at least one axis (the row to project)")
  if method not in PROJECTION_METHODS:
    raise ValueError(f"unknown method {method!r}; expected one of {PROJECTION_METHODS}")
  d = y.shape[-1]
  if method == "auto":
    method = "pivot" if jax.default_backend() == "cpu" else "sort"
  rows = y.reshape(-1, d)  # [R, D]
  if method == "sort":
    out = jax.vmap(lambda r: optax.projections.projection_simplex(r, scale))(rows)
  else:
    # The support comes from a pass without gradient; the threshold is recomputed from it so
    # that autodiff sees tau = (sum_S y - scale) / |S| and gives the projection's Jacobian.
    find = _simplex_threshold_by_counting if method == "count" else _simplex_threshold_by_pivoting
    support = rows > find(rows, scale)  # [R, D]
    out = jax.nn.relu(rows - _threshold_on_support(rows, support, scale))
  # optax's projection promotes float32 to float64 when x64 is on: keep the input's dtype.
  return out.astype(y.dtype).reshape(y.shape)  # [..., D]
