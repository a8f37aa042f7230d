"""What the benchmarks share: timing helpers (medians after compilation, matmul peak, RSS) and
the reference implementation's figures."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

# The reference implementation's per-step times and peak RSS (torch 2.13 CPU, 2 threads), from
# the performance issue; benchmarks.run prints ours beside them.
REFERENCE = {
  ("random_sets", 10): {"idspn_s": 0.92, "dspn_s": 1.83, "idspn_mb": 491, "dspn_mb": 789},
  ("random_sets", 20): {"idspn_s": 1.53, "dspn_s": 3.25, "idspn_mb": 486, "dspn_mb": 1139},
  ("random_sets", 40): {"idspn_s": 2.14, "dspn_s": 4.80, "idspn_mb": 486, "dspn_mb": 1803},
  ("random_sets", 80): {"idspn_s": 4.25, "dspn_s": 10.31, "idspn_mb": 502, "dspn_mb": 3196},
  ("numbering", 20): {"idspn_s": 2.56, "dspn_s": 5.24, "idspn_mb": 636, "dspn_mb": 2031},
  ("inference", 20): {"idspn_s": 1.31, "dspn_s": 1.36, "idspn_mb": 419, "dspn_mb": 1078},
}


def block(tree):
  return jax.tree.map(lambda x: x.block_until_ready() if hasattr(x, "block_until_ready") else x,
                      tree)


def median_time(fn, *args, repeats: int = 8, warmup: int = 1) -> float:
  """Median wall time of ``fn(*args)`` in seconds, after ``warmup`` calls (compilation)."""
  for _ in range(warmup):
    block(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    block(fn(*args))
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def matmul_peak(*, m: int = 2048, k: int = 512, n: int = 512, repeats: int = 20,
                rounds: int = 5) -> dict:
  """Achieved FLOP/s of an f32 matmul in XLA at the model's shape, and of numpy at 1024^2.

  The best of ``rounds`` medians of ``repeats`` calls each: a peak is what the machine can do,
  and on a shared machine a single short median can catch a busy moment (one run measured
  half the usual figure and reported steps above 100% of it).
  """
  a = jax.random.normal(jax.random.key(0), (m, k), jnp.float32)
  b = jax.random.normal(jax.random.key(1), (k, n), jnp.float32)
  dot = jax.jit(jnp.dot)
  xla = max(2 * m * k * n / median_time(dot, a, b, repeats=repeats) for _ in range(rounds))
  x = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
  numpy = max(2 * 1024**3 / median_time(np.dot, x, x, repeats=repeats) for _ in range(rounds))
  return {"xla_flops": xla, "numpy_flops": numpy}


def compiled_flops(compiled) -> float:
  """FLOPs XLA's cost analysis counts for a compiled function (loop bodies counted once)."""
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis.get("flops", 0.0)) if analysis else 0.0


def own_peak_rss_mib() -> float:
  """This process's peak resident memory in MiB.

  Linux's VmHWM, which starts afresh with the process image: `ru_maxrss` survives `execve`, so
  in a child started by a large parent it reports the parent's size (a constant 2.1 GB in our
  first fresh-process figures). Falls back to `ru_maxrss` (KiB) where /proc is missing.
  """
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024  # kB
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_fresh(module: str, *args: str, timeout: int = 900) -> dict:
  """Runs ``python -m module args`` in a fresh process and returns the JSON line it prints last
  (such modules report their own peak RSS with `own_peak_rss_mib`)."""
  out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                       timeout=timeout, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{module} {args} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])
