"""Tests of idspn_jax.matching: every method against scipy and brute force, and bad inputs."""

import itertools
import os
import signal
import subprocess
import sys
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from idspn_jax import _jv_host, _matching, losses, matching

# Every size n = 1..64 is tested, embedded into a few padded shapes so that each method compiles
# only those shapes (XLA:CPU takes seconds per shape): n <= 8 in 8 x 8, larger ones in 64 x 64.
SMALL = tuple(range(1, 9)) * 100  # 800 problems in 8 x 8
LARGE = (9, 12, 16, 23, 32, 40, 47, 55, 64) * 6  # 54 problems in 64 x 64


def scipy_totals(cost: np.ndarray) -> np.ndarray:
  """Optimal totals of a batch [B, N, N] -> [B] by scipy, one matrix at a time."""
  return np.array([m[scipy.optimize.linear_sum_assignment(m)].sum() for m in cost])


def totals(cost: np.ndarray, cols: jax.Array) -> np.ndarray:
  """Totals of the assignment `cols` [B, N] on `cost` [B, N, N] -> [B]."""
  cols = np.asarray(cols)
  n = cost.shape[-1]
  assert np.all(np.sort(cols, axis=-1) == np.arange(n)), "not a permutation"
  return np.take_along_axis(cost, cols[..., None], axis=-1)[..., 0].sum(-1)


def embedded_batch(sizes, size, draw, pad):
  """Random n x n problems for each n in `sizes`, embedded in [B, size, size].

  The embedding [[C, pad], [pad, 0]] has the same optimal total as C when pad exceeds the
  spread of C: moving k rows of C onto pad columns costs 2 k pad and saves at most k spread.
  """
  batch = np.full((len(sizes), size, size), pad, draw(1, 1).dtype)  # [B, size, size]
  best = np.zeros(len(batch), batch.dtype)
  for k, n in enumerate(sizes):
    block = draw(1, n)  # [1, n, n]
    batch[k, n:, n:] = 0
    batch[k, :n, :n] = block[0]
    best[k] = scipy_totals(block)[0]
  return batch, best


@pytest.fixture(scope="module")
def solve():
  """Jitted solvers, one per method (compiled once per shape and dtype)."""
  return {
    m: jax.jit(lambda c, m=m: matching.linear_sum_assignment(c, method=m)[1])
    for m in ("scipy", "hungarian", "auction", "jv", "jv_host")
  }


@pytest.mark.parametrize("sizes, size", [(SMALL, 8), (LARGE, 64)])
def test_float_totals_match_scipy(solve, sizes, size):
  rng = np.random.default_rng(size)
  cost, best = embedded_batch(sizes, size, lambda b, n: rng.random((b, n, n)), pad=2.0)
  np.testing.assert_allclose(totals(cost, solve["scipy"](cost)), best, rtol=1e-12)
  # The auction's bound: within 1e-6 of the costs' spread (2 here), under 1e-5 relative.
  auction = totals(cost, solve["auction"](cost))
  assert np.all(auction >= best - 1e-9)
  np.testing.assert_allclose(auction, best, rtol=1e-5)
  # Shortest augmenting paths: the optimum up to float32 rounding of the potentials.
  np.testing.assert_allclose(totals(cost, solve["jv"](cost)), best, rtol=1e-6)
  # The compiled host loop works in float64: scipy's optimum to rounding.
  np.testing.assert_allclose(totals(cost, solve["jv_host"](cost)), best, rtol=1e-12)
  if size == 8:  # optax's Hungarian is slow to run on big batches.
    np.testing.assert_allclose(totals(cost, solve["hungarian"](cost)), best, rtol=1e-9)


@pytest.mark.parametrize("sizes, size", [(SMALL, 8), (LARGE, 64)])
def test_integer_ties_exact(solve, sizes, size):
  rng = np.random.default_rng(100 + size)
  # Few distinct values: many ties and many optimal assignments.
  cost, best = embedded_batch(sizes, size, lambda b, n: rng.integers(0, 4, (b, n, n)), pad=8)
  for method in ("auction", "jv", "jv_host"):
    np.testing.assert_array_equal(totals(cost, solve[method](cost)), best)
  draw = lambda b, n: rng.integers(-1000, 1000, (b, n, n))
  wide, wide_best = embedded_batch(sizes, size, draw, pad=4000)
  for method in ("auction", "jv", "jv_host"):
    np.testing.assert_array_equal(totals(wide, solve[method](wide)), wide_best)
  # Integer values stored as floats: within the float tolerance, so exact after rounding.
  as_float = cost.astype(np.float64)
  for method in ("auction", "jv", "jv_host"):
    np.testing.assert_array_equal(np.round(totals(as_float, solve[method](as_float))), best)
  if size == 8:
    np.testing.assert_array_equal(totals(cost, solve["hungarian"](cost)), best)


