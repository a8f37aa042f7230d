"""Training-step time, FLOP/s and peak memory of the paper's configs, per backward mode.

  python -m benchmarks.bench_steps                 # every config, in this process
  python -m benchmarks.bench_steps --one CONFIG MODE STEPS   # one config in a fresh process:
                                                   # prints JSON with its own peak RSS

A step is what training runs: forward (inner loop), Hungarian loss, backward, Adam, with the
batch of 128 and the model widths of REFERENCE.md. XLA's cost analysis counts a loop body once,
so the FLOPs of the remaining inner iterations are added by hand from the inner step's own count.
"""

from __future__ import annotations

import functools
import json
import sys

import jax

from benchmarks import common
from experiments.common import train
from experiments.configs import random_sets as random_sets_config
from experiments.random_sets import task as random_sets

BATCH = 128


def random_sets_setup(*, steps: int, backward: str, n: int = 16, d: int = 8, width: int = 512,
                      unroll: int | bool = 1):
  """(jitted step, state, sharded batch, inner energy info) for the random-sets autoencoder."""
  config = random_sets_config.get_config("paper")
  config.data.set_size, config.data.set_dim = n, d
  config.data.train_size = 4 * BATCH
  config.model.hidden = config.model.latent = width
  # "unroll" is DSPN (momentum 0); the implicit modes run iDSPN's momentum 0.9.
  config.model.decoder = "dspn" if backward == "unroll" else "idspn"
  config.model.idspn.steps = steps
  config.model.idspn.backward = backward
  config.model.idspn.loop_unroll = unroll
  config.train.batch_size = BATCH
  task = random_sets.create_task(config)
  return _setup(config, task, steps)


def numbering_setup(*, steps: int, backward: str, unroll: int | bool = 1):
  """The same for class-specific numbering (64 elements, 4 classes, width 256)."""
  from experiments.configs import numbering as numbering_config
  from experiments.numbering import task as numbering

  config = numbering_config.get_config("paper")
  config.model.name = "dspn" if backward == "unroll" else "idspn"
  config.model.idspn.steps = steps
  config.model.idspn.backward = backward
  config.train.batch_size = BATCH
  config.data.train_size = str(2 * BATCH)
  config.data.val_size = BATCH
  config.data.test_size = BATCH
  if unroll != 1:
    raise ValueError("the numbering config has no inner-loop unroll option")
  config = numbering.resolve_config(config)
  task = numbering.create_task(config)
  return _setup(config, task, steps)


def _setup(config, task, steps):
  mesh = train.create_mesh()
  state = train.create_train_state(config, task, mesh)
  batch = train.shard_batch(next(task.train_batches(0)), mesh)
  step = jax.jit(functools.partial(train.train_step, task=task, inner_steps=steps))
  return step, state, batch


def measure(setup, *, steps: int, backward: str, repeats: int = 8, count_flops: bool = True
            ) -> dict:
  """Median step time (and FLOP/s) of one configuration.

  XLA's cost analysis counts a loop body once, so the FLOPs come from a second compilation
  of the same step with its inner loop fully unrolled.
  """
  step, state, batch = setup(steps=steps, backward=backward)
  compiled = step.lower(state, batch).compile()
  seconds = common.median_time(lambda: compiled(state, batch), repeats=repeats)
  memory = compiled.memory_analysis()
  result = {"seconds": seconds, "temp_mib": memory.temp_size_in_bytes / 2**20}
  if count_flops:
    unrolled, state_u, batch_u = setup(steps=steps, backward=backward, unroll=steps)
    flops = common.compiled_flops(unrolled.lower(state_u, batch_u).compile())
    result.update(flops=flops, flops_per_second=flops / seconds)
  return result


def inference(setup_fn, *, steps: int, batch_size: int, repeats: int = 8) -> float:
  """Median latency of a forward pass (no gradient) for ``batch_size`` sets."""
  _, state, batch = setup_fn(steps=steps, backward="approx")
  batch = jax.tree.map(lambda x: x[:batch_size], batch)
  fn = jax.jit(lambda s, b: s.apply_fn({"params": s.params}, b, train=False, steps=steps,
                                       rngs=train._rngs(jax.random.PRNGKey(0))))
  return common.median_time(fn, state, batch, repeats=repeats)


SETUPS = {"random_sets": random_sets_setup, "numbering": numbering_setup}

# (config, inner steps, backward modes) timed by `run`.
TIMED = (
  # (config, inner steps, backward modes, count FLOPs by compiling an unrolled copy)
  ("random_sets", 20, ("approx", "cg", "unroll"), True),
  ("numbering", 20, ("approx", "unroll"), False),
)


def one(config: str, backward: str, steps: int) -> dict:
  """One configuration, meant for a fresh process: time plus this process's peak RSS."""
  result = measure(SETUPS[config], steps=steps, backward=backward, repeats=3, count_flops=False)
  result["peak_rss_mib"] = common.own_peak_rss_mib()
  return result


