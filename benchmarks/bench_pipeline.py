"""The CLEVR input pipeline's images/s against the model's, at the CPU config (`clevr.py:small`).

  python -m benchmarks.bench_pipeline [--quick]

The pipeline streams PNGs (decode + resize on grain threads, no cache) from a small synthetic
folder rendered into a temporary directory; the model figure is a full training step
(`benchmarks.bench_clevr_step`) at the same batch and image size.
"""

from __future__ import annotations

import sys
import tempfile
import time

from benchmarks import bench_clevr_step
from experiments.clevr import data as clevr_data
from experiments.clevr import render as clevr_render
from experiments.configs import clevr as clevr_config


def run(quick: bool = False) -> dict:
  config = clevr_config.get_config("small")
  size, batch = config.data.image_size, config.train.batch_size
  n_images = 4 * batch if quick else 16 * batch
  with tempfile.TemporaryDirectory() as root:
    clevr_render.render_dataset(root, splits={"train": n_images}, image_size=size, seed=0,
                                num_workers=0)
    source = clevr_data.create_clevr_source("folder", split="train", root=root,
                                            image_size=size)
    batches = clevr_data.ClevrBatches(
      source, batch_size=batch, image_size=size, shuffle=True, seed=0, cache=False,
      num_threads=config.data.num_threads, prefetch=config.data.prefetch,
    )
    iterator = batches.iterate(0)
    next(iterator)  # start the threads
    steps = n_images // batch - 1
    start = time.perf_counter()
    for _ in range(steps):
      next(iterator)
    pipeline = steps * batch / (time.perf_counter() - start)
  model = bench_clevr_step.run("small", config.model.idspn.steps, repeats=3 if quick else 20)
  return {
    "image_size": size, "batch": batch, "pipeline_images_per_second": pipeline,
    "model_images_per_second": model["images_per_second"],
    "pipeline_threads": config.data.num_threads,
  }


def markdown(result: dict) -> str:
  ratio = result["pipeline_images_per_second"] / result["model_images_per_second"]
  return (f"At {result['image_size']} px, batch {result['batch']}: the pipeline streams "
          f"{result['pipeline_images_per_second']:.0f} images/s from PNG "
          f"({result['pipeline_threads']} threads, no cache); a training step consumes "
          f"{result['model_images_per_second']:.0f} images/s ({ratio:.1f}x headroom).")


if __name__ == "__main__":
  print(markdown(run(quick="--quick" in sys.argv)))