def test_unpadded_shapes(solve):
  # A few sizes in their own shapes, float and integer.
  rng = np.random.default_rng(11)
  for n in (1, 5):
    cost = rng.random((50, n, n))
    ints = rng.integers(0, 3, (50, n, n))
    for method in ("auction", "jv", "jv_host"):
      np.testing.assert_allclose(totals(cost, solve[method](cost)), scipy_totals(cost))
      np.testing.assert_array_equal(totals(ints, solve[method](ints)), scipy_totals(ints))


def test_float32_auction_and_jv_within_tolerance(solve):
  cost = np.random.default_rng(7).random((128, 64, 64)).astype(np.float32)
  best = scipy_totals(cost.astype(np.float64))
  got = totals(cost.astype(np.float64), solve["auction"](cost))
  np.testing.assert_allclose(got, best, rtol=1e-4)
  got = totals(cost.astype(np.float64), solve["jv"](cost))
  np.testing.assert_allclose(got, best, rtol=1e-6)
  got = totals(cost.astype(np.float64), solve["jv_host"](cost))
  np.testing.assert_allclose(got, best, rtol=1e-12)


def check_distance_costs(solver, rng, rtol):
  """Squared distances of point sets (the losses' costs), float32, in their own shapes."""
  for n in (10, 32):
    x, y = rng.normal(size=(2, 64, n, 8)).astype(np.float32)
    cost = ((x[:, :, None, :] - y[:, None, :, :]) ** 2).sum(-1)  # [64, n, n]
    cols, converged = jax.jit(solver)(cost)[:2]
    assert np.all(np.asarray(converged))
    best = scipy_totals(cost.astype(np.float64))
    np.testing.assert_allclose(totals(cost.astype(np.float64), cols), best, rtol=rtol)


def test_jv_distance_costs_steps_and_nan():
  rng = np.random.default_rng(13)
  check_distance_costs(_matching.solve_jv, rng, rtol=1e-6)
  # Too few steps: the problems that need more report converged = False.
  cost = rng.random((4, 6, 6)).astype(np.float32)
  _, converged, steps = _matching.solve_jv(jnp.asarray(cost), max_steps=0)
  assert not np.all(np.asarray(converged)) and int(steps) == 0
  _, converged, steps = _matching.solve_jv(jnp.asarray(cost))
  assert np.all(np.asarray(converged)) and 0 < int(steps) <= 6 * 6 + 6
  # A NaN cost ends the loop too (within its bound), the other problems stay exact.
  cost[1, 2, 3] = np.nan
  cols, _, _ = jax.jit(_matching.solve_jv)(jnp.asarray(cost))
  keep = [0, 2, 3]
  np.testing.assert_allclose(
    totals(cost[keep], np.asarray(cols)[keep]), scipy_totals(cost[keep].astype(np.float64)),
    rtol=1e-6,
  )


def test_jv_host_threads_and_concurrent_callers(monkeypatch):
  rng = np.random.default_rng(14)
  cost = rng.random((37, 20, 20))  # An odd batch: uneven chunks over the threads.
  single = _jv_host.solve(cost)  # Below THREADED_MIN_WORK: one thread.
  np.testing.assert_allclose(totals(cost, single), scipy_totals(cost), rtol=1e-12)
  # Three chunks whatever this machine's core count: two on the pool, one on the caller.
  monkeypatch.setattr(_jv_host, "_threads", lambda: 3)
  monkeypatch.setattr(_jv_host, "THREADED_MIN_WORK", 0)
  np.testing.assert_array_equal(_jv_host.solve(cost), single)
  # Several callers at once (one callback per device) share the pool.
  with ThreadPoolExecutor(4) as callers:
    for got in callers.map(_jv_host.solve, [cost] * 8):
      np.testing.assert_array_equal(got, single)


def test_jv_host_threads_in_a_forked_child(monkeypatch):
  # A forked child inherits the pool object but not its threads: it must make its own.
  monkeypatch.setattr(_jv_host, "_threads", lambda: 2)
  monkeypatch.setattr(_jv_host, "THREADED_MIN_WORK", 0)
  cost = np.random.default_rng(16).random((8, 12, 12))
  expected = _jv_host.solve(cost)  # The parent's pool now exists.
  read, write = os.pipe()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # JAX warns that forking a multithreaded process may hang.
    pid = os.fork()
  if pid == 0:  # The child: solve on threads, report, and leave without pytest's cleanup.
    try:
      os.write(write, _jv_host.solve(cost).tobytes())
    finally:
      os._exit(0)
  os.close(write)
  deadline = time.monotonic() + 30
  while os.waitpid(pid, os.WNOHANG) == (0, 0):
    if time.monotonic() > deadline:
      os.kill(pid, signal.SIGKILL)
      os.waitpid(pid, 0)
      pytest.fail("the forked child hung on the thread pool")
    time.sleep(0.05)
  with os.fdopen(read, "rb") as pipe:
    got = np.frombuffer(pipe.read(), np.int32).reshape(expected.shape)
  np.testing.assert_array_equal(got, expected)


