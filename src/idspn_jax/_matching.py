"""Batched minimum-cost assignment: optax's Hungarian, scipy on the host, and a batched auction.

Every solver here takes cost matrices of shape [B, N, N] and returns, for each matrix, the
column assigned to each row, `cols` of shape [B, N] (so the rows are `arange(N)`, as scipy
returns them). The public entry point with input checks and method selection is
`idspn_jax.matching.linear_sum_assignment`.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

INDEX_DTYPE = jnp.int32


def solve_hungarian(cost: jax.Array) -> jax.Array:
  """Exact assignment with `optax.assignment.hungarian_algorithm`, vmapped over the batch.

  Args:
    cost: Cost matrices of shape [B, N, N].

  Returns:
    The column matched to each row, of shape [B, N].
  """
  b, n, _ = cost.shape
  rows, cols = jax.vmap(optax.assignment.hungarian_algorithm)(cost)  # [B, N], [B, N]
  # optax lists the pairs in column order; put them in row order like scipy.
  batch = jnp.arange(b)[:, None]  # [B, 1]
  out = jnp.zeros((b, n), INDEX_DTYPE)
  return out.at[batch, rows].set(cols.astype(INDEX_DTYPE))


def _scipy_host(cost: np.ndarray) -> np.ndarray:
  """Host loop over scipy's solver; `cost` has any leading axes before [N, N]."""
  cost = np.asarray(cost)
  n = cost.shape[-1]
  flat = cost.reshape(-1, n, n)  # [B, N, N]
  out = np.empty(flat.shape[:2], np.int32)  # [B, N]
  for k, matrix in enumerate(flat):
    if not np.all(np.isfinite(matrix)):
      # Inside a jitted step a NaN cost must not crash the host callback: any matching then
      # carries the NaN into the loss, where the training loop reports it.
      out[k] = np.arange(n)
      continue
    _, out[k] = scipy.optimize.linear_sum_assignment(matrix)
  return out.reshape(cost.shape[:-1])


def solve_scipy(cost: jax.Array) -> jax.Array:
  """Exact assignment with scipy's `linear_sum_assignment`, one matrix at a time on the host.

  This is the reference's way. Under `jit` it is a `jax.pure_callback`, so every call makes a
  round trip to the host (and stalls an accelerator).

  Args:
    cost: Cost matrices of shape [B, N, N].

  Returns:
    The column matched to each row, of shape [B, N].
  """
  result = jax.ShapeDtypeStruct(cost.shape[:-1], INDEX_DTYPE)
  return jax.pure_callback(_scipy_host, result, cost, vmap_method="expand_dims")


class AuctionState(NamedTuple):
  """Loop state of the batched auction: one row per problem (B), N objects and N persons."""

  prices: jax.Array  # [B, N] price of each object (column).
  assigned_to: jax.Array  # [B, N] object held by each person (row), -1 when unassigned.
  checked: jax.Array  # [B, N] whether each holder is known to meet eps-CS for the current eps.
  slack: jax.Array  # [B, N] bound on each holder's eps-CS slack, max_k v_k - v_held.
  eps: jax.Array  # [B] bid increment of each problem's current phase.
  done: jax.Array  # [B] whether each problem has finished its last phase.
  step: jax.Array  # [] steps so far (one bid or check per problem and step).


