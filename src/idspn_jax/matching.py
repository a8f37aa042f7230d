"""Minimum-cost assignment of square cost matrices, batched over leading axes.

`linear_sum_assignment` returns scipy's (row indices, column indices) for every matrix. Methods:

- "hungarian": `optax.assignment.hungarian_algorithm`, exact, pure JAX, vmapped.
- "scipy": scipy's solver in a host loop through `jax.pure_callback` (the reference's way).
- "auction": a batched epsilon-scaling auction (`idspn_jax._matching.solve_auction`): exact on
  integer costs, within max(1e-6, 4 N ulp) of the costs' spread on float costs (about 3e-5 x
  the spread at N = 64 in float32), no host round trip.
- "jv": batched shortest augmenting paths (`idspn_jax._matching.solve_jv`, the Hungarian
  method in Jonker-Volgenant form, each problem at its own pace): exact (up to float rounding
  of its potentials), no host round trip, and 2.5-5x fewer sequential steps than the auction.
- "jv_host": the same method compiled for the CPU by numba (`idspn_jax._jv_host`), a loop per
  matrix over the host's threads, called through `jax.pure_callback`: exact in float64, and on
  CPU 1.5-2.8x faster than scipy's host loop (`benchmarks/bench_matching.py`, batch 128,
  N = 10-64); a round trip on accelerators. numba is optional: install it with
  ``pip install "idspn_jax[cpu-matcher]"``. Without it this method raises `ImportError`.
- "auto": on CPU "jv" for N <= 12 and "jv_host" above, whichever is faster inside a jitted
  training step (`benchmarks/bench_matching.py`: the callback's fixed cost outweighs the XLA
  loop's steps only for small sets), or "jv" for every N when numba is not installed; "jv" on
  accelerators, where a host round trip would stall the device.

The matching is not differentiable: the costs pass through `stop_gradient`.

Non-finite costs: when the costs are concrete (outside `jit`) they are checked and a
`ValueError` is raised. Under `jit` no check is possible without `checkify`; scipy and
"jv_host" then return the identity matching for that matrix (so the NaN reaches the loss),
optax's Hungarian returns an arbitrary assignment, and the auction and "jv" end within their
step bounds with an arbitrary one. Check traced costs yourself with
`jax.experimental.checkify.check(jnp.all(jnp.isfinite(cost)), ...)` under `checkify.checkify`.
"""

import jax
import jax.numpy as jnp
import numpy as np

from idspn_jax import _matching

METHODS = ("auto", "hungarian", "scipy", "auction", "jv", "jv_host")

__all__ = ["CPU_JV_MAX_N", "METHODS", "check_cost", "default_method", "linear_sum_assignment"]


# On CPU, "jv" inside a jitted step beats the "jv_host" callback up to this N.
CPU_JV_MAX_N = 12


def default_method(backend: str | None = None, n: int | None = None) -> str:
  """The method "auto" picks for N x N matrices on `backend` (default: JAX's default backend).

  On accelerators "jv" (no host round trip). On CPU, "jv" for N <= 12 and "jv_host" above:
  in a jitted training step of batch 128 (`benchmarks/bench_matching.py`), the host
  callback's fixed cost outweighs jv's sequential steps at N = 10 and 12, the two tie at
  N = 16, and the compiled host loop is ahead from N = 24. Without `n`, the CPU choice is
  "jv_host". "jv_host" needs numba, an optional dependency: when numba cannot be imported the
  choice is "jv" (exact as well, slower on CPU for large N), without a warning.
  """
  backend = jax.default_backend() if backend is None else backend
  if backend != "cpu" or (n is not None and n <= CPU_JV_MAX_N):
    return "jv"
  return "jv_host" if _matching.jv_host_available() else "jv"


def check_cost(cost: jax.typing.ArrayLike) -> jax.Array:
  """Checks that `cost` is a batch of square matrices, and finite when it is concrete.

  Args:
    cost: Cost matrices of shape [..., N, N].

  Returns:
    `cost` as a JAX array.

  Raises:
    ValueError: if `cost` has fewer than two axes, is not square, or holds a value that is
      not finite (checked only when the values are concrete, not under `jit`).
  """
  if not isinstance(cost, jax.core.Tracer):
    host = np.asarray(cost)
    if host.dtype.kind in "fc" and not np.all(np.isfinite(host)):
      raise ValueError("cost matrices must be finite; got NaN or infinite entries")
  cost = jnp.asarray(cost)
  if cost.ndim < 2 or cost.shape[-1] != cost.shape[-2]:
    raise ValueError(f"cost must have shape [..., N, N] (square matrices); got {cost.shape}")
  if not (jnp.issubdtype(cost.dtype, jnp.floating) or jnp.issubdtype(cost.dtype, jnp.integer)):
    raise ValueError(f"cost must be a float or integer array; got {cost.dtype}")
  return cost


def linear_sum_assignment(
  cost: jax.typing.ArrayLike, *, method: str = "auto"
) -> tuple[jax.Array, jax.Array]:
  """Minimum-cost perfect matching of each square matrix, like scipy's, batched.

  Args:
    cost: Cost matrices of shape [..., N, N]: cost[..., i, j] is the cost of matching row i
      with column j.
    method: "auto", "hungarian", "scipy", "auction", "jv" or "jv_host" (see the module
      docstring).

  Returns:
    rows: `arange(N)` broadcast to shape [..., N] (int32).
    cols: The column matched to each row, of shape [..., N] (int32), so that
      `cost[..., rows, cols].sum(-1)` is the minimum total.

  Raises:
    ValueError: for an unknown method, non-square matrices or (outside `jit`) non-finite costs.
    ImportError: for "jv_host" when numba is not installed (the extra ``cpu-matcher``).
  """
  if method not in METHODS:
    raise ValueError(f"method must be one of {METHODS}; got {method!r}")
  if method == "jv_host":
    _matching.load_jv_host()  # Without numba, fail here for every shape, empty batches too.
  cost = jax.lax.stop_gradient(check_cost(cost))
  if method == "auto":
    method = default_method(n=cost.shape[-1])
  *batch_shape, n, _ = cost.shape
  flat = cost.reshape(-1, n, n)  # [B, N, N]
  if flat.shape[0] == 0 or n == 0:
    cols = jnp.zeros(flat.shape[:2], _matching.INDEX_DTYPE)  # [B, N]
  elif method == "hungarian":
    cols = _matching.solve_hungarian(flat)
  elif method == "scipy":
    cols = _matching.solve_scipy(flat)
  elif method == "jv":
    cols, _, _ = _matching.solve_jv(flat)
  elif method == "jv_host":
    cols = _matching.solve_jv_host(flat)
  else:
    cols, _ = _matching.solve_auction(flat)
  cols = cols.reshape(*batch_shape, n)  # [..., N]
  rows = jnp.broadcast_to(jnp.arange(n, dtype=cols.dtype), cols.shape)  # [..., N]
  return rows, cols
