"""Batched minimum-cost assignment: optax's Hungarian, scipy on the host, and a batched auction.

Every solver here takes cost matrices of shape [B, N, N] and returns, for each matrix, the
column assigned to each row, `cols` of shape [B, N] (so the rows are `arange(N)`, as scipy
returns them). The public entry point with input checks and method selection is
`idspn_jax.matching.linear_sum_assignment`.
"""

import functools
import importlib
import types
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.optimize

INDEX_DTYPE = jnp.int32

#: The optional dependencies of the numba matcher "jv_host" (`solve_jv_host`).
JV_HOST_EXTRA = "idspn_jax[cpu-matcher]"


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


def load_jv_host() -> types.ModuleType:
  """The module `idspn_jax._jv_host`, imported on first use (numba takes about half a second).

  numba is an optional dependency, installed by the extra `JV_HOST_EXTRA`.

  Raises:
    ImportError: if numba (or the module) cannot be imported, naming the extra to install.
  """
  try:
    return importlib.import_module("idspn_jax._jv_host")
  except ImportError as error:
    raise ImportError(
      f'the matcher "jv_host" needs numba, which could not be imported ({error}); install it '
      f'with `pip install "{JV_HOST_EXTRA}"`, or choose another method ("jv" runs anywhere)'
    ) from error


@functools.cache
def jv_host_available() -> bool:
  """Whether the numba matcher "jv_host" can be used (numba imports).

  Cached: Python does not keep failed imports, and trying again costs about a millisecond.
  """
  try:
    load_jv_host()
  except ImportError:
    return False
  return True


def solve_jv_host(cost: jax.Array) -> jax.Array:
  """Exact assignment by shortest augmenting paths compiled for the CPU (`_jv_host`).

  The method of `solve_jv`, run as a compiled loop per matrix on the host's threads through
  `jax.pure_callback`. On a CPU backend the data is already in host memory, so the callback
  costs no transfer, only a fixed 0.3-1 ms per call on a 2-core CPU
  (`benchmarks/bench_matching.py`); on accelerators it is a round trip (use `solve_jv`).

  Args:
    cost: Cost matrices of shape [B, N, N].

  Returns:
    The column matched to each row, of shape [B, N].

  Raises:
    ImportError: if numba is not installed (see `load_jv_host`).
  """
  jv_host = load_jv_host()
  result = jax.ShapeDtypeStruct(cost.shape[:-1], INDEX_DTYPE)
  return jax.pure_callback(jv_host.solve, result, cost, vmap_method="expand_dims")


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


class JVState(NamedTuple):
  """Loop state of the batched shortest augmenting path solver; [B, N] unless noted."""

  u: jax.Array  # Row potentials.
  v: jax.Array  # Column potentials; reduced costs cost - u - v stay >= 0 (dual feasibility).
  row_of_col: jax.Array  # Row matched to each column, -1 when the column is free.
  row_free: jax.Array  # Whether each row still has to be matched.
  dist: jax.Array  # Shortest known reduced distance from the root to each column.
  via_row: jax.Array  # The row whose scan gave each column its `dist` (its path predecessor).
  scanned: jax.Array  # Columns whose distance is final in the current search.
  in_tree: jax.Array  # Rows reached by the current search (their potentials move with it).
  path_bits: jax.Array  # [B, N, W] uint32: the columns on the path to each reached row.
  row: jax.Array  # [B] the row the next step scans.
  root: jax.Array  # [B] the free row being matched; N when the problem is done.
  step: jax.Array  # [] steps so far.


_PROMISE = "promise_in_bounds"


def _pick(x: jax.Array, index: jax.Array) -> jax.Array:
  """x[b, index[b]] for x [B, N] and index [B] (indices known to be in range)."""
  return jnp.take_along_axis(x, index[:, None], axis=1, mode=_PROMISE)[:, 0]


