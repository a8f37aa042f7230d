"""Peak memory of a training step against the number of inner steps, per backward mode.

The implicit modes (`approx`, `cg`) keep no per-step activations, so their memory is flat in
the number of inner steps; `unroll` (DSPN) stores every step for backpropagation.

Run: `python -m benchmarks.bench_memory` (or `make bench` for every benchmark).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

import idspn_jax

STEPS = (10, 20, 40, 80)
MODES = ("approx", "cg", "unroll")


def _step_memory(backward: str, steps: int, *, batch: int, n: int, d: int, width: int) -> dict:
  """Compiled memory of one gradient step of the random-sets autoencoder's decoder."""
  layer = idspn_jax.IDSPN(
    set_size=n, set_dim=d, latent=width, hidden=width, steps=steps, backward=backward,
    energy="mse_regularized", momentum=0.0 if backward == "unroll" else 0.9,
  )
  z = jnp.zeros((batch, width), jnp.float32)
  target = jnp.zeros((batch, n, d), jnp.float32)
  variables = jax.eval_shape(layer.init, jax.random.key(0), z)

  def loss(variables, z, target):
    return jnp.mean((layer.apply(variables, z) - target) ** 2)

  compiled = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(variables, z, target).compile()
  stats = compiled.memory_analysis()
  return {
    "temp_bytes": int(stats.temp_size_in_bytes),
    "argument_bytes": int(stats.argument_size_in_bytes),
    "output_bytes": int(stats.output_size_in_bytes),
  }


def run(quick: bool = False) -> dict:
  """Compiled temp memory (bytes) per backward mode and inner-step count."""
  shape = dict(batch=128, n=16, d=8, width=512)
  if quick:
    shape = dict(batch=16, n=8, d=4, width=64)
  results = {"shape": shape, "temp_bytes": {}}
  for mode in MODES:
    results["temp_bytes"][mode] = {
      steps: _step_memory(mode, steps, **shape)["temp_bytes"] for steps in STEPS
    }
  return results


def markdown(results: dict) -> str:
  rows = ["| backward | " + " | ".join(f"{s} steps" for s in STEPS) + " | 80 / 10 |",
          "|---|" + "---|" * (len(STEPS) + 1)]
  for mode, by_steps in results["temp_bytes"].items():
    mib = [by_steps[s] / 2**20 for s in STEPS]
    rows.append(f"| {mode} | " + " | ".join(f"{m:.1f} MiB" for m in mib)
                + f" | {by_steps[80] / max(by_steps[10], 1):.2f}x |")
  return "\n".join(rows)


if __name__ == "__main__":
  print(functools.partial(markdown)(run()))
