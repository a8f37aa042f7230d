"""Training-step time of the reference PyTorch iDSPN / DSPN on this machine (optional).

It is optional: it needs PyTorch (plus torchvision, scipy and `higher`, which the reference's
modules import) in a separate environment, and a checkout of the reference implementation
(davzha/multiset-equivariance). `make bench` runs it first when IDSPN_REFERENCE_PYTHON and
IDSPN_REFERENCE_DIR point at them (`benchmarks.run --reference_python/--reference_dir`).
It imports the reference's own classes (`models.DSPNBaseModel`, `losses.hungarian_loss*`,
`data.*`) from ``--reference_dir`` and only drives them, so its figures can be compared with
ours on the same hardware:

  python -m venv /work/refbench/.venv
  /work/refbench/.venv/bin/pip install torch torchvision scipy numpy higher
  /work/refbench/.venv/bin/python benchmarks/bench_reference_torch.py --reference_dir /work/refcode

A step is what the reference's Lightning `training_step` plus automatic optimisation runs:
forward (inner loop), Hungarian loss (scipy's `linear_sum_assignment`, serial in-process), the
backward pass and one Adam step (lr 1e-3), batch 128, `torch.set_num_threads(2)`. The median of
``--repeats`` timed steps after ``--warmup`` untimed ones is reported. By default every
configuration runs in a fresh process, which also reports its own peak RSS.

Settings follow the reference's run scripts:
  random sets (train_exp2.py, exp2_scripts): n=16, d=8, hidden=latent=512, FSPool encoder and
    FSPool energy, learned start set with the regularised energy (`--decoder_learn_init_set`),
    inner SGD lr 1, no gradient clip; iDSPN with momentum 0.9, DSPN with momentum 0 (backprop
    through the unrolled loop via `higher`); loss `hungarian_loss` (smooth-L1 cost).
  numbering (train_exp1.py, exp1_scripts/4_classes): 64 elements, 4 classes, set_dim 64,
    hidden=latent=256, energy on [set, input] (`mse_cat_input`), simplex projection, random
    start set; iDSPN momentum 0.9 with clip 40, DSPN momentum 0; loss
    `hungarian_loss_numbering` (l2) plus the two accuracies the reference logs.
  inference: the random-sets models, forward only under `torch.no_grad()`.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import types

BATCH = 128

# Figures quoted in the issue, measured elsewhere (s/step, peak RSS MB).
QUOTED = {
  ("random_sets", "train", 10): {"idspn": (0.92, 491), "dspn": (1.83, 789)},
  ("random_sets", "train", 20): {"idspn": (1.53, 486), "dspn": (3.25, 1139)},
  ("random_sets", "train", 40): {"idspn": (2.14, 486), "dspn": (4.80, 1803)},
  ("random_sets", "train", 80): {"idspn": (4.25, 502), "dspn": (10.31, 3196)},
  ("numbering", "train", 20): {"idspn": (2.56, 636), "dspn": (5.24, 2031)},
  ("random_sets", "infer", 20): {"idspn": (1.31, 419), "dspn": (1.36, 1078)},
}

# (config, mode, model, inner steps) in the order a full run measures them.
FULL = (
  [("random_sets", "train", "idspn", s) for s in (10, 20, 40, 80)]
  + [("random_sets", "train", "dspn", s) for s in (10, 20, 40, 80)]
  + [("numbering", "train", m, 20) for m in ("idspn", "dspn")]
  + [("random_sets", "infer", m, 20) for m in ("idspn", "dspn")]
)
QUICK = [("random_sets", "train", m, 20) for m in ("idspn", "dspn")]


def peak_rss_mib() -> float:
  """Peak RSS of this process image (VmHWM; ru_maxrss would carry over the parent's across
  execve), falling back to ru_maxrss where /proc is missing."""
  try:
    with open("/proc/self/status") as status:
      for line in status:
        if line.startswith("VmHWM:"):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def import_reference(reference_dir: str, ray_workers: int):
  """The reference's modules. `losses` imports ray at module level, but only uses it when
  matching runs in a ray pool; without ray installed a stand-in lets the serial path import."""
  sys.path.insert(0, os.path.abspath(reference_dir))
  try:
    import ray  # noqa: F401
  except ImportError:
    if ray_workers > 0:
      raise
    stand_in = types.ModuleType("ray")
    stand_in.remote = lambda fn: fn
    sys.modules["ray"] = stand_in
  import data
  import losses
  import models

  return data, losses, models


def build(config: str, model: str, steps: int, ref):
  """(network, batch, loss function) for one configuration, as the reference's scripts do."""
  import torch

  data, losses, models = ref
  implicit = model == "idspn"
  momentum = 0.9 if implicit else 0.0
  if config == "random_sets":
    n, d, width = 16, 8, 512
    enc = dict(d_in=d, d_hid=width, d_latent=width, set_size=n, pool="fs")
    obj = dict(enc, objective_type="mse_regularized")
    dspn = dict(learn_init_set=True, set_dim=d, set_size=n, momentum=momentum, lr=1.0,
                iters=steps, grad_clip=None, projection=None, implicit=implicit)
    sets = data.RandomMultisets(size=BATCH, cardinality=n, dim=d)
    batch = [sets[i] for i in range(BATCH)]

    def loss_fn(inputs, output, target, workers):
      return losses.hungarian_loss(output, target, num_workers=workers).mean(0)
  elif config == "numbering":
    n, d, classes, width = 64, 64, 4, 256
    enc = dict(d_in=classes, d_hid=width, d_latent=width, set_size=n, pool="fs")
    obj = dict(enc, d_in=classes + d, objective_type="mse_cat_input")
    dspn = dict(learn_init_set=False, set_dim=d, set_size=n, momentum=momentum, lr=1.0,
                iters=steps, grad_clip=40.0 if implicit else None, projection="simplex",
                implicit=implicit)
    sets = data.ClassSpecificNumbering(n_samples=BATCH, set_size=n, set_dim=classes,
                                       n_obj_per_sample=4)
    batch = [sets[i] for i in range(BATCH)]

    def loss_fn(inputs, output, target, workers):
      loss, idx = losses.hungarian_loss_numbering(inputs, output, target, num_workers=workers,
                                                  ret_indices=True, loss_type="l2")
      losses.hungarian_micro_accuracy(output, target, idx).mean(0)
      losses.hungarian_macro_accuracy(output, target, idx).mean(0)
      return loss.mean(0)
  else:
    raise ValueError(config)
  net = models.DSPNBaseModel(input_enc_kwargs=enc, inner_obj_kwargs=obj, dspn_kwargs=dspn)
  inputs = torch.stack([b[0] for b in batch])
  target = torch.stack([b[1] for b in batch])
  return net, inputs, target, loss_fn