def solve_jv(
  cost: jax.Array, *, max_steps: int | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Exact batched assignment by shortest augmenting paths, each problem at its own pace.

  The Hungarian method in its shortest-path form (as in Jonker and Volgenant, 1987): rows are
  matched one at a time by a Dijkstra search over reduced costs `cost - u - v` from the free
  row, and the potentials u, v move with the search so that the reduced costs stay >= 0 and the
  matched pairs stay at 0; the search ends at the first free column, and the path to it is
  flipped. The start is Jonker and Volgenant's column reduction: each column's minimum row
  takes it (a row claimed by several keeps the last), which leaves about a third of the rows
  for the searches on random costs, with a third fewer scans than a row-minimum start.

  Batching: each step does one Dijkstra scan for every problem (gather the scanned row, update
  the distances, pick the closest unscanned column, preferring a free one among ties). A
  problem whose scan reaches a free column flips its path in the same step, using the columns
  recorded for each reached row as bits (`path_bits`), and starts its next free row in the
  next step. The loop runs until every problem is done, so the step count is the largest total
  of scans over the batch (at most N * N; 23 / 128 / 387 steps for the benchmark's 128 random
  matrices of N = 10 / 32 / 64, against 120 / 476 / 1,007 for `solve_auction`).

  Integer costs use integer arithmetic and are exact (keep the spread of the costs times N
  under 2**29). Float costs give the optimum up to the rounding of the potentials.

  Args:
    cost: Cost matrices of shape [B, N, N], float or integer.
    max_steps: Bound on the steps (default N * N + N, which finite costs never reach).

  Returns:
    cols: The column matched to each row, of shape [B, N].
    converged: Whether each problem matched all its rows, of shape [B].
    steps: The loop's steps, a scalar (the benchmark reports it).

  Costs that are not finite are not detected here (under `jit` they cannot be): the loop still
  ends within `max_steps`, with an arbitrary assignment.

  References:
    Jonker and Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
    assignment problems", Computing 38 (1987).
  """
  b, n, _ = cost.shape
  if max_steps is None:
    max_steps = n * n + n
  dtype = cost.dtype
  if jnp.issubdtype(dtype, jnp.integer):
    far = jnp.array(jnp.iinfo(dtype).max // 2, dtype)
  else:
    far = jnp.array(jnp.inf, dtype)
  words = (n + 31) // 32
  index = jnp.arange(n, dtype=INDEX_DTYPE)[None, :]  # [1, N], rows or columns
  # Column j's bit in its word (j // 32) of path_bits, and the words spread over the columns.
  column_bit = jnp.left_shift(jnp.uint32(1), jnp.arange(n, dtype=jnp.uint32) % 32)[None, :]
  word_of = jnp.arange(words)[None, :]  # [1, W]
  flat_rows = cost.reshape(b * n, n)  # [B * N, N]
  first_row = jnp.arange(b, dtype=INDEX_DTYPE) * n  # [B]

  # Start (Jonker-Volgenant's column reduction): v = column minima, each row given the last
  # column whose minimum it holds, u = row minima of cost - v (0 on the matched rows, so the
  # matched pairs are tight).
  v = jnp.min(cost, axis=1)  # [B, N]
  col_min_row = jnp.argmin(cost, axis=1).astype(INDEX_DTYPE)  # [B, N]
  claims = col_min_row[:, None, :] == index[:, :, None]  # [B, N rows, N columns]
  last_claim = jnp.max(jnp.where(claims, index[:, None, :], -1), axis=2)  # [B, N rows]
  row_free = last_claim < 0  # [B, N]
  won = last_claim[:, :, None] == index[:, None, :]  # [B, N rows, N columns]
  row_of_col = jnp.max(jnp.where(won, index[:, :, None], -1), axis=1).astype(INDEX_DTYPE)
  u = jnp.min(cost - v[:, None, :], axis=-1)  # [B, N]
  root = jnp.min(jnp.where(row_free, index, n), axis=1)  # [B]
  start = jnp.minimum(root, n - 1)  # [B]
  state = JVState(
    u=u,
    v=v,
    row_of_col=row_of_col,
    row_free=row_free,
    dist=jnp.full((b, n), far, dtype),
    via_row=jnp.zeros((b, n), INDEX_DTYPE),
    scanned=jnp.zeros((b, n), bool),
    in_tree=index == start[:, None],
    path_bits=jnp.zeros((b, n, words), jnp.uint32),
    row=start,
    root=root,
    step=jnp.zeros((), jnp.int32),
  )

  def step(s: JVState) -> JVState:
    active = s.root < n  # [B]
    # Scan `row`: reduced costs from it, and the shorter distances they give.
    reduced = flat_rows.at[first_row + s.row].get(mode=_PROMISE)  # [B, N]
    reduced = reduced - _pick(s.u, s.row)[:, None] - s.v
    shorter = ~s.scanned & (reduced < s.dist)
    dist = jnp.where(shorter, reduced, s.dist)
    via_row = jnp.where(shorter, s.row[:, None], s.via_row)
    # The closest unscanned column, a free one first among ties.
    open_dist = jnp.where(s.scanned, far, dist)
    delta = jnp.min(open_dist, axis=1)  # [B]
    tie_key = jnp.where(s.row_of_col < 0, index, index + n)
    col = jnp.min(jnp.where(open_dist == delta[:, None], tie_key, 2 * n), axis=1) % n  # [B]
    # Move the potentials by delta: the reached rows up, the scanned columns down, so reduced
    # costs inside the tree stay, and the open distances drop by delta.
    shift = jnp.where(active, delta, 0)[:, None]  # [B, 1]
    u = s.u + jnp.where(s.in_tree, shift, 0)
    v = s.v - jnp.where(s.scanned, shift, 0)
    dist = jnp.where(s.scanned, dist, dist - shift)
    is_col = index == col[:, None]  # [B, N]
    scanned = s.scanned | (is_col & active[:, None])
    # The path to `col`: the path to the row that reached it, plus `col`.
    owner = _pick(s.row_of_col, col)  # [B], -1: col is free
    reached_by = _pick(via_row, col)  # [B]
    bits = jnp.take_along_axis(s.path_bits, reached_by[:, None, None], axis=1, mode=_PROMISE)
    col_word = jnp.where(
      word_of == (col // 32)[:, None],
      jnp.left_shift(jnp.uint32(1), (col % 32).astype(jnp.uint32))[:, None],
      jnp.uint32(0),
    )  # [B, W]
    bits = bits[:, 0, :] | col_word  # [B, W]
    grow = active & (owner >= 0)  # [B]: col's owner joins the tree and is scanned next
    augment = active & (owner < 0)  # [B]: col is free, flip the path to it
    joins = (index == owner[:, None]) & grow[:, None]  # [B, N]
    path_bits = jnp.where(joins[:, :, None], bits[:, None, :], s.path_bits)
    in_tree = s.in_tree | joins
    row = jnp.where(grow, owner, s.row)
    # Flip: every column on the path takes the row that reached it.
    spread = jnp.concatenate(
      [jnp.broadcast_to(bits[:, k : k + 1], (b, min(32, n - 32 * k))) for k in range(words)],
      axis=1,
    )  # [B, N], each column's word
    on_path = ((spread & column_bit) != 0) & augment[:, None]
    row_of_col = jnp.where(on_path, via_row, s.row_of_col)
    # The next free row starts a fresh search.
    row_free = s.row_free & ~((index == s.root[:, None]) & augment[:, None])
    next_root = jnp.min(jnp.where(row_free, index, n), axis=1)  # [B]
    next_start = jnp.minimum(next_root, n - 1)
    root = jnp.where(augment, next_root, s.root)
    row = jnp.where(augment, next_start, row)
    reset = augment[:, None]
    return JVState(
      u=u,
      v=v,
      row_of_col=row_of_col,
      row_free=row_free,
      dist=jnp.where(reset, far, dist),
      via_row=via_row,
      scanned=scanned & ~reset,
      in_tree=jnp.where(reset, index == next_start[:, None], in_tree),
      path_bits=jnp.where(reset[:, :, None], jnp.uint32(0), path_bits),
      row=row,
      root=root,
      step=s.step + 1,
    )

  def unfinished(s: JVState) -> jax.Array:
    return jnp.any(s.root < n) & (s.step < max_steps)

  state = jax.lax.while_loop(unfinished, step, state)
  batch = jnp.arange(b)[:, None]  # [B, 1]
  matched = jnp.maximum(state.row_of_col, 0)  # [B, N]
  cols = jnp.zeros((b, n), INDEX_DTYPE).at[batch, matched].set(jnp.broadcast_to(index, (b, n)))
  return cols, state.root >= n, state.step
