"""CLEVR data: scene encoding, the raw folder loader, the synthetic renderer, TFDS, batches."""

import json
import os
import shutil

import numpy as np
import pytest

from experiments.clevr import data as cd
from experiments.clevr import render as cr
from experiments.clevr import scenes as cs

pytestmark = pytest.mark.filterwarnings("ignore:.*OpenCV.*")

SPLITS = {"train": 10, "val": 4}


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> str:
  """A small synthetic CLEVR folder (32 px, rendered in this process)."""
  root = str(tmp_path_factory.mktemp("clevr") / "synth")
  assert cr.render_dataset(root, splits=SPLITS, image_size=32, seed=3, num_workers=0) == SPLITS
  return root


def _copy(folder: str, tmp_path) -> str:
  root = str(tmp_path / "copy")
  shutil.copytree(folder, root)
  return root


def _scene(*objects) -> dict:
  return {"image_index": 0, "image_filename": "x.png", "objects": [
    {"3d_coords": [3.0 * i, -1.5, 0.7], "material": m, "color": c, "shape": s, "size": z}
    for i, (m, c, s, z) in enumerate(objects)]}


def test_scene_to_set_uses_the_paper_order():
  y = cs.scene_to_set(_scene(("metal", "brown", "cylinder", "small"),
                             ("rubber", "cyan", "sphere", "large")))
  assert y.shape == (10, 19) and y.dtype == np.float32
  np.testing.assert_allclose(y[0, :3], [0.0, -0.5, 0.7 / 3], rtol=1e-6)
  assert np.flatnonzero(y[0, 3:]).tolist() == [1, 2 + 7, 10 + 2, 13 + 1, 15]
  assert np.flatnonzero(y[1, 3:]).tolist() == [0, 2 + 0, 10 + 0, 13 + 0, 15]
  assert not y[2:].any()
  objects = cs.set_to_objects(y)
  assert [(o["material"], o["color"], o["shape"], o["size"]) for o in objects] == [
    ("metal", "brown", "cylinder", "small"), ("rubber", "cyan", "sphere", "large")]


@pytest.mark.parametrize("attr,value", [("color", "pink"), ("shape", "cone"),
                                        ("material", "glass"), ("size", "huge")])
def test_scene_to_set_rejects_unknown_values(attr, value):
  scene = _scene(("rubber", "red", "cube", "large"))
  scene["objects"][0][attr] = value
  with pytest.raises(cs.ClevrDataError, match=f"unknown {attr} '{value}'"):
    cs.scene_to_set(scene)


def test_too_many_objects(folder, tmp_path):
  with pytest.raises(cs.TooManyObjectsError, match="11 objects, more than the set size 10"):
    cs.scene_to_set(_scene(*[("rubber", "red", "cube", "large")] * 11))
  root = _copy(folder, tmp_path)
  path = os.path.join(root, "scenes", "CLEVR_val_scenes.json")
  with open(path) as f:
    data = json.load(f)
  data["scenes"][1]["objects"] *= 11
  with open(path, "w") as f:
    json.dump(data, f)
  with pytest.raises(cs.TooManyObjectsError, match="on_too_many_objects='skip'"):
    cd.ClevrFolderSource(root, "val")
  source = cd.ClevrFolderSource(root, "val", on_too_many_objects="skip")
  assert len(source) == SPLITS["val"] - 1 and source.skipped_scenes == 1
  assert cd.ClevrBatches(source, batch_size=1, image_size=32).stats["skipped_scenes"] == 1


def test_missing_folder_split_and_scene_file(folder, tmp_path):
  with pytest.raises(cs.ClevrDataError, match="does not exist"):
    cd.ClevrFolderSource(str(tmp_path / "nowhere"), "train")
  with pytest.raises(cs.ClevrDataError, match="split 'test' has no image folder"):
    cd.ClevrFolderSource(folder, "test")
  root = _copy(folder, tmp_path)
  os.remove(os.path.join(root, "scenes", "CLEVR_val_scenes.json"))
  with pytest.raises(cs.ClevrDataError, match="no scene file"):
    cd.ClevrFolderSource(root, "val")
  with pytest.raises(ValueError, match="source must be one of"):
    cd.create_clevr_source("imagenet", split="train", root=folder)


