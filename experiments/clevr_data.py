"""CLEVR images and object sets for iDSPN's object property prediction (experiment 3).

Every source yields, per scene, an RGB image and a [N, D] object set, N = 10 and D = 19:

  [x/3, y/3, z/3 | rubber, metal | cyan, blue, yellow, purple, red, green, gray, brown |
   sphere, cube, cylinder | large, small | mask]

one row per object (mask 1) and all-zero padding rows, in the paper's one-hot orders. Sources:

- ``ClevrFolderSource``: the raw CLEVR v1.0 folder (``images/<split>/*.png`` and
  ``scenes/CLEVR_<split>_scenes.json``); the synthetic renderer (``clevr_render``) writes the
  same layout.
- ``TfdsClevrSource``: tensorflow-datasets' ``clevr`` builder prepared in array_record format,
  read through ``tfds.data_source`` without TensorFlow; its class-label orders (color gray,
  blue, brown, yellow, red, green, purple, cyan; shape cube, sphere, cylinder; size small,
  large) are mapped onto the paper's.
- ``load_tfds_with_tensorflow``: ``tfds.load`` for tfrecord-prepared data (needs the ``[tf]``
  extra), decoded once into memory.

``ClevrBatches`` turns any source into batches ``{"image": [B, H, W, 3] float32 in [0, 1],
"set": [B, N, D] float32}`` in an order fixed by ``(seed, epoch)``, so ``iterate(start_step)``
resumes exactly where an uninterrupted run would be.
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

import grain
import numpy as np
import PIL.Image
from absl import logging

# The paper's one-hot orders.
MATERIALS = ("rubber", "metal")
COLORS = ("cyan", "blue", "yellow", "purple", "red", "green", "gray", "brown")
SHAPES = ("sphere", "cube", "cylinder")
SIZES = ("large", "small")
SET_SIZE = 10
OBJECT_DIM = 3 + len(MATERIALS) + len(COLORS) + len(SHAPES) + len(SIZES) + 1  # 19
COORDS = slice(0, 3)
MATERIAL = slice(3, 5)
COLOR = slice(5, 13)
SHAPE = slice(13, 16)
SIZE = slice(16, 18)
MASK = 18
COORD_SCALE = 3.0

# tensorflow-datasets' clevr ClassLabel orders (checked against tfds.builder("clevr").info).
TFDS_LABELS = {
  "material": ("rubber", "metal"),
  "color": ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan"),
  "shape": ("cube", "sphere", "cylinder"),
  "size": ("small", "large"),
}
_PAPER_LABELS = {"material": MATERIALS, "color": COLORS, "shape": SHAPES, "size": SIZES}
# TFDS_TO_PAPER[attr][tfds_id] is the paper's index of that label.
TFDS_TO_PAPER = {
  attr: np.array([_PAPER_LABELS[attr].index(name) for name in names])
  for attr, names in TFDS_LABELS.items()
}
_ERROR_OR_SKIP = ("error", "skip")


class ClevrDataError(ValueError):
  """A CLEVR folder, scene or image that cannot be used."""


class TooManyObjectsError(ClevrDataError):
  """A scene with more objects than the set size."""


class BadImageError(ClevrDataError):
  """An image that is missing or fails to decode."""


def _check_choice(name: str, value: str, choices: Sequence[str]) -> None:
  if value not in choices:
    raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def encode_objects(coords: np.ndarray, material: np.ndarray, color: np.ndarray,
                   shape: np.ndarray, size: np.ndarray, *, set_size: int = SET_SIZE) -> np.ndarray:
  """Builds the padded object set from per-object coordinates and paper-order label indices.

  Args:
    coords: 3D coordinates of shape [K, 3].
    material: Material indices into ``MATERIALS``, shape [K].
    color: Color indices into ``COLORS``, shape [K].
    shape: Shape indices into ``SHAPES``, shape [K].
    size: Size indices into ``SIZES``, shape [K].
    set_size: N, the number of rows.

  Returns:
    The float32 set of shape [N, D].

  Raises:
    TooManyObjectsError: if K > N.
  """
  k = len(coords)
  if k > set_size:
    raise TooManyObjectsError(f"scene has {k} objects, more than the set size {set_size}")
  out = np.zeros((set_size, OBJECT_DIM), np.float32)
  rows = np.arange(k)
  out[:k, COORDS] = np.asarray(coords, np.float32).reshape(k, 3) / COORD_SCALE
  for part, index in ((MATERIAL, material), (COLOR, color), (SHAPE, shape), (SIZE, size)):
    out[rows, part.start + np.asarray(index, np.int64)] = 1.0
  out[:k, MASK] = 1.0
  return out


def scene_to_set(scene: Mapping[str, Any], *, set_size: int = SET_SIZE) -> np.ndarray:
  """Converts one CLEVR scene record to its padded object set.

  Args:
    scene: A scene of a CLEVR scene file, with ``objects``, each having ``3d_coords``,
      ``material``, ``color``, ``shape`` and ``size``.
    set_size: N, the number of rows.

  Returns:
    The float32 set of shape [N, D]; coordinates are divided by 3.

  Raises:
    ClevrDataError: for a missing field or an unknown attribute value.
    TooManyObjectsError: for more than N objects.
  """
  where = f"scene {scene.get('image_filename', scene.get('image_index', '?'))}"
  if "objects" not in scene:
    raise ClevrDataError(f"{where} has no 'objects' field")
  objects = scene["objects"]
  labels = {attr: [] for attr in _PAPER_LABELS}
  coords = []
  for i, obj in enumerate(objects):
    for attr, names in _PAPER_LABELS.items():
      if attr not in obj:
        raise ClevrDataError(f"{where}, object {i} has no {attr!r} field")
      if obj[attr] not in names:
        raise ClevrDataError(
          f"{where}, object {i} has unknown {attr} {obj[attr]!r}; known: {', '.join(names)}")
      labels[attr].append(names.index(obj[attr]))
    xyz = np.asarray(obj.get("3d_coords", ()), np.float64)
    if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
      raise ClevrDataError(f"{where}, object {i} needs finite 3d_coords [x, y, z], got "
                           f"{obj.get('3d_coords')!r}")
    coords.append(xyz)
  try:
    return encode_objects(np.reshape(coords, (-1, 3)), set_size=set_size, **labels)
  except TooManyObjectsError as e:
    raise TooManyObjectsError(f"{where}: {e}") from None


def set_to_objects(objects_set: np.ndarray, *, threshold: float = 0.5) -> list[dict]:
  """Decodes a (predicted) [N, D] set into CLEVR-style object dicts, rows with mask > threshold."""
  out = []
  for row in np.asarray(objects_set):
    if row[MASK] <= threshold:
      continue
    out.append({
      "3d_coords": [float(v) * COORD_SCALE for v in row[COORDS]],
      "material": MATERIALS[int(np.argmax(row[MATERIAL]))],
      "color": COLORS[int(np.argmax(row[COLOR]))],
      "shape": SHAPES[int(np.argmax(row[SHAPE]))],
      "size": SIZES[int(np.argmax(row[SIZE]))],
      "mask": float(row[MASK]),
    })
  return out


def to_rgb(image: np.ndarray | PIL.Image.Image, *, image_size: int) -> np.ndarray:
  """Converts an image (gray, RGB or RGBA) to uint8 RGB of shape [S, S, 3], resized bilinearly."""
  if not isinstance(image, PIL.Image.Image):
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    image = PIL.Image.fromarray(image)
  image = image.convert("RGB")
  if image.size != (image_size, image_size):
    image = image.resize((image_size, image_size), PIL.Image.BILINEAR)
  return np.asarray(image, np.uint8)


class ClevrSource(Protocol):
  """What ``ClevrBatches`` reads: random access to (image, set) pairs."""

  def __len__(self) -> int: ...

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns the uint8 [S, S, 3] image and float32 [N, D] set of example ``index``.

    Raises BadImageError when the image is missing or does not decode.
    """
    ...


