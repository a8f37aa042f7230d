"""The attribute probe: patches at the recorded pixel positions, and a classifier that learns."""

import json
import os

import numpy as np
import PIL.Image
import pytest

from experiments.clevr import data as cd
from experiments.clevr import probe as cp
from experiments.clevr import render as cr
from experiments.clevr import scenes as cs


def _write_folder(root, objects, *, size=16, marks=()):
  """A one-image CLEVR folder (train and val the same): grey, with coloured pixels at marks."""
  image = np.full((size, size, 3), 128, np.uint8)
  for (x, y), rgb in marks:
    image[y, x] = rgb
  for split in ("train", "val"):
    os.makedirs(os.path.join(root, "images", split), exist_ok=True)
    PIL.Image.fromarray(image).save(os.path.join(root, "images", split, "a.png"))
  os.makedirs(os.path.join(root, "scenes"), exist_ok=True)
  for split in ("train", "val"):
    with open(os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json"), "w") as f:
      json.dump({"scenes": [{"image_filename": "a.png", "objects": objects}]}, f)
  return root


def _object(color, shape, xy):
  obj = {"color": color, "shape": shape, "size": "small", "material": "metal",
         "3d_coords": [0.0, 0.0, 0.35]}
  if xy is not None:
    obj["pixel_coords"] = [*xy, 10.0]
  return obj


def test_patches_are_centred_on_the_recorded_positions_at_any_image_size(tmp_path):
  red, green = (255, 0, 0), (0, 255, 0)
  objects = [_object("red", "cube", (5.5, 9.5)), _object("green", "sphere", (0.2, 15.8))]
  root = _write_folder(str(tmp_path / "f"), objects, marks=[((5, 9), red), ((0, 15), green)])
  source = cd.ClevrFolderSource(root, "train")
  patches, labels = cp.object_patches(source, image_size=16, crop=3)
  assert patches.shape == (2, 3, 3, 3) and patches.dtype == np.float32
  np.testing.assert_allclose(patches[0, 1, 1], [1, 0, 0])
  np.testing.assert_allclose(patches[1, 1, 1], [0, 1, 0])
  # The second object sits in the bottom-left corner: the edge padding repeats its pixel.
  np.testing.assert_allclose(patches[1, 2, 0], [0, 1, 0])
  # Paper-order labels: material, colour, shape, size.
  np.testing.assert_array_equal(labels, [
    [cs.MATERIALS.index("metal"), cs.COLORS.index("red"), cs.SHAPES.index("cube"),
     cs.SIZES.index("small")],
    [cs.MATERIALS.index("metal"), cs.COLORS.index("green"), cs.SHAPES.index("sphere"),
     cs.SIZES.index("small")],
  ])
  # At twice the stored size the positions are rescaled with the image.
  patches, _ = cp.object_patches(source, image_size=32, crop=4)
  centre = patches[0, 2, 2]
  assert centre[0] - centre[1] > 0.3, centre


def test_an_object_without_pixel_coords_is_a_clear_error(tmp_path):
  root = _write_folder(str(tmp_path / "f"), [_object("red", "cube", None)])
  with pytest.raises(cs.ClevrDataError, match="object 0: no finite pixel_coords"):
    cp.object_patches(cd.ClevrFolderSource(root, "train"), image_size=16, crop=3)
  with pytest.raises(ValueError, match="crop must be a positive"):
    cp.object_patches(cd.ClevrFolderSource(root, "train"), image_size=16, crop=0)


def test_accuracies_count_each_attribute_and_all_four():
  labels = np.array([[0, 1, 2, 1], [1, 7, 0, 0]])
  predicted = np.array([[0, 1, 2, 1], [1, 6, 0, 0]])
  acc = cp.accuracies(predicted, labels)
  assert acc == {"material": 100.0, "color": 50.0, "shape": 100.0, "size": 100.0, "all": 50.0}


def test_the_probe_reads_colours_of_rendered_scenes(tmp_path):
  """With patches at the right objects, colour is learned from 60 scenes (chance: 12.5%)."""
  root = str(tmp_path / "synth")
  cr.render_dataset(root, splits={"train": 60, "val": 30}, image_size=64, seed=1, num_workers=0)
  rows = []
  result = cp.probe(root, image_size=64, crop=12, steps=200, batch_size=64, eval_every=100,
                    log=rows.append)
  assert result["train_objects"] > 150 and result["val_objects"] > 75
  assert [r["step"] for r in result["history"]] == [100, 200] and rows == result["history"]
  last = result["history"][-1]
  assert last["color"] > 75 and last["size"] > 80, last
  assert last["all"] <= min(last[k] for k in cp.ATTRIBUTES)