def test_renderer_round_trips_through_the_loader(folder):
  with open(os.path.join(folder, "scenes", "CLEVR_train_scenes.json")) as f:
    data = json.load(f)
  assert data["info"]["generator"] == cr.GENERATOR_NAME
  source = cd.create_clevr_source("synthetic", split="train", root=folder)
  assert len(source) == SPLITS["train"]
  for i, scene in enumerate(data["scenes"]):
    assert scene["image_filename"] == f"CLEVR_train_{i:06d}.png"
    assert 3 <= len(scene["objects"]) <= 10
    image, y = source.load(i, image_size=32)
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8 and image.std() > 5
    decoded = cs.set_to_objects(y)
    assert len(decoded) == len(scene["objects"]) and y[len(decoded):].sum() == 0
    for got, want in zip(decoded, scene["objects"], strict=True):
      for attr in ("material", "color", "shape", "size"):
        assert got[attr] == want[attr]
      np.testing.assert_allclose(got["3d_coords"], want["3d_coords"], rtol=1e-5, atol=1e-5)
      x, y_px, depth = want["pixel_coords"]
      assert -8 < x < 40 and -8 < y_px < 40 and depth > 0  # Centres may leave the frame.
      half = cr.SIZES[want["size"]] / (2**0.5 if want["shape"] == "cube" else 1)
      assert want["3d_coords"][2] == pytest.approx(half, abs=1e-5)


def test_rendered_colours_are_readable_on_both_materials():
  """The centre of every object shows its CLEVR colour: the nearest palette chromaticity of the
  3x3 pixels around the projected centre names it, for rubber and for metal (whose reflections
  are tinted by its colour), under the randomised lights. The palette is CLEVR's colours as
  Blender shows them: the sRGB values / 255 taken as linear albedo, lit, then sRGB-encoded
  (the raw values' chromaticities named only 68% of rubber colours)."""
  opts = cr.RenderOptions(image_size=64, min_objects=1, max_objects=1)
  palette = {c: cr.srgb(np.array(v, float) / 255 * 0.35) + 1e-3
             for c, v in cr.COLORS_RGB.items()}
  right = {"rubber": [], "metal": []}
  for seed in range(200):
    image, (obj,), _ = cr.render_scene(np.random.default_rng(seed), opts)
    x, y = (int(round(v)) for v in obj["pixel_coords"][:2])
    patch = image[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].reshape(-1, 3) / 255  # [<=9, 3]
    seen = np.median(patch, axis=0) + 1e-3  # [3]
    guess = min(palette, key=lambda c: np.sum((seen / seen.sum()
                                               - palette[c] / palette[c].sum()) ** 2))
    right[obj["material"]].append(guess == obj["color"])
  for material, hits in right.items():
    assert len(hits) > 60 and np.mean(hits) >= 0.97, (material, np.mean(hits))


def test_render_is_deterministic_skips_complete_and_redoes_incomplete(folder, tmp_path):
  root = str(tmp_path / "again")
  cr.render_dataset(root, splits={"val": 4}, image_size=32, seed=3, num_workers=0)
  for name in sorted(os.listdir(os.path.join(root, "images", "val"))):
    if name.endswith(".png"):
      with open(os.path.join(root, "images", "val", name), "rb") as a, open(
          os.path.join(folder, "images", "val", name), "rb") as b:
        assert a.read() == b.read()
  assert cr.render_dataset(root, splits={"val": 4}, image_size=32, seed=3) == {"val": 0}
  with pytest.raises(FileExistsError, match="other settings"):
    cr.render_dataset(root, splits={"val": 5}, image_size=32, seed=3)
  # A killed render leaves no scene file: the split is rendered again.
  os.remove(os.path.join(root, "scenes", "CLEVR_val_scenes.json"))
  assert cr.render_dataset(root, splits={"val": 4}, image_size=32, seed=3,
                           num_workers=0) == {"val": 4}


