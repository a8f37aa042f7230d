r"""The same CLEVR scenes drawn by Blender (CLEVR's assets) and by the NumPy renderer, side by side.

  python -m experiments.clevr.compare --root=experiments/clevr/blender_val \
      --out=docs/images/clevr_renderers.png --pictures=6 --count=500

Reads a CLEVR folder rendered by the Blender path (its scene file holds each scene's camera and
lamp locations), draws every scene again with `experiments.clevr.render.shade` under the base
lights (no randomisation), resizes both to the demo's input size, and prints how far apart they
are: the mean absolute difference per pixel and channel (0-255), and the mean colour of the
ground, rubber and metal pixels in each (objects' pixels from the exact ray cast with rounded
edges, one pixel in from their outlines). Writes a picture of the first ``--pictures`` pairs
(Blender left).
"""

from __future__ import annotations

import json
import os

import numpy as np
import PIL.Image
from absl import app, flags, logging

from experiments.clevr import generator, render


def compare(root: str, *, split: str = "val", count: int | None = None, image_size: int = 64,
            pictures: int = 0) -> tuple[dict[str, float], np.ndarray | None]:
  """Draws a Blender-rendered split's scenes with the NumPy renderer and measures the gap.

  Returns:
    The statistics and, if ``pictures`` > 0, a uint8 picture [pictures * S, 2 * S, 3].
  """
  with open(os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json")) as f:
    scenes = json.load(f)["scenes"][:count]
  opts = render.RenderOptions(image_size=image_size, randomize=0.0)
  diffs, rows = [], []
  parts = {"ground": ([], []), "rubber": ([], []), "metal": ([], [])}
  for i, scene in enumerate(scenes):
    with PIL.Image.open(os.path.join(root, "images", split, scene["image_filename"])) as image:
      blender = np.asarray(image.convert("RGB").resize((image_size, image_size),
                                                        PIL.Image.BILINEAR), np.float64)
    numpy_ = render.to_square(render.shade(scene, opts), image_size).astype(np.float64)
    diffs.append(np.abs(blender - numpy_).mean())
    ids, _, _ = generator.cast_grid(generator.scene_camera(scene), scene["objects"],
                                    image_size, image_size, rounded=True)
    core = ids.copy()
    for shift in ((0, 1), (1, 0), (0, -1), (-1, 0)):
      core = np.where(np.roll(ids, shift, (0, 1)) == ids, core, -2)
    for name, mask in [("ground", core == -1)] + [
        (o["material"], core == k) for k, o in enumerate(scene["objects"])]:
      if mask.any():
        parts[name][0].append(blender[mask].mean(axis=0))
        parts[name][1].append(numpy_[mask].mean(axis=0))
    if i < pictures:
      rows.append(np.concatenate([blender, numpy_], axis=1).astype(np.uint8))
  stats = {"scenes": len(scenes), "mean_abs_diff": float(np.mean(diffs))}
  for name, (b, n) in parts.items():
    if b:
      stats[f"{name}_blender"] = [round(float(v), 1) for v in np.mean(b, axis=0)]
      stats[f"{name}_numpy"] = [round(float(v), 1) for v in np.mean(n, axis=0)]
  return stats, (np.concatenate(rows, axis=0) if rows else None)


def _define_flags() -> None:
  flags.DEFINE_string("root", "experiments/clevr/blender_val", "A Blender-rendered CLEVR folder.")
  flags.DEFINE_string("split", "val", "Its split.")
  flags.DEFINE_integer("count", None, "Scenes to measure (default: all).")
  flags.DEFINE_integer("image_size", 64, "Side both are resized to.")
  flags.DEFINE_integer("pictures", 6, "Pairs in the picture.")
  flags.DEFINE_integer("scale", 3, "Upscaling of the picture (nearest neighbour).")
  flags.DEFINE_string("out", None, "The picture's path (none: no picture).")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  stats, picture = compare(f.root, split=f.split, count=f.count, image_size=f.image_size,
                           pictures=f.pictures if f.out else 0)
  print(json.dumps(stats, indent=1))
  if f.out and picture is not None:
    os.makedirs(os.path.dirname(os.path.abspath(f.out)), exist_ok=True)
    image = PIL.Image.fromarray(picture)
    image.resize((image.width * f.scale, image.height * f.scale), PIL.Image.NEAREST).save(f.out)
    logging.info("Wrote %s.", f.out)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
