"""Shortest augmenting paths compiled for the host CPU (numba), over a batch of matrices.

The same method as `idspn_jax._matching.solve_jv` (the Hungarian method in Jonker-Volgenant
form: column reduction, then one Dijkstra search per row left free), written as a plain loop
per matrix and compiled by numba. On CPU this is what the hardware runs best: a batch of
problems of different lengths costs the sum of their own work, not B times the slowest one's
sequential steps, and no loop iteration pays XLA's per-kernel overhead. Matrices are split
into contiguous chunks solved on separate threads (the compiled loop releases the GIL).

`solve(cost)` takes a numpy array [..., N, N] and returns the column of each row [..., N],
int32.
Costs are read as float64, so integer costs up to 2**53 are solved exactly. A matrix with a
non-finite cost gets the identity assignment (the caller checks concrete inputs; under `jit`
the NaN then reaches the loss, where training reports it).
"""

import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np

# Work (B N^3) from which the batch is split over threads: handing a chunk to another thread
# costs ~0.05 ms here (its wake-up), recovered from batch 128 at N = 16 or batch 8 at N = 64
# (single-threaded 0.4-0.6 ms), not at batch 128 at N = 10 or batch 8 at N = 32 (under 0.1 ms).
THREADED_MIN_WORK = 2**19

_DTYPES = (np.float32, np.float64, np.int32, np.int64)


def _solve_chunk_py(cost, out, start, stop):
  """Solves matrices cost[start:stop] into out[start:stop]; cost [B, N, N], out [B, N]."""
  n = cost.shape[1]
  # Dual potentials: row_pot[i] + col_pot[j] <= cost[i, j], with equality on assigned pairs.
  row_pot = np.empty(n)
  # Slot n is a virtual column that "holds" the row being inserted by the current search.
  col_pot = np.empty(n + 1)
  owner = np.empty(n + 1, np.int64)  # Row holding each column, -1 when free.
  parent = np.empty(n + 1, np.int64)  # Column before each column on its shortest path.
  dist = np.empty(n + 1)  # Tentative reduced path length to each column.
  done = np.empty(n + 1, np.bool_)  # Columns whose shortest path is final.
  has_col = np.empty(n, np.bool_)
  for k in range(start, stop):
    c = cost[k]
    finite = True
    for i in range(n):
      for j in range(n):
        if not np.isfinite(np.float64(c[i, j])):
          finite = False
    if not finite:
      for i in range(n):
        out[k, i] = i
      continue

    # Column reduction: col_pot[j] = min_i cost[i, j]; each column goes to its cheapest row
    # when that row has no column yet (a tight pair, so the potentials stay feasible).
    row_pot[:] = 0.0
    col_pot[n] = 0.0
    has_col[:] = False
    for j in range(n):
      best = np.inf
      arg = 0
      for i in range(n):
        x = np.float64(c[i, j])
        if x < best:
          best = x
          arg = i
      col_pot[j] = best
      if has_col[arg]:
        owner[j] = -1
      else:
        has_col[arg] = True
        owner[j] = arg

    # Each row left without a column: Dijkstra on reduced costs from that row to a free column,
    # then flip the path. At most n searches, each settling at most n columns.
    failed = False
    for row in range(n):
      if has_col[row]:
        continue
      owner[n] = row
      col = n
      dist[:] = np.inf
      done[:] = False
      while True:
        done[col] = True
        r = owner[col]
        offset = row_pot[r]
        step = np.inf
        nearest = -1
        for j in range(n):
          if not done[j]:
            d = np.float64(c[r, j]) - offset - col_pot[j]
            if d < dist[j]:
              dist[j] = d
              parent[j] = col
            if dist[j] < step:
              step = dist[j]
              nearest = j
        # Move the potentials by the settled distance: the settled columns' edges stay tight.
        for j in range(n + 1):
          if done[j]:
            row_pot[owner[j]] += step
            col_pot[j] -= step
          else:
            dist[j] -= step
        if nearest < 0:  # Only when the reduced costs overflow float64 (|cost| near 1e308).
          failed = True
          break
        col = nearest
        if owner[col] < 0:
          break
      if failed:
        break
      while col != n:
        prev = parent[col]
        owner[col] = owner[prev]
        col = prev
      has_col[row] = True
    if failed:
      for i in range(n):
        out[k, i] = i
    else:
      for j in range(n):
        out[k, owner[j]] = j


try:  # Compiled code is cached next to this file or in the user's cache folder.
  _solve_chunk = numba.njit(nogil=True, cache=True)(_solve_chunk_py)
except RuntimeError:  # Neither is writable: compile once per process instead.
  _solve_chunk = numba.njit(nogil=True)(_solve_chunk_py)

# The pool and the process that made it: a forked child gets a pool without threads.
_pool: ThreadPoolExecutor | None = None
_pool_pid = -1
_pool_lock = threading.Lock()


def _threads() -> int:
  return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _get_pool() -> ThreadPoolExecutor:
  global _pool, _pool_pid
  with _pool_lock:
    if _pool is None or _pool_pid != os.getpid():
      _pool = ThreadPoolExecutor(_threads() - 1, thread_name_prefix="idspn_jv_host")
      _pool_pid = os.getpid()
    return _pool


def solve(cost: np.ndarray) -> np.ndarray:
  """Minimum-cost assignment of each matrix of `cost` [..., N, N]: the column of each row.

  Args:
    cost: Square cost matrices with any leading axes, of any real dtype.

  Returns:
    The column matched to each row, of shape [..., N], int32.
  """
  cost = np.asarray(cost)
  if cost.ndim < 2 or cost.shape[-1] != cost.shape[-2]:
    raise ValueError(f"cost must have shape [..., N, N]; got {cost.shape}")
  if cost.dtype not in _DTYPES:
    cost = cost.astype(np.float64)
  n = cost.shape[-1]
  flat = np.ascontiguousarray(cost.reshape(-1, n, n))  # [B, N, N]
  b = flat.shape[0]
  out = np.empty((b, n), np.int32)  # [B, N]
  threads = min(_threads(), b)
  if b == 0 or n == 0:
    out[:] = 0
  elif threads == 1 or b * n**3 < THREADED_MIN_WORK:
    _solve_chunk(flat, out, 0, b)
  else:
    # The calling thread solves the last chunk itself while the pool solves the others.
    edges = np.linspace(0, b, threads + 1).astype(np.int64)
    pool = _get_pool()
    futures = [
      pool.submit(_solve_chunk, flat, out, edges[t], edges[t + 1]) for t in range(threads - 1)
    ]
    _solve_chunk(flat, out, edges[-2], edges[-1])
    for future in futures:
      future.result()
  return out.reshape(cost.shape[:-1])