def test_jv_host_dtypes_axes_and_bad_values():
  rng = np.random.default_rng(15)
  ints = rng.integers(0, 5, (2, 3, 6, 6))
  best = scipy_totals(ints.reshape(6, 6, 6))
  # Dtypes without a compiled kernel are read as float64; leading axes are kept.
  for dtype in (np.int8, np.uint16, np.float16, np.int32, np.int64, np.float32):
    got = _jv_host.solve(ints.astype(dtype))
    assert got.shape == (2, 3, 6) and got.dtype == np.int32
    np.testing.assert_array_equal(totals(ints.reshape(6, 6, 6), got.reshape(6, 6)), best)
  with pytest.raises(ValueError, match=r"\[\.\.\., N, N\]"):
    _jv_host.solve(np.zeros((3, 4)))
  # Under jit a non-finite matrix gets the identity (the NaN reaches the loss); the others
  # are solved. Costs near the float64 limit overflow the potentials: the search stops, no hang.
  cost = rng.random((5, 4, 4))
  cost[1, 2, 3] = np.nan
  cost[2, 0, 0] = np.inf
  cost[3] = np.where(rng.random((4, 4)) < 0.5, -1.7e308, 1.7e308)
  cols = np.asarray(jax.jit(lambda c: matching.linear_sum_assignment(c, method="jv_host")[1])(cost))
  np.testing.assert_array_equal(cols[1:3], np.tile(np.arange(4), (2, 1)))
  assert sorted(cols[3]) == [0, 1, 2, 3]
  finite = [0, 4]
  np.testing.assert_allclose(totals(cost[finite], cols[finite]), scipy_totals(cost[finite]))


_SHARDED_SCRIPT = """
import jax
import numpy as np
import scipy.optimize
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from idspn_jax import matching
assert jax.device_count() == 4, jax.devices()
mesh = Mesh(np.array(jax.devices()), ("batch",))
cost = np.random.default_rng(0).random((8, 20, 20)).astype(np.float32)
sharded = jax.device_put(cost, NamedSharding(mesh, PartitionSpec("batch")))
best = [m[scipy.optimize.linear_sum_assignment(m)].astype(np.float64).sum() for m in cost]
for method in ("jv_host", "jv"):
  cols = jax.jit(lambda c, m=method: matching.linear_sum_assignment(c, method=m)[1])(sharded)
  got = np.take_along_axis(cost, np.asarray(cols)[..., None], -1).astype(np.float64).sum((-1, -2))
  np.testing.assert_allclose(got, best, rtol=1e-6)
print("SHARDED OK")
"""