def run(quick: bool = False, peak: float | None = None, fresh: bool = True) -> dict:
  """Step times (and FLOP/s as a fraction of ``peak``), fresh-process peak RSS against inner
  steps, and inference latency."""
  repeats = 3 if quick else 8
  results = {"timed": [], "rss": [], "inference": {}}
  timed = TIMED[:1] if quick else TIMED
  for config, steps, modes, flops in timed:
    for backward in modes:
      r = measure(SETUPS[config], steps=steps, backward=backward, repeats=repeats,
                  count_flops=flops and not quick)
      r.update(config=config, steps=steps, backward=backward)
      if peak and "flops_per_second" in r:
        r["fraction_of_peak"] = r["flops_per_second"] / peak
      results["timed"].append(r)
      print(f"step {config} {steps} {backward}: {r['seconds']:.3f} s", flush=True)
  if fresh and not quick:
    for steps in (10, 20, 40, 80):
      for backward in ("approx", "unroll"):
        r = common.run_fresh("benchmarks.bench_steps", "--one", "random_sets", backward,
                             str(steps))
        r.update(config="random_sets", steps=steps, backward=backward)
        results["rss"].append(r)
        print(f"fresh {steps} {backward}: {r['seconds']:.3f} s, {r['peak_rss_mib']:.0f} MiB",
              flush=True)
  results["inference"] = {
    "one_set_s": inference(random_sets_setup, steps=20, batch_size=1, repeats=repeats),
    "batch_128_s": inference(random_sets_setup, steps=20, batch_size=BATCH, repeats=repeats),
  }
  return results


def markdown(results: dict, reference: dict, here: dict | None = None) -> str:
  """``reference``: the issue's figures by (config, steps); ``here``: the reference timed on
  this machine in the same run (`benchmarks.run.reference_here`), by "config steps"."""
  here = here or {}
  lines = ["| config | inner steps | backward | ours (s/step) | reference, this machine | "
           "speed-up | reference, issue | GFLOP/step | % of matmul peak |",
           "|---|---|---|---|---|---|---|---|---|"]
  for r in results["timed"]:
    key = "dspn_s" if r["backward"] == "unroll" else "idspn_s"
    ref_s = reference.get((r["config"], r["steps"]), {}).get(key)
    ref_here = here.get(f"{r['config']} {r['steps']}", {}).get(key)
    if r["backward"] == "cg":  # the reference has no exact-implicit mode
      ref_s = ref_here = None
    ratio = f"{ref_here / r['seconds']:.1f}x" if ref_here else ""
    gflop = f"{r['flops'] / 1e9:.1f}" if "flops" in r else ""
    frac = f"{100 * r['fraction_of_peak']:.0f}%" if "fraction_of_peak" in r else ""
    lines.append(f"| {r['config']} | {r['steps']} | {r['backward']} | {r['seconds']:.3f} | "
                 f"{f'{ref_here:.3f}' if ref_here else ''} | {ratio} | {ref_s or ''} | "
                 f"{gflop} | {frac} |")
  if results["rss"]:
    lines += ["", "Fresh process per configuration (random sets n=16 d=8, width 512, batch 128; "
              "the reference's RSS growth is its peak minus its RSS before the first step, as "
              "torch alone takes ~700 MiB):",
              "", "| inner steps | backward | s/step | peak RSS (MiB) | reference here s/step | "
              "reference here RSS growth (MiB) | reference (issue) s/step | "
              "reference (issue) peak RSS (MB) |", "|---|---|---|---|---|---|---|---|"]
    for r in results["rss"]:
      ref = reference.get(("random_sets", r["steps"]), {})
      ref_here = here.get(f"random_sets {r['steps']}", {})
      key = "dspn" if r["backward"] == "unroll" else "idspn"
      s_here, mib_here = ref_here.get(key + "_s"), ref_here.get(key + "_mib")
      lines.append(f"| {r['steps']} | {r['backward']} | {r['seconds']:.3f} | "
                   f"{r['peak_rss_mib']:.0f} | {f'{s_here:.3f}' if s_here else ''} | "
                   f"{f'{mib_here:.0f}' if mib_here else ''} | {ref.get(key + '_s', '')} | "
                   f"{ref.get(key + '_mb', '')} |")
  inf = results["inference"]
  ref = reference.get(("inference", 20), {})
  ref_here = here.get("inference 20", {}).get("idspn_s")
  lines += ["", f"Inference (random sets n=16 d=8, 20 inner steps): one set "
            f"{1e3 * inf['one_set_s']:.1f} ms, batch of 128 {1e3 * inf['batch_128_s']:.1f} ms "
            f"(reference, batch of 128: {1e3 * ref.get('idspn_s', float('nan')):.0f} ms in the "
            f"issue" + (f", {1e3 * ref_here:.0f} ms on this machine" if ref_here else "") + ")."]
  return "\n".join(lines)


if __name__ == "__main__":
  if len(sys.argv) == 5 and sys.argv[1] == "--one":
    print(json.dumps(one(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
  else:
    peak = common.matmul_peak()
    print(json.dumps({"matmul_peak": peak}))
    results = run(quick="--quick" in sys.argv, peak=peak["xla_flops"],
                  fresh="--no-fresh" not in sys.argv)
    print(json.dumps(results))
    print(markdown(results, common.REFERENCE))