def measure_one(config: str, mode: str, model: str, steps: int, *, reference_dir: str,
                repeats: int, warmup: int, threads: int, ray_workers: int) -> dict:
  """Median seconds per step (or per forward, for mode "infer") of one configuration."""
  import numpy as np
  import torch

  torch.set_num_threads(threads)
  torch.manual_seed(0)
  np.random.seed(0)
  ref = import_reference(reference_dir, ray_workers)
  if ray_workers > 0:
    import ray

    ray.init(num_cpus=ray_workers, include_dashboard=False)
  net, inputs, target, loss_fn = build(config, model, steps, ref)
  opt = torch.optim.Adam(net.parameters(), lr=1e-3)

  def train_step():
    output, _ = net(inputs)
    loss = loss_fn(inputs, output, target, ray_workers)
    opt.zero_grad()
    loss.backward()
    opt.step()

  def infer():
    with torch.no_grad():
      net(inputs)

  if mode == "train":
    net.train()
    fn = train_step
  else:
    net.eval()
    fn = infer
  rss_before = peak_rss_mib()
  for _ in range(warmup):
    fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return {
    "config": config, "mode": mode, "model": model, "steps": steps,
    "seconds": statistics.median(times), "min_s": min(times), "max_s": max(times),
    "times": times, "peak_rss_mib": peak_rss_mib(), "rss_before_steps_mib": rss_before,
    "params": sum(p.numel() for p in net.parameters()),
  }