def test_methods_on_a_batch_sharded_over_four_devices():
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4")
  out = subprocess.run([sys.executable, "-c", _SHARDED_SCRIPT], env=env, capture_output=True,
                       text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "SHARDED OK" in out.stdout


def test_auction_distance_costs_and_convergence():
  rng = np.random.default_rng(12)
  check_distance_costs(_matching.solve_auction, rng, rtol=1e-5)
  # A NaN cost never finishes: that problem reports converged = False, the others finish.
  cost = rng.random((3, 4, 4)).astype(np.float32)
  cost[1, 2, 3] = np.nan
  _, converged = _matching.solve_auction(jnp.asarray(cost), max_steps=500)
  np.testing.assert_array_equal(converged, [True, False, True])


def test_brute_force_small(solve):
  rng = np.random.default_rng(3)
  for n in range(1, 7):
    cost = rng.normal(size=(8, n, n)).round(1)  # rounding makes ties
    perms = np.array(list(itertools.permutations(range(n))))  # [P, n]
    brute = cost[:, np.arange(n), perms].sum(-1).min(-1)  # [8]
    # Embedded in the 8 x 8 shape compiled above (pad 20 > spread of the normals).
    padded = np.full((8, 8, 8), 20.0)
    padded[:, n:, n:] = 0
    padded[:, :n, :n] = cost
    for method in ("scipy", "hungarian", "auction", "jv", "jv_host"):
      np.testing.assert_allclose(totals(padded, solve[method](padded)), brute, atol=1e-9)
    np.testing.assert_allclose(totals(cost, solve["scipy"](cost)), brute, atol=1e-9)


def test_batch_axes_vmap_and_rows():
  cost = np.random.default_rng(5).random((2, 3, 6, 6))
  rows, cols = matching.linear_sum_assignment(cost, method="auction")
  assert rows.shape == cols.shape == (2, 3, 6)
  np.testing.assert_array_equal(rows, np.broadcast_to(np.arange(6), (2, 3, 6)))
  vmapped = jax.vmap(lambda c: matching.linear_sum_assignment(c, method="scipy")[1])(cost)
  np.testing.assert_array_equal(vmapped, matching.linear_sum_assignment(cost, method="scipy")[1])
  best = scipy_totals(cost.reshape(6, 6, 6))
  np.testing.assert_allclose(totals(cost.reshape(6, 6, 6), cols.reshape(6, 6)), best)


def test_no_gradient_through_matching():
  cost = jnp.asarray(np.random.default_rng(6).random((2, 4, 4)))
  for method in ("scipy", "auction", "jv", "jv_host", "auto"):

    def total(c, method=method):
      _, cols = matching.linear_sum_assignment(c, method=method)
      return jnp.take_along_axis(c, cols[..., None], axis=-1).sum()

    grad = jax.grad(total)(cost)
    # The gradient of the matched total is the 0/1 matching matrix itself.
    assert set(np.unique(np.asarray(grad))) <= {0.0, 1.0}
    np.testing.assert_array_equal(np.asarray(grad).sum(-1), np.ones((2, 4)))


def test_auto_method():
  assert matching.default_method("cpu") == "jv_host"
  assert matching.default_method("cpu", n=10) == "jv"
  assert matching.default_method("cpu", n=matching.CPU_JV_MAX_N + 1) == "jv_host"
  assert matching.default_method("gpu") == "jv"
  assert matching.default_method("tpu", n=64) == "jv"
  rows, cols = matching.linear_sum_assignment(np.eye(3)[::-1] * -1.0)
  np.testing.assert_array_equal(cols, [2, 1, 0])


@pytest.fixture
def without_numba(monkeypatch):
  """numba made unimportable, as in an install without the extra cpu-matcher.

  A None entry in `sys.modules` makes ``import numba`` raise ImportError; the matcher's module
  is dropped from `sys.modules` so that the next import of it runs again (both entries come
  back after the test), and the cached answer of `jv_host_available` is cleared on both sides.
  """
  monkeypatch.setitem(sys.modules, "numba", None)
  monkeypatch.delitem(sys.modules, "idspn_jax._jv_host", raising=False)
  _matching.jv_host_available.cache_clear()
  yield
  _matching.jv_host_available.cache_clear()


def test_auto_falls_back_to_jv_without_numba(without_numba):
  assert not _matching.jv_host_available()
  assert matching.default_method("cpu") == "jv"
  assert matching.default_method("cpu", n=64) == "jv"
  cost = np.random.default_rng(5).random((3, 16, 16))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # The fallback is silent.
    _, cols = matching.linear_sum_assignment(cost)
    loss = losses.hungarian_loss(jnp.asarray(cost[:, :, :2]), jnp.asarray(cost[:, ::-1, :2]))
  np.testing.assert_allclose(totals(cost, cols), scipy_totals(cost), rtol=1e-12)
  assert loss.shape == (3,) and np.all(np.isfinite(loss))


@pytest.mark.parametrize("cost", [np.ones((2, 4, 4)), np.ones((0, 4, 4))])
def test_explicit_jv_host_without_numba_names_the_extra(without_numba, cost):
  with pytest.raises(ImportError, match=r'"jv_host" needs numba.*idspn_jax\[cpu-matcher\]'):
    matching.linear_sum_assignment(cost, method="jv_host")
  with pytest.raises(ImportError, match=r"idspn_jax\[cpu-matcher\]"):
    jax.jit(lambda c: matching.linear_sum_assignment(c, method="jv_host"))(cost)


def test_jv_host_available_with_numba():
  assert _matching.jv_host_available()
  assert _matching.load_jv_host() is _jv_host


@pytest.mark.parametrize(
  "cost, message",
  [
    (np.zeros((3, 4)), "square"),
    (np.zeros((2, 3, 4)), "square"),
    (np.zeros((3,)), "square"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "finite"),
    (np.array([[0.0, np.inf], [1.0, 2.0]]), "finite"),
    (np.array([[True, False], [False, True]]), "float or integer"),
  ],
)
def test_bad_cost(cost, message):
  with pytest.raises(ValueError, match=message):
    matching.linear_sum_assignment(cost)


def test_bad_method():
  with pytest.raises(ValueError, match="method"):
    matching.linear_sum_assignment(np.zeros((2, 2)), method="greedy")
