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
  owner: jax.Array  # [B, N] person (row) holding each object, -1 when free.
  assigned_to: jax.Array  # [B, N] object held by each person, -1 when unassigned.
  eps: jax.Array  # [B] bid increment of the current phase.
  step: jax.Array  # [] bidding rounds so far, over all phases.


def _batch_set(x: jax.Array, index: jax.Array, value: jax.Array) -> jax.Array:
  """x[b, index[b, k]] = value[b, k] for each b, k; out-of-range indices are skipped."""
  batch = jnp.arange(x.shape[0])[:, None]  # [B, 1]
  return x.at[batch, index].set(value, mode="drop")


def solve_auction(
  cost: jax.Array,
  *,
  rtol: float = 1e-6,
  eps_start: float = 0.2,
  eps_factor: float = 7.0,
  bidders: int = 8,
  max_steps: int | None = None,
) -> tuple[jax.Array, jax.Array]:
  """Batched forward auction with epsilon scaling, all problems advanced together.

  Persons are rows and objects are columns; a person's benefit for an object is minus its cost.
  In each round, every problem lets up to `bidders` of its unassigned persons bid at once
  (Jacobi bidding within a problem; the persons are split into `bidders` groups and each group
  sends its first unassigned person). A bidder i finds its best object j1 at the prices p
  (value v1 = a_ij1 - p_j1) and its second best value v2, and bids p_j1 + v1 - v2 + eps for
  j1. Each object goes to its highest bidder, whose bid becomes its price; the former holder
  becomes unassigned. Every held object satisfies eps-complementary slackness (eps-CS),
  a_ij - p_j >= max_k (a_ik - p_k) - eps, so a complete assignment costs at most N * eps more
  than the optimum (Bertsekas, 1988).

  Epsilon scaling: a phase ends when every person of every problem holds an object (phases are
  in step across the batch); eps then shrinks by `eps_factor`, the prices are kept, and only
  the holders that satisfy eps-CS for the new eps keep their objects.

  Integer costs are solved exactly: they are multiplied by N + 1 and the last phase runs with
  eps = 1 in integer arithmetic, so the N * eps bound is below the spacing of the totals. Float
  costs finish at eps = rtol * R / N, where R is the spread of the row-reduced costs of the
  matrix, so the total is within rtol * R of the optimum; eps never goes under 16 ulps of R
  (float32 rounding would stall the prices).

  Costs that are not finite are not detected here (under `jit` they cannot be); such problems
  run out of `max_steps` and report `converged = False`.

  Args:
    cost: Cost matrices of shape [B, N, N], float or integer.
    rtol: For float costs, the final N * eps as a fraction of the spread of the costs.
    eps_start: The first eps as a fraction of the spread of the costs.
    eps_factor: How much eps shrinks between phases.
    bidders: How many unassigned persons of a problem bid in one round.
    max_steps: Bound on the bidding rounds over all phases (default 400 * N + 4000).

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
    max_steps = 400 * n + 4000
  k = max(1, min(bidders, n))
  group = -(-n // k)  # persons per bidding group
  is_int = jnp.issubdtype(cost.dtype, jnp.integer)
  # Benefits, shifted per row so that each row's best benefit is 0 (same optimum).
  benefit = jnp.min(cost, axis=-1, keepdims=True) - cost  # [B, N, N]
  spread = -jnp.min(benefit, axis=(1, 2))  # [B]
  if is_int:
    benefit = benefit * (n + 1)
    spread = spread * (n + 1)
    eps_final = jnp.ones((b,), benefit.dtype)  # [B]
    eps0 = jnp.maximum(spread // round(1 / eps_start), 1)  # [B]
    neg_inf = jnp.iinfo(benefit.dtype).min // 2
  else:
    finfo = jnp.finfo(benefit.dtype)
    # Keep eps_final a normal number (XLA:CPU flushes denormals to 0, and eps = 0 never ends).
    spread = jnp.maximum(spread, 4 * float(finfo.tiny) / (16 * float(finfo.eps)))
    eps_final = spread * max(rtol / n, 16 * float(finfo.eps))  # [B]
    eps0 = jnp.maximum(spread * eps_start, eps_final)  # [B]
    neg_inf = -jnp.inf
  dtype = benefit.dtype
  objects = jnp.arange(n, dtype=INDEX_DTYPE)  # [N]
  slots = jnp.arange(k, dtype=INDEX_DTYPE)  # [K]

  def shrink(eps: jax.Array) -> jax.Array:
    if is_int:
      return jnp.maximum(eps // round(eps_factor), eps_final)
    return jnp.maximum(eps / eps_factor, eps_final)

  def bid_round(state: AuctionState) -> AuctionState:
    prices, owner, assigned_to, eps, step = state
    # Each group sends its first unassigned person: person = g * group + offset.
    free = jnp.pad(assigned_to < 0, ((0, 0), (0, k * group - n)))  # [B, K * G]
    free = free.reshape(b, k, group)  # [B, K, G]
    offset = jnp.min(jnp.where(free, jnp.arange(group)[None, None, :], group), axis=-1)  # [B, K]
    active = offset < group  # [B, K]
    person = jnp.where(active, slots[None, :] * group + offset, 0).astype(INDEX_DTYPE)  # [B, K]
    rows = jnp.take_along_axis(benefit, person[:, :, None], axis=1)  # [B, K, N]
    values = rows - prices[:, None, :]  # [B, K, N]
    v1 = jnp.max(values, axis=-1)  # [B, K]
    index = objects[None, None, :]  # [1, 1, N]
    # The first best object (argmax is slow on XLA:CPU), then the second best value.
    best = jnp.min(jnp.where(values == v1[:, :, None], index, n), axis=-1)  # [B, K]
    v2 = jnp.max(jnp.where(index == best[:, :, None], neg_inf, values), axis=-1)  # [B, K]
    raise_by = v1 - v2 + eps[:, None]  # [B, K]
    # Among bidders for the same object the highest raise wins (the lowest slot on ties).
    rival = active[:, None, :] & (best[:, None, :] == best[:, :, None])  # [B, K, K]
    first = slots[None, :, None] <= slots[None, None, :]  # [1, K, K]
    mine, theirs = raise_by[:, :, None], raise_by[:, None, :]  # [B, K, 1], [B, 1, K]
    beats = (mine > theirs) | ((mine == theirs) & first)  # [B, K, K]
    wins = active & jnp.all(~rival | beats, axis=-1)  # [B, K]
    target = jnp.where(wins, best, n)  # [B, K]
    loser = jnp.take_along_axis(owner, best, axis=1)  # [B, K]
    loser = jnp.where(wins & (loser >= 0), loser, n)  # [B, K]
    new_price = jnp.take_along_axis(prices, best, axis=1) + raise_by  # [B, K]
    prices = _batch_set(prices, target, new_price)
    owner = _batch_set(owner, target, person)
    assigned_to = _batch_set(assigned_to, loser, jnp.full_like(loser, -1))
    assigned_to = _batch_set(assigned_to, jnp.where(wins, person, n), best)
    return AuctionState(prices, owner, assigned_to, eps, step + 1)

  def bidding_open(state: AuctionState) -> jax.Array:
    return jnp.any(state.assigned_to < 0) & (state.step < max_steps)

  def start_phase(state: AuctionState) -> AuctionState:
    prices, owner, assigned_to, eps, step = state
    eps = shrink(eps)
    # Keep only the holders that satisfy eps-CS for the new eps.
    values = benefit - prices[:, None, :]  # [B, N, N]
    v1 = jnp.max(values, axis=-1)  # [B, N]
    own = jnp.take_along_axis(values, jnp.maximum(assigned_to, 0)[:, :, None], axis=2)[..., 0]
    keep = (assigned_to >= 0) & (own >= v1 - eps[:, None])  # [B, N]
    assigned_to = jnp.where(keep, assigned_to, -1)
    owner_kept = jnp.take_along_axis(keep, jnp.maximum(owner, 0), axis=1)  # [B, N]
    owner = jnp.where((owner >= 0) & owner_kept, owner, -1)
    return bid_phase(AuctionState(prices, owner, assigned_to, eps, step))

  def bid_phase(state: AuctionState) -> AuctionState:
    return jax.lax.while_loop(bidding_open, bid_round, state)

  def phases_left(state: AuctionState) -> jax.Array:
    return jnp.any(state.eps > eps_final) & (state.step < max_steps)

  state = AuctionState(
    prices=jnp.zeros((b, n), dtype),
    owner=jnp.full((b, n), -1, INDEX_DTYPE),
    assigned_to=jnp.full((b, n), -1, INDEX_DTYPE),
    eps=eps0.astype(dtype),
    step=jnp.zeros((), jnp.int32),
  )
  state = bid_phase(state)
  state = jax.lax.while_loop(phases_left, start_phase, state)
  converged = jnp.all(state.assigned_to >= 0, axis=-1) & (state.eps <= eps_final)
  return jnp.maximum(state.assigned_to, 0), converged