class ClevrFolderSource:
  """A raw CLEVR v1.0 split: ``<root>/images/<split>/`` and ``<root>/scenes/CLEVR_<split>_scenes.json``.

  All scenes are parsed and checked when the source is made, so an unknown attribute or an
  oversized scene fails before training starts; images are decoded on ``load``.

  Attributes:
    skipped_scenes: Scenes left out because they had more objects than the set size.
  """

  def __init__(self, root: str, split: str, *, set_size: int = SET_SIZE,
               on_too_many_objects: str = "error"):
    _check_choice("on_too_many_objects", on_too_many_objects, _ERROR_OR_SKIP)
    if not os.path.isdir(root):
      raise ClevrDataError(f"CLEVR folder {root!r} does not exist")
    scenes_file = os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json")
    self.image_dir = os.path.join(root, "images", split)
    if not os.path.isdir(self.image_dir):
      have = sorted(os.listdir(os.path.join(root, "images"))) if os.path.isdir(
        os.path.join(root, "images")) else []
      raise ClevrDataError(
        f"split {split!r} has no image folder {self.image_dir!r} (splits with images: {have})")
    if not os.path.isfile(scenes_file):
      raise ClevrDataError(f"split {split!r} has no scene file {scenes_file!r}")
    try:
      with open(scenes_file) as f:
        data = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
      raise ClevrDataError(f"cannot read scene file {scenes_file!r}: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("scenes"), list):
      raise ClevrDataError(f"{scenes_file!r} has no top-level 'scenes' list")
    self.split = split
    self.info = data.get("info", {})
    self.scenes, sets = [], []
    self.skipped_scenes = 0
    for i, scene in enumerate(data["scenes"]):
      if "image_filename" not in scene:
        raise ClevrDataError(f"scene {i} of {scenes_file!r} has no 'image_filename'")
      try:
        sets.append(scene_to_set(scene, set_size=set_size))
      except TooManyObjectsError as e:
        if on_too_many_objects == "error":
          raise TooManyObjectsError(
            f"{e} (in {scenes_file!r}; pass on_too_many_objects='skip' to leave such scenes "
            "out)") from None
        self.skipped_scenes += 1
        continue
      self.scenes.append(scene)
    if self.skipped_scenes:
      logging.warning("CLEVR %s: skipped %d scenes with more than %d objects.", split,
                      self.skipped_scenes, set_size)
    if not self.scenes:
      raise ClevrDataError(f"{scenes_file!r} contains no usable scenes")
    self.sets = np.stack(sets)  # [num_scenes, N, D]

  def __len__(self) -> int:
    return len(self.scenes)

  def image_path(self, index: int) -> str:
    return os.path.join(self.image_dir, self.scenes[index]["image_filename"])

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    path = self.image_path(index)
    try:
      with open(path, "rb") as f:
        data = f.read()
      with PIL.Image.open(io.BytesIO(data)) as image:
        image.load()
        pixels = to_rgb(image, image_size=image_size)
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
      raise BadImageError(f"image {path!r} cannot be read or decoded: {e}") from e
    return pixels, self.sets[index]


class TfdsClevrSource:
  """The tfds ``clevr`` builder's split, prepared in array_record format, without TensorFlow.

  Attributes:
    skipped_scenes: Always 0 (oversized scenes are found on ``load``, see ``ClevrBatches``).
  """

  def __init__(self, split: str, *, data_dir: str | None, set_size: int = SET_SIZE,
               name: str = "clevr"):
    import tensorflow_datasets as tfds  # Heavy import, only for this source.

    if data_dir is not None and not os.path.isdir(data_dir):
      raise ClevrDataError(f"TFDS data_dir {data_dir!r} does not exist")
    try:
      self._source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # tfds raises several types for "not prepared" and bad splits.
      raise ClevrDataError(
        f"cannot open TFDS {name!r} split {split!r} in data_dir {data_dir!r} as a data source "
        f"(it must be prepared in array_record format, e.g. `tfds build clevr "
        f"--file_format=array_record --data_dir=...`): {type(e).__name__}: {e}") from e
    self.split = split
    self.set_size = set_size
    self.skipped_scenes = 0

  def __len__(self) -> int:
    return len(self._source)

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
      example = self._source[index]
    except Exception as e:  # The image decodes inside tfds: any failure is a bad example.
      raise BadImageError(f"TFDS clevr {self.split}[{index}] cannot be decoded: {e}") from e
    return to_rgb(example["image"], image_size=image_size), tfds_objects_to_set(
      example["objects"], set_size=self.set_size, where=f"TFDS clevr {self.split}[{index}]")


def tfds_objects_to_set(objects: Mapping[str, np.ndarray], *, set_size: int = SET_SIZE,
                        where: str = "TFDS example") -> np.ndarray:
  """Maps a tfds clevr ``objects`` dict (ClassLabel ints in TFDS order) to the [N, D] set."""
  coords = np.asarray(objects["3d_coords"], np.float64).reshape(-1, 3)
  labels = {}
  for attr, table in TFDS_TO_PAPER.items():
    ids = np.asarray(objects[attr], np.int64).reshape(-1)
    if len(ids) != len(coords):
      raise ClevrDataError(f"{where}: {len(ids)} {attr} labels for {len(coords)} objects")
    if ids.size and (ids.min() < 0 or ids.max() >= len(table)):
      raise ClevrDataError(f"{where}: {attr} label out of range [0, {len(table)}): {ids}")
    labels[attr] = table[ids]
  try:
    return encode_objects(coords, set_size=set_size, **labels)
  except TooManyObjectsError as e:
    raise TooManyObjectsError(f"{where}: {e}") from None


class ArraySource:
  """Images and sets already in memory: uint8 [M, S, S, 3] and float32 [M, N, D]."""

  def __init__(self, images: np.ndarray, sets: np.ndarray):
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
      raise ValueError(f"images must have shape [M, S, S, 3], got {images.shape}")
    if len(images) != len(sets):
      raise ValueError(f"{len(images)} images but {len(sets)} sets")
    self.images, self.sets = images, sets
    self.skipped_scenes = 0

  def __len__(self) -> int:
    return len(self.images)

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    image = self.images[index]
    if image.shape[0] != image_size:
      image = to_rgb(image, image_size=image_size)
    return image, self.sets[index]


def load_tfds_with_tensorflow(split: str, *, data_dir: str | None, image_size: int,
                              set_size: int = SET_SIZE) -> ArraySource:
  """Reads a tfrecord-prepared tfds ``clevr`` split with ``tfds.load`` into memory.

  Needs TensorFlow (``pip install 'idspn_jax[tf]'``). Every image is resized once to
  ``image_size``; at 128 px the 70,000 training images take 3.4 GB.
  """
  try:
    import tensorflow  # noqa: F401
  except ImportError as e:
    raise ClevrDataError(
      "reading tfrecord-prepared TFDS data needs TensorFlow: install the [tf] extra "
      "(pip install 'idspn_jax[tf]'), or prepare clevr in array_record format and use "
      "source='tfds'") from e
  import tensorflow_datasets as tfds

  dataset = tfds.load("clevr", split=split, data_dir=data_dir, download=False)
  images, sets = [], []
  for i, example in enumerate(tfds.as_numpy(dataset)):
    images.append(to_rgb(example["image"], image_size=image_size))
    sets.append(tfds_objects_to_set(example["objects"], set_size=set_size,
                                    where=f"TFDS clevr {split}[{i}]"))
  return ArraySource(np.stack(images), np.stack(sets))