def run_fresh(item, args) -> dict:
  cmd = [sys.executable, os.path.abspath(__file__), "--one", item[0], item[1], item[2],
         str(item[3]), "--reference_dir", args.reference_dir, "--repeats", str(args.repeats),
         "--warmup", str(args.warmup), "--threads", str(args.threads),
         "--ray_workers", str(args.ray_workers)]
  out = subprocess.run(cmd, capture_output=True, text=True, check=False)
  if out.returncode != 0:
    raise RuntimeError(f"{item} failed:\n{out.stderr[-3000:]}")
  return json.loads(out.stdout.strip().splitlines()[-1])


def markdown(results: list[dict]) -> str:
  lines = ["| config | mode | model | inner steps | s/step (median) | min-max | peak RSS (MiB) | "
           "RSS over pre-step (MiB) | quoted s/step | quoted RSS (MB) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
  for r in results:
    quoted = QUOTED.get((r["config"], r["mode"], r["steps"]), {}).get(r["model"], ("", ""))
    lines.append(f"| {r['config']} | {r['mode']} | {r['model']} | {r['steps']} | "
                 f"{r['seconds']:.3f} | {r['min_s']:.3f}-{r['max_s']:.3f} | "
                 f"{r['peak_rss_mib']:.0f} | {r['peak_rss_mib'] - r['rss_before_steps_mib']:.0f} | "
                 f"{quoted[0]} | {quoted[1]} |")
  return "\n".join(lines)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--reference_dir", default="/work/refcode")
  parser.add_argument("--repeats", type=int, default=8)
  parser.add_argument("--warmup", type=int, default=2)
  parser.add_argument("--threads", type=int, default=2)
  parser.add_argument("--ray_workers", type=int, default=0,
                      help="match in a ray pool as exp1's scripts do (needs ray); 0 = serial")
  parser.add_argument("--quick", action="store_true", help="random sets, 20 inner steps only")
  parser.add_argument("--in_process", action="store_true",
                      help="all configurations in this process (peak RSS is then cumulative)")
  parser.add_argument("--one", nargs=4, metavar=("CONFIG", "MODE", "MODEL", "STEPS"),
                      help="one configuration; prints its JSON (used for fresh processes)")
  parser.add_argument("--out", help="also write the JSON here")
  args = parser.parse_args()
  kw = dict(reference_dir=args.reference_dir, repeats=args.repeats, warmup=args.warmup,
            threads=args.threads, ray_workers=args.ray_workers)
  if args.one:
    config, mode, model, steps = args.one
    print(json.dumps(measure_one(config, mode, model, int(steps), **kw)))
    return

  import torch

  items = QUICK if args.quick else FULL
  results = []
  header = {"torch": torch.__version__, "threads": args.threads, "cpu_count": os.cpu_count(),
            "repeats": args.repeats, "warmup": args.warmup, "batch": BATCH,
            "load_before": os.getloadavg()}
  for item in items:
    load = os.getloadavg()
    r = measure_one(*item, **kw) if args.in_process else run_fresh(item, args)
    r["load_before"] = load
    results.append(r)
    print(f"{item}: {r['seconds']:.3f} s/step, peak RSS {r['peak_rss_mib']:.0f} MiB, "
          f"load {load[0]:.2f}", file=sys.stderr, flush=True)
  header["load_after"] = os.getloadavg()
  report = {"machine": header, "results": results}
  if args.out:
    with open(args.out, "w") as f:
      json.dump(report, f, indent=1)
  print(json.dumps(report))
  print(markdown(results))


if __name__ == "__main__":
  main()