def test_batches_are_deterministic_and_resumable(folder):
  source = cd.ClevrFolderSource(folder, "train")
  batches = cd.ClevrBatches(source, batch_size=3, image_size=16, seed=5, num_threads=2)
  assert batches.steps_per_epoch == 3
  run = list(batches.iterate(0, num_steps=7))
  assert run[0]["image"].shape == (3, 16, 16, 3) and run[0]["set"].shape == (3, 10, 19)
  assert run[0]["image"].dtype == np.float32 and 0 <= run[0]["image"].min() <= 1
  resumed = list(batches.iterate(4, num_steps=3))
  for a, b in zip(run[4:], resumed, strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["set"], b["set"])
  assert not np.array_equal(batches.batch_indices(0), batches.batch_indices(3))
  cached = cd.ClevrBatches(source, batch_size=3, image_size=16, seed=5, cache=True,
                           num_threads=0)
  for a, b in zip(run, cached.iterate(0, num_steps=7), strict=True):
    np.testing.assert_array_equal(a["image"], b["image"])
  # An evaluation pass: the source order, every example once, a smaller last batch.
  evaluation = cd.ClevrBatches(source, batch_size=4, image_size=16, shuffle=False,
                               drop_remainder=False)
  sets = np.concatenate([b["set"] for b in evaluation.epoch(0)])
  np.testing.assert_array_equal(sets, source.sets)


def test_undecodable_image(folder, tmp_path):
  root = _copy(folder, tmp_path)
  bad = os.path.join(root, "images", "val", "CLEVR_val_000002.png")
  with open(bad, "wb") as f:
    f.write(b"not a png")
  source = cd.ClevrFolderSource(root, "val")
  strict = cd.ClevrBatches(source, batch_size=4, image_size=16, shuffle=False)
  with pytest.raises(cs.BadImageError, match="CLEVR_val_000002.png.*on_bad_image='skip'"):
    next(strict.iterate(0))
  with pytest.raises(cs.BadImageError, match="CLEVR_val_000002.png"):
    cd.ClevrBatches(source, batch_size=4, image_size=16, cache=True)
  lenient = cd.ClevrBatches(source, batch_size=4, image_size=16, shuffle=False,
                            on_bad_image="skip")
  batch = next(lenient.iterate(0))
  assert batch["image"].shape[0] == 4 and lenient.stats["bad_images"] == 1
  np.testing.assert_array_equal(batch["set"][2], source.sets[3])  # Replaced by the next one.
  cached = cd.ClevrBatches(source, batch_size=3, image_size=16, cache=True, on_bad_image="skip")
  assert cached.num_examples == 3 and cached.stats["bad_images"] == 1


def test_tfds_label_orders_match_the_builder():
  import tensorflow_datasets as tfds

  objects = tfds.builder("clevr").info.features["objects"]
  for attr, names in cs.TFDS_LABELS.items():
    assert tuple(objects[attr].names) == names
  for attr, table in cs.TFDS_TO_PAPER.items():
    paper = {"color": cs.COLORS, "material": cs.MATERIALS, "shape": cs.SHAPES,
             "size": cs.SIZES}[attr]
    assert [paper[j] for j in table] == list(names := cs.TFDS_LABELS[attr]), names


