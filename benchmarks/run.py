"""`make bench`: every benchmark in one run, written to benchmarks/results.json and results.md.

  python -m benchmarks.run            # the full set (a few minutes on 2 cores)
  python -m benchmarks.run --quick    # small shapes, a smoke test of the harness

Figures are medians over repeated calls after compilation, all from this one run, so ratios
between them are like for like. Reference figures (PyTorch, same kind of machine) come from
the performance issue and are printed beside ours. With a PyTorch environment and a checkout of
the reference implementation, the same run also times the reference on this machine first
(`benchmarks/bench_reference_torch.py`, about 10 more minutes):

  python -m benchmarks.run --reference_python=/path/to/torch/venv/bin/python \
      --reference_dir=/path/to/multiset-equivariance
  # or set IDSPN_REFERENCE_PYTHON and IDSPN_REFERENCE_DIR (then `make bench` picks them up)
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import tempfile
import time

import jax

from benchmarks import (
  bench_matching,
  bench_memory,
  bench_parts,
  bench_pipeline,
  bench_steps,
  common,
)

HERE = pathlib.Path(__file__).resolve().parent


def machine() -> dict:
  return {
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "device_kind": jax.devices()[0].device_kind,
    "cpu_count": __import__("os").cpu_count(),
    "platform": platform.platform(),
    "jax": jax.__version__,
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
  }


def reference_here(python: str, reference_dir: str, quick: bool) -> dict:
  """Times the reference PyTorch code on this machine (fresh processes; see the harness).

  Returns its JSON plus ``by_config``: {"config steps": {"idspn_s", "dspn_s", "idspn_mib",
  "dspn_mib"}}, where the MiB are the RSS growth during the timed steps.
  """
  if not pathlib.Path(reference_dir, "models.py").is_file():
    raise FileNotFoundError(f"no reference checkout (models.py) in {reference_dir!r}")
  with tempfile.TemporaryDirectory() as tmp:
    out = pathlib.Path(tmp, "reference.json")
    command = [python, str(HERE / "bench_reference_torch.py"), "--reference_dir", reference_dir,
               "--out", str(out)] + (["--quick"] if quick else [])
    print("reference:", " ".join(command), flush=True)
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    measured = json.loads(out.read_text())
  by_config = {}
  for r in measured["results"]:
    config = r["config"] if r["mode"] == "train" else "inference"  # modes: train, infer
    entry = by_config.setdefault(f"{config} {r['steps']}", {})
    entry[f"{r['model']}_s"] = r["seconds"]
    entry[f"{r['model']}_mib"] = r["peak_rss_mib"] - r["rss_before_steps_mib"]
  measured["by_config"] = by_config
  return measured


def run(quick: bool, reference_python: str | None = None, reference_dir: str | None = None
        ) -> dict:
  results = {"machine": machine(), "quick": quick}
  if reference_python and reference_dir:
    # First, while nothing of ours is resident.
    results["reference_here"] = reference_here(reference_python, reference_dir, quick)
  peak = common.matmul_peak()
  results["matmul_peak"] = peak
  print(f"matmul peak: XLA {peak['xla_flops'] / 1e9:.0f} GFLOP/s, numpy "
        f"{peak['numpy_flops'] / 1e9:.0f} GFLOP/s", flush=True)
  results["steps"] = bench_steps.run(quick=quick, peak=peak["xla_flops"])
  results["memory"] = bench_memory.run(quick=quick)
  results["matching"] = bench_matching.run(quick=True)
  results["pipeline"] = bench_pipeline.run(quick=quick)
  results["parts"] = bench_parts.run()
  # Measured again at the end: the peak is the better of the two, and every fraction of it is
  # taken against that.
  again = common.matmul_peak()
  for key in peak:
    peak[key] = max(peak[key], again[key])
  for r in results["steps"]["timed"]:
    if "flops_per_second" in r:
      r["fraction_of_peak"] = r["flops_per_second"] / peak["xla_flops"]
  return results


def markdown(results: dict) -> str:
  m = results["machine"]
  parts = [
    f"Machine: {m['device_kind']} ({m['backend']}, {m['cpu_count']} CPUs), jax {m['jax']}, "
    f"{m['date']}. Matmul peak measured in the same run (best of 5 medians of 20 calls, at its "
    f"start and end): "
    f"{results['matmul_peak']['xla_flops'] / 1e9:.0f} GFLOP/s (XLA, 2048x512 @ 512x512 f32).",
    "",
    "### Training step (median s/step)",
    bench_steps.markdown(results["steps"], common.REFERENCE,
                         results.get("reference_here", {}).get("by_config")),
    "",
    "### Compiled temporary memory of one training step against inner steps",
    bench_memory.markdown(results["memory"]),
    "",
    "### Matching, batch of 128 (median ms)",
    bench_matching.markdown(results["matching"]),
    "",
    "### CLEVR input pipeline against the model",
    bench_pipeline.markdown(results["pipeline"]),
    "",
    "### Parts of a step, timed alone (median ms)",
    bench_parts.markdown(results["parts"]),
  ]
  return "\n".join(parts)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--quick", action="store_true", help="small shapes, few repeats")
  parser.add_argument("--out", default=str(HERE), help="folder for results.json / results.md")
  parser.add_argument("--reference_python", default=os.environ.get("IDSPN_REFERENCE_PYTHON"),
                      help="a Python with torch, to time the reference here too")
  parser.add_argument("--reference_dir", default=os.environ.get("IDSPN_REFERENCE_DIR"),
                      help="a checkout of davzha/multiset-equivariance")
  args = parser.parse_args()
  if bool(args.reference_python) != bool(args.reference_dir):
    parser.error("--reference_python and --reference_dir go together")
  results = run(args.quick, args.reference_python, args.reference_dir)
  out = pathlib.Path(args.out)
  out.mkdir(parents=True, exist_ok=True)
  name = "results_quick" if args.quick else "results"
  (out / f"{name}.json").write_text(json.dumps(results, indent=2, default=str))
  table = markdown(results)
  (out / f"{name}.md").write_text(table + "\n")
  print(table)


if __name__ == "__main__":
  main()
