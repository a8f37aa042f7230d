"""Benchmark of batched matching: every method against scipy's host loop, and inside a step.

Run: `.venv/bin/python -m benchmarks.bench_matching [--quick]` from the repository root. It
prints a markdown table; `run(quick)` returns the figures as a dict.

For a batch of 128 random float32 cost matrices at N = 10, 16, 24, 32, 64 it times (medians over
repeats, all in one run, so the ratios compare like with like):
- "scipy host loop": `scipy.optimize.linear_sum_assignment` per matrix on numpy arrays (the
  reference's way);
- each method of `idspn_jax.matching.linear_sum_assignment`, jitted (optax's Hungarian is
  timed once at N = 64: it takes seconds);
- jv's sequential steps (the batch's largest count of Dijkstra scans), its time per step, and
  scipy's time per matrix;
- a jitted training step, value and gradient of the mean `hungarian_loss` of sets [128, N, 8]
  with scipy, the auction and jv, against the same step with the matching given as an input:
  the matching's share of the step is 1 - (step without matching) / (step).
"""

import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.optimize

from idspn_jax import _losses, _matching, losses, matching

BATCH = 128
SIZES = (10, 16, 24, 32, 64)
FEATURES = 8
METHODS = ("scipy", "hungarian", "auction", "jv")
# Methods also timed inside a jitted training step.
STEP_METHODS = ("scipy", "auction", "jv")


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


def _step_times(n: int, method: str, repeats: int) -> tuple[float, float]:
  rng = np.random.default_rng(n)
  pred = jnp.asarray(rng.normal(size=(BATCH, n, FEATURES)), jnp.float32)
  target = jnp.asarray(rng.normal(size=(BATCH, n, FEATURES)), jnp.float32)

  @jax.jit
  def step(pred, target):
    return jax.value_and_grad(lambda p: losses.hungarian_loss(p, target, method=method).mean())(
      pred
    )

  @jax.jit
  def step_given_matching(pred, target, cols):
    def loss_fn(p):
      pdist = _losses.pairwise_cost(p, target, "smooth_l1")  # [B, N, N]
      return _losses.matched_mean(pdist, cols).mean()

    return jax.value_and_grad(loss_fn)(pred)

  cols = jnp.tile(jnp.arange(n, dtype=jnp.int32), (BATCH, 1))  # [B, N]
  full = _median_seconds(lambda: jax.block_until_ready(step(pred, target)), repeats)
  base = _median_seconds(
    lambda: jax.block_until_ready(step_given_matching(pred, target, cols)), repeats
  )
  return full, base


def run(quick: bool = False) -> dict:
  """Times every method and returns {"backend", "batch", "rows": [...]} with seconds and ratios."""
  repeats = 3 if quick else 15
  rows = []
  for n in SIZES:
    cost = np.random.default_rng(0).random((BATCH, n, n)).astype(np.float32)
    row = {
      "n": n,
      "scipy_host_loop_s": _median_seconds(lambda c=cost: _scipy_host_loop(c), repeats),
    }
    for method in METHODS:
      solve = jax.jit(lambda c, m=method: matching.linear_sum_assignment(c, method=m)[1])
      reps = 1 if (method == "hungarian" and (quick or n == 64)) else repeats
      seconds = _median_seconds(lambda s=solve, c=cost: s(c).block_until_ready(), reps)
      row[f"{method}_s"] = seconds
      row[f"{method}_vs_scipy_host"] = seconds / row["scipy_host_loop_s"]
    # jv's sequential steps (the batch's largest count of Dijkstra scans) and time per step.
    row["jv_steps"] = int(_matching.solve_jv(jnp.asarray(cost))[2])
    row["jv_us_per_step"] = 1e6 * row["jv_s"] / max(row["jv_steps"], 1)
    row["scipy_us_per_matrix"] = 1e6 * row["scipy_host_loop_s"] / BATCH
    for method in STEP_METHODS:
      full, base = _step_times(n, method, repeats)
      row[f"step_{method}_s"] = full
      row[f"step_{method}_matching_share"] = max(0.0, 1.0 - base / full)
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
    "| N | scipy host loop | scipy callback | optax hungarian | auction | jv "
    "| jv steps | us per jv step | scipy us per matrix "
    + "".join(f"| step ({m}) | matching share " for m in STEP_METHODS)
    + "|",
    "|---|" + "---|" * (4 + len(METHODS) + 2 * len(STEP_METHODS)),
  ]
  for r in result["rows"]:
    cells = [str(r["n"]), f"{1e3 * r['scipy_host_loop_s']:.2f}"]
    for m in METHODS:
      cells.append(f"{1e3 * r[f'{m}_s']:.2f} ({r[f'{m}_vs_scipy_host']:.1f}x)")
    cells += [str(r["jv_steps"]), f"{r['jv_us_per_step']:.0f}", f"{r['scipy_us_per_matrix']:.0f}"]
    for m in STEP_METHODS:
      cells.append(f"{1e3 * r[f'step_{m}_s']:.2f}")
      cells.append(f"{100 * r[f'step_{m}_matching_share']:.0f}%")
    lines.append("| " + " | ".join(cells) + " |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(run(quick="--quick" in sys.argv)))