def test_tfds_source_on_mock_data():
  import tensorflow_datasets as tfds

  rng = np.random.default_rng(0)
  examples, wanted = [], []
  for k in (3, 10, 5):
    ids = {attr: rng.integers(len(names), size=k) for attr, names in cs.TFDS_LABELS.items()}
    coords = rng.uniform(-3, 3, size=(k, 3)).astype(np.float32)
    examples.append({
      "image": rng.integers(0, 256, size=(24, 36, 3), dtype=np.uint8),
      "file_name": f"CLEVR_train_{len(examples):06d}.png",
      "objects": {**ids, "3d_coords": coords, "pixel_coords": coords,
                  "rotation": np.zeros(k, np.float32)},
    })
    wanted.append(cs.scene_to_set({"objects": [
      {"3d_coords": coords[i], **{a: cs.TFDS_LABELS[a][ids[a][i]] for a in ids}}
      for i in range(k)]}))
  with tfds.testing.mock_data(as_data_source_fn=lambda *args, **kwargs: examples):
    source = cd.create_clevr_source("tfds", split="train")
    assert len(source) == 3
    for i, want in enumerate(wanted):
      image, y = source.load(i, image_size=16)
      assert image.shape == (16, 16, 3)
      np.testing.assert_allclose(y, want, rtol=1e-6)
    batch = next(cd.ClevrBatches(source, batch_size=2, image_size=16).iterate(0))
    assert batch["set"].shape == (2, 10, 19)


def test_tfds_source_on_a_prepared_array_record_dataset(folder, tmp_path):
  data_dir = str(tmp_path / "tfds")
  cd.prepare_tfds_from_folder(folder, data_dir, splits=("val",))
  source = cd.create_clevr_source("tfds", split="val", data_dir=data_dir)
  raw = cd.ClevrFolderSource(folder, "val")
  names = [scene["image_filename"] for scene in raw.scenes]
  assert len(source) == len(raw)
  for i in range(len(source)):
    j = names.index(source.file_name(i))  # TFDS stores the examples in its own order.
    got, want = source.load(i, image_size=32), raw.load(j, image_size=32)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_allclose(got[1], want[1], rtol=1e-6)
  with pytest.raises(cs.ClevrDataError, match="cannot open TFDS"):
    cd.create_clevr_source("tfds", split="train", data_dir=data_dir)
  with pytest.raises(cs.ClevrDataError, match="does not exist"):
    cd.create_clevr_source("tfds", split="val", data_dir=str(tmp_path / "nowhere"))


def test_tfds_load_needs_tensorflow():
  try:
    import tensorflow  # noqa: F401
  except ImportError:
    with pytest.raises(cs.ClevrDataError, match=r"\[tf\] extra"):
      cd.create_clevr_source("tfds_tf", split="val", data_dir="/nonexistent")
  else:
    pytest.skip("TensorFlow is installed")


def test_mixed_source_repeats_each_source_in_order():
  rng = np.random.default_rng(0)
  a = cd.ArraySource(rng.integers(0, 255, (3, 4, 4, 3), dtype=np.uint8),
                     rng.random((3, 10, 19), dtype=np.float32))
  b = cd.ArraySource(rng.integers(0, 255, (2, 4, 4, 3), dtype=np.uint8),
                     rng.random((2, 10, 19), dtype=np.float32))
  mixed = cd.MixedSource([a, b], [1, 3])
  assert len(mixed) == 3 + 2 * 3
  expected = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 0), (1, 1), (1, 0), (1, 1)]
  assert [mixed.locate(i) for i in range(len(mixed))] == expected
  for i, (source, local) in enumerate(expected):
    image, objects = mixed.load(i, image_size=4)
    np.testing.assert_array_equal(image, (a, b)[source].images[local])
    np.testing.assert_array_equal(objects, (a, b)[source].sets[local])
  with pytest.raises(IndexError, match="example 9 of a mixed source of 9"):
    mixed.load(9, image_size=4)
  for repeats, message in (([1], "2 sources but 1 repeats"), ([1, 0], "repeat of source 1"),
                           ([1, 1.5], "repeat of source 1"), ([True, 1], "repeat of source 0")):
    with pytest.raises(ValueError, match=message):
      cd.MixedSource([a, b], repeats)
  with pytest.raises(ValueError, match="at least one source"):
    cd.MixedSource([])