def solve_auction(
  cost: jax.Array,
  *,
  rtol: float = 1e-6,
  eps_start: float = 0.01,
  eps_factor: float = 100.0,
  max_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Batched Gauss-Seidel auction with epsilon scaling, each problem at its own pace.

  Persons are rows and objects are columns; a person's benefit for an object is minus its cost.
  In each step, every unfinished problem takes its first person that is unassigned or not yet
  checked in the current phase. That person finds its best object j1 at the prices p (value
  v1 = a_ij1 - p_j1) and its second best value v2. If it holds an object whose value is within
  eps of v1 (eps-complementary slackness, eps-CS) it keeps it and is marked checked; otherwise
  it bids p_j1 + v1 - v2 + eps for j1, takes j1 and unassigns j1's holder (Gauss-Seidel
  bidding: one bid per problem and step, so there are no conflicting bids). A complete
  assignment in which every holder meets eps-CS costs at most N * eps more than the optimum
  (Bertsekas, 1988).

  Epsilon scaling: when every person of a problem holds an object and is checked, the problem
  either finishes or starts its next phase on its own: eps shrinks by `eps_factor`, the prices
  and assignment are kept and every holder is checked again (in turn, by the steps above) for
  the new eps. Prices only rise, so a holder's slack only shrinks after it is recorded (eps after
  a bid, v1 - v_held after a check), and the sum of the recorded slacks bounds the gap to the
  optimum: a problem finishes when that bound is within the tolerance, or at the final eps.
  Checking persons one by one is cheaper than the full [N, N] pass per phase that an all-persons
  check would cost in every step of the batch (problems change phase at different steps).

  Integer costs are solved exactly: they are multiplied by N + 1 and the tolerance on the total
  is N, below the spacing N + 1 of the totals (the last phase runs with eps = 1 in integer
  arithmetic). Float costs finish within rtol * R of the optimum, where R is the spread of the
  row-reduced costs of the matrix (the last phase has eps = rtol * R / N); eps never goes under
  4 ulps of R (float32 rounding would stall the prices; an increment of 4 ulps of R still moves
  prices up to 8 R, and prices stay near R).

  Costs that are not finite are not detected here (under `jit` they cannot be); such problems
  run out of `max_steps` and report `converged = False`.

  Args:
    cost: Cost matrices of shape [B, N, N], float or integer.
    rtol: For float costs, the tolerance on the total as a fraction of the spread of the costs.
    eps_start: The first eps as a fraction of the spread of the costs.
    eps_factor: How much eps shrinks between phases.
    max_steps: Bound on the steps over all phases (default 1000 * N + 10000).

  Returns:
    cols: The column matched to each row, of shape [B, N].
    converged: Whether each problem finished its last phase, of shape [B].

  References:
    Bertsekas, "The auction algorithm: a distributed relaxation method for the assignment
    problem", Annals of Operations Research 14 (1988).
  """
  b, n, _ = cost.shape
  if n == 1:
    return jnp.zeros((b, 1), INDEX_DTYPE), jnp.ones((b,), bool)
  if max_steps is None:
    max_steps = 1000 * n + 10000
  is_int = jnp.issubdtype(cost.dtype, jnp.integer)
  # Benefits, shifted per row so that each row's best benefit is 0 (same optimum).
  benefit = jnp.min(cost, axis=-1, keepdims=True) - cost  # [B, N, N]
  spread = -jnp.min(benefit, axis=(1, 2))  # [B]
  if is_int:
    benefit = benefit * (n + 1)
    spread = spread * (n + 1)
    eps_final = jnp.ones((b,), benefit.dtype)  # [B]
    eps0 = jnp.maximum(spread // round(1 / eps_start), 1)  # [B]
    tol = jnp.full((b,), n, benefit.dtype)  # [B]
    neg_inf = jnp.iinfo(benefit.dtype).min // 2
  else:
    finfo = jnp.finfo(benefit.dtype)
    # Keep eps_final a normal number (XLA:CPU flushes denormals to 0, and eps = 0 never ends).
    spread = jnp.maximum(spread, 4 * float(finfo.tiny) / (4 * float(finfo.eps)))
    eps_final = spread * max(rtol / n, 4 * float(finfo.eps))  # [B]
    eps0 = jnp.maximum(spread * eps_start, eps_final)  # [B]
    tol = spread * rtol  # [B]
    neg_inf = -jnp.inf
  dtype = benefit.dtype
  # Rows are gathered whole from the flat [B * N, N] matrix (one row per problem and step).
  rows = benefit.reshape(b * n, n)  # [B * N, N]
  first_row = jnp.arange(b, dtype=INDEX_DTYPE) * n  # [B]
  index = jnp.arange(n, dtype=INDEX_DTYPE)[None, :]  # [1, N], persons or objects

  def shrink(eps: jax.Array) -> jax.Array:
    if is_int:
      return jnp.maximum(eps // round(eps_factor), eps_final)
    return jnp.maximum(eps / eps_factor, eps_final)

  def step(state: AuctionState) -> AuctionState:
    prices, assigned_to, checked, slack, eps, done, count = state
    # All [B, N] arrays below are indexed by person or object along the last, contiguous axis.
    todo = ((assigned_to < 0) | ~checked) & ~done[:, None]  # [B, N]
    person = jnp.min(jnp.where(todo, index, n), axis=-1)  # [B]
    active = person < n  # [B]
    safe = jnp.minimum(person, n - 1)  # [B], a valid row where the problem has no one to move
    values = jnp.take(rows, first_row + safe, axis=0) - prices  # [B, N]
    v1 = jnp.max(values, axis=-1)  # [B]
    # The first best object (argmax is slow on XLA:CPU), then the second best value.
    best = jnp.min(jnp.where(values == v1[:, None], index, n), axis=-1)  # [B]
    v2 = jnp.max(jnp.where(index == best[:, None], neg_inf, values), axis=-1)  # [B]
    is_person = index == person[:, None]  # [B, N]
    held = jnp.take_along_axis(assigned_to, safe[:, None], axis=1)[:, 0]  # [B]
    own = jnp.max(jnp.where(index == held[:, None], values, neg_inf), axis=-1)  # [B]
    keep = active & (held >= 0) & (own >= v1 - eps)  # [B]
    bid = active & ~keep  # [B]
    new_price = prices + (v1 - v2 + eps)[:, None]  # [B, N]
    prices = jnp.where(bid[:, None] & (index == best[:, None]), new_price, prices)
    # The bidder takes `best` from its holder (itself when it bids again for its own object).
    assigned_to = jnp.where(bid[:, None] & (assigned_to == best[:, None]), -1, assigned_to)
    assigned_to = jnp.where(bid[:, None] & is_person, best[:, None], assigned_to)
    touched = is_person & active[:, None]  # [B, N]
    checked = checked | touched
    slack = jnp.where(touched, jnp.where(keep, v1 - own, eps)[:, None], slack)
    # Problems whose persons all hold a checked object finish or start their next phase.
    complete = jnp.all((assigned_to >= 0) & checked, axis=-1) & ~done  # [B]
    finish = complete & ((jnp.sum(slack, axis=-1) <= tol) | (eps <= eps_final))  # [B]
    next_phase = complete & ~finish  # [B]
    eps = jnp.where(next_phase, shrink(eps), eps)
    checked = checked & ~next_phase[:, None]
    return AuctionState(prices, assigned_to, checked, slack, eps, done | finish, count + 1)

  def unfinished(state: AuctionState) -> jax.Array:
    return jnp.any(~state.done) & (state.step < max_steps)

  state = AuctionState(
    prices=jnp.zeros((b, n), dtype),
    assigned_to=jnp.full((b, n), -1, INDEX_DTYPE),
    checked=jnp.zeros((b, n), bool),
    slack=jnp.zeros((b, n), dtype),
    eps=eps0.astype(dtype),
    done=jnp.zeros((b,), bool),
    step=jnp.zeros((), jnp.int32),
  )
  state = jax.lax.while_loop(unfinished, step, state)
  return jnp.maximum(state.assigned_to, 0), state.done
