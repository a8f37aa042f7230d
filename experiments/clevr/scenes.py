"""CLEVR scenes as object sets: the [N, D] encoding of iDSPN's object property prediction.

Every scene becomes a [N, D] object set, N = 10 and D = 19:

  [x/3, y/3, z/3 | rubber, metal | cyan, blue, yellow, purple, red, green, gray, brown |
   sphere, cube, cylinder | large, small | mask]

one row per object (mask 1) and all-zero padding rows, in the paper's one-hot orders.
`scene_to_set` parses a CLEVR scene record (the scene files of CLEVR v1.0 and of the synthetic
renderer), `tfds_objects_to_set` a tensorflow-datasets ``objects`` dict (its class-label orders
mapped onto the paper's), `set_to_objects` decodes a (predicted) set back into object dicts.
The sources that read images and scenes are in `experiments.clevr.data`.
"""

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

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
ERROR_OR_SKIP = ("error", "skip")


class ClevrDataError(ValueError):
  """A CLEVR folder, scene or image that cannot be used."""


class TooManyObjectsError(ClevrDataError):
  """A scene with more objects than the set size."""


class BadImageError(ClevrDataError):
  """An image that is missing or fails to decode."""


def check_choice(name: str, value: str, choices: Sequence[str]) -> None:
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
