"""Benchmark of batched matching: every method against scipy's host loop, and inside a step.

Run: `.venv/bin/python -m benchmarks.bench_matching [--quick]` from the repository root. It
prints a markdown table; `run(quick)` returns the figures as a dict.

For a batch of 128 random float32 cost matrices at N = 10, 12, 16, 24, 32, 64 it times (medians
over repeats, taken in turns in one run, so the ratios compare like with like):
- "scipy host loop": `scipy.optimize.linear_sum_assignment` per matrix on numpy arrays (the
  reference's way);
- each method of `idspn_jax.matching.linear_sum_assignment`, jitted (optax's Hungarian is
  timed once at N = 64: it takes seconds), and jv_host's compiled loop called directly on the
  numpy array as scipy's loop is ("jv_host on numpy": the jitted jv_host adds the callback);
- jv's sequential steps (the batch's largest count of Dijkstra scans), its time per step, and
  scipy's time per matrix;
- a jitted training step, value and gradient of the mean `hungarian_loss` of sets [128, N, 8]
  with scipy, the auction, jv and jv_host, against the same step with the matching given as an
  input: the matching's share of the step is 1 - (step without matching) / (step).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from idspn_jax import _jv_host, _losses, _matching, losses, matching

BATCH = 128
SIZES = (10, 12, 16, 24, 32, 64)
FEATURES = 8
METHODS = ("scipy", "hungarian", "auction", "jv", "jv_host")
# Methods also timed inside a jitted training step.
STEP_METHODS = ("scipy", "auction", "jv", "jv_host")


def _median_seconds(fn, repeats: int) -> float:
  fn()  # Compile and warm up.
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def _scipy_host_loop(cost: np.ndarray) -> list:
  return [scipy.optimize.linear_sum_assignment(m) for m in cost]


def _interleaved_medians(fns: dict, repeats: int) -> dict:
  """Median seconds of each function, timed in turns so that machine noise hits all alike."""
  for fn in fns.values():
    fn()  # Compile and warm up.
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      start = time.perf_counter()
      fn()
      times[name].append(time.perf_counter() - start)
  return {name: float(np.median(t)) for name, t in times.items()}


def _step_times(n: int, repeats: int) -> dict:
  """Seconds of a jitted loss-and-gradient step with each of STEP_METHODS, and without matching
  (the matching given as an input, key None), timed in turns."""
  rng = np.random.default_rng(n)
  pred = jnp.asarray(rng.normal(size=(BATCH, n, FEATURES)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(BATCH, n, FEATURES)), jnp.float32)

  def make_step(method):
    loss_fn = lambda p: losses.hungarian_loss(p, target, method=method).mean()
    step = jax.jit(jax.value_and_grad(loss_fn))
    return lambda: jax.block_until_ready(step(pred))

  @jax.jit
  def step_given_matching(pred, target, cols):
    def loss_fn(p):
      pdist = _losses.pairwise_cost(p, target, "smooth_l1")  # [B, N, N]
      return _losses.matched_mean(pdist, cols).mean()

    return jax.value_and_grad(loss_fn)(pred)

  cols = jnp.tile(jnp.arange(n, dtype=jnp.int32), (BATCH, 1))  # [B, N]
  fns = {m: make_step(m) for m in STEP_METHODS}
  fns[None] = lambda: jax.block_until_ready(step_given_matching(pred, target, cols))
  return _interleaved_medians(fns, 4 * repeats)


def run(quick: bool = False) -> dict:
  """Times every method and returns {"backend", "batch", "rows": [...]} with seconds and ratios."""
  repeats = 3 if quick else 15
  rows = []
  for n in SIZES:
    cost = np.random.default_rng(0).random((BATCH, n, n)).astype(np.float32)
    fns = {
      "scipy_host_loop": lambda c=cost: _scipy_host_loop(c),
      # jv_host's compiled loop called on the numpy array, as scipy's loop is (no callback).
      "jv_host_numpy": lambda c=cost: _jv_host.solve(c),
    }
    slow = {}  # optax's Hungarian at N = 64 (or in a quick run) is timed once, apart.
    for method in METHODS:
      solve = jax.jit(lambda c, m=method: matching.linear_sum_assignment(c, method=m)[1])
      fn = lambda s=solve, c=cost: s(c).block_until_ready()
      (slow if method == "hungarian" and (quick or n == 64) else fns)[method] = fn
    seconds = _interleaved_medians(fns, repeats)
    seconds.update({m: _median_seconds(fn, 1) for m, fn in slow.items()})
    row = {"n": n, "scipy_host_loop_s": seconds["scipy_host_loop"]}
    for method in (*METHODS, "jv_host_numpy"):
      row[f"{method}_s"] = seconds[method]
      row[f"{method}_vs_scipy_host"] = seconds[method] / row["scipy_host_loop_s"]
    # jv's sequential steps (the batch's largest count of Dijkstra scans) and time per step.
    row["jv_steps"] = int(_matching.solve_jv(jnp.asarray(cost))[2])
    row["jv_us_per_step"] = 1e6 * row["jv_s"] / max(row["jv_steps"], 1)
    row["scipy_us_per_matrix"] = 1e6 * row["scipy_host_loop_s"] / BATCH
    steps = _step_times(n, repeats)
    base = steps[None]
    for method in STEP_METHODS:
      row[f"step_{method}_s"] = steps[method]
      row[f"step_{method}_matching_share"] = max(0.0, 1.0 - base / steps[method])
    row["step_without_matching_s"] = base
    rows.append(row)
  return {
    "backend": jax.default_backend(),
    "batch": BATCH,
    "auto": {str(n): matching.default_method(n=n) for n in SIZES},
    "rows": rows,
  }


def markdown(result: dict) -> str:
  lines = [
    f"Backend {result['backend']}, batch {result['batch']}, float32; median ms (ratio to the "
    f"scipy host loop); 'auto' picks "
    + ", ".join(f"{m} at N = {n}" for n, m in result["auto"].items())
    + ".",
    "",
    "| N | scipy host loop | scipy callback | optax hungarian | auction | jv | jv_host "
    "| jv_host on numpy | jv steps | us per jv step | scipy us per matrix "
    + "".join(f"| step ({m}) | matching share " for m in STEP_METHODS)
    + "|",
    "|---|" + "---|" * (5 + len(METHODS) + 2 * len(STEP_METHODS)),
  ]
  for r in result["rows"]:
    cells = [str(r["n"]), f"{1e3 * r['scipy_host_loop_s']:.2f}"]
    for m in (*METHODS, "jv_host_numpy"):
      cells.append(f"{1e3 * r[f'{m}_s']:.2f} ({r[f'{m}_vs_scipy_host']:.1f}x)")
    cells += [str(r["jv_steps"]), f"{r['jv_us_per_step']:.0f}", f"{r['scipy_us_per_matrix']:.0f}"]
    for m in STEP_METHODS:
      cells.append(f"{1e3 * r[f'step_{m}_s']:.2f}")
      cells.append(f"{100 * r[f'step_{m}_matching_share']:.0f}%")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(run(quick="--quick" in sys.argv)))

