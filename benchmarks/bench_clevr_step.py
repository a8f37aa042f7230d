"""Training-step time of the CLEVR model (`:paper128` / `:paper256` settings) on random images.

  python -m benchmarks.bench_clevr_step [paper128|paper256|small] [inner_steps] [conv_impl] [reps]
      [backward] [key=value ...]
  IDSPN_JAX_HUGE_PAGES=0 python -m benchmarks.bench_clevr_step small 20 auto 60   # without
  # :small's encoder before its stride-1 convolution:
  python -m benchmarks.bench_clevr_step small 20 auto 30 \
      "model.encoder_options.widths=(32,64,128)" "model.encoder_options.strides=(2,2,2)"

``conv_impl`` ("auto", "xla" or "patches") chooses how the image encoder's convolutions are
computed (``experiments.clevr.encoders.Conv``); ``reps`` steps are timed. ``backward`` overrides
the config's inner backward: ``approx``, ``cg``, ``unroll`` (every inner step backpropagated) or
``unroll:K`` (the last K only); default: the config's. Arguments ``key=value`` set the config's
(dotted) key to the Python literal ``value``, wherever they stand. Besides the median step
time it reports, per timed step, the process's minor page faults and its user and kernel CPU
time (``getrusage``), and whether the process runs with transparent huge pages
(``experiments/common/hugepages.py``).

No data is read: the step is timed on a random batch of the configured shape, so this measures
the model (ResNet18 or the small CNN, iDSPN decoder, Hungarian loss, Adam) alone.
"""

from __future__ import annotations

import ast
import functools
import json
import resource
import sys

import jax
import numpy as np

from benchmarks import common
from experiments.clevr import task as clevr
from experiments.common import hugepages, models, train
from experiments.configs import clevr as clevr_config


def apply_overrides(config, overrides: dict) -> None:
  """Sets each dotted key of ``overrides`` in ``config``; an unknown key is an error."""
  for dotted, value in overrides.items():
    *sections, key = dotted.split(".")
    node = config
    for section in sections:
      node = node.get(section) if hasattr(node, "get") else None
    if not hasattr(node, "get") or key not in node:
      raise KeyError(f"the CLEVR config has no key {dotted!r}")
    node[key] = value


def parse_override(text: str) -> tuple[str, object]:
  """``"a.b=(1,2)"`` -> ``("a.b", (1, 2))``; a value that is no Python literal stays a string."""
  key, _, value = text.partition("=")
  try:
    return key, ast.literal_eval(value)
  except (ValueError, SyntaxError):
    return key, value


def run(variant: str = "paper128", inner_steps: int = 40, repeats: int = 5,
        conv_impl: str = "auto", backward: str | None = None,
        overrides: dict | None = None) -> dict:
  config = clevr_config.get_config(variant)
  apply_overrides(config, overrides or {})
  config.model.encoder_options.conv_impl = conv_impl
  if backward is not None:
    mode, _, kept = backward.partition(":")
    config.model.idspn.backward = mode
    config.model.idspn.backprop_steps = int(kept) if kept else None
  size, batch_size = config.data.image_size, config.train.batch_size
  rng = np.random.default_rng(0)
  batch = {
    "image": rng.random((batch_size, size, size, 3), dtype=np.float32),
    "set": rng.random((batch_size, 10, 19), dtype=np.float32),
  }
  task = train.Task(
    name=f"clevr {variant}", model=clevr.create_model(config), loss=clevr.hungarian_loss,
    train_batches=lambda start: iter(lambda: batch, None), eval_batches=lambda split: [batch],
    eval_metrics=lambda preds, batches: {},
  )
  options = clevr.idspn_options(config)
  mesh = train.create_mesh()
  state = train.create_train_state(config, task, mesh)
  placed = train.shard_batch(batch, mesh)
  step = jax.jit(functools.partial(train.train_step, task=task, inner_steps=inner_steps))
  compiled = step.lower(state, placed).compile()
  for _ in range(4):  # The first steps run slower (the allocator and its pages warm up).
    common.block(compiled(state, placed))
  before = resource.getrusage(resource.RUSAGE_SELF)
  seconds = common.median_time(lambda: compiled(state, placed), repeats=repeats, warmup=0)
  after = resource.getrusage(resource.RUSAGE_SELF)
  return {
    "variant": variant, "inner_steps": inner_steps, "conv_impl": conv_impl,
    "backward": models.setting(options, "backward"),
    "backprop_steps": models.setting(options, "backprop_steps"),
    "batch": batch_size, "image_size": size,
    "seconds_per_step": seconds, "images_per_second": batch_size / seconds,
    "page_faults_per_step": (after.ru_minflt - before.ru_minflt) / repeats,
    "user_seconds_per_step": (after.ru_utime - before.ru_utime) / repeats,
    "kernel_seconds_per_step": (after.ru_stime - before.ru_stime) / repeats,
    "overrides": {key: repr(value) for key, value in (overrides or {}).items()},
    "huge_pages": hugepages.status(),
    "device": jax.devices()[0].device_kind,
  }


if __name__ == "__main__":
  args = [a for a in sys.argv[1:] if "=" not in a]
  settings = dict(parse_override(a) for a in sys.argv[1:] if "=" in a)
  print(json.dumps(run(args[0] if args else "paper128", int(args[1]) if len(args) > 1 else 40,
                       conv_impl=args[2] if len(args) > 2 else "auto",
                       repeats=int(args[3]) if len(args) > 3 else 5,
                       backward=args[4] if len(args) > 4 else None, overrides=settings)))
