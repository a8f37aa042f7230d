"""CLEVR images and object sets for iDSPN's object property prediction (experiment 3).

Every source yields, per scene, an RGB image and the [N, D] object set of
`experiments.clevr.scenes` (N = 10 objects of D = 19 features). Sources:

- ``ClevrFolderSource``: the raw CLEVR v1.0 folder (``images/<split>/*.png`` and
  ``scenes/CLEVR_<split>_scenes.json``); the synthetic renderer (`experiments.clevr.render`)
  writes the same layout.
- ``TfdsClevrSource``: tensorflow-datasets' ``clevr`` builder prepared in array_record format,
  read through ``tfds.data_source`` without TensorFlow; its class-label orders (color gray,
  blue, brown, yellow, red, green, purple, cyan; shape cube, sphere, cylinder; size small,
  large) are mapped onto the paper's.
- ``load_tfds_with_tensorflow``: ``tfds.load`` for tfrecord-prepared data (needs the ``[tf]``
  extra), decoded once into memory.

``ClevrBatches`` turns any source into batches ``{"image": [B, H, W, 3] float32 in [0, 1],
"set": [B, N, D] float32}`` of the shared iterator (`experiments.common.batching`), in an order
fixed by ``(seed, epoch)``, so ``iterate(start_step)`` resumes exactly where an uninterrupted run
would be.
"""

import concurrent.futures
import dataclasses
import io
import json
import os
import threading
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import PIL.Image
from absl import logging

from experiments.clevr.scenes import (
  ERROR_OR_SKIP,
  SET_SIZE,
  BadImageError,
  ClevrDataError,
  TooManyObjectsError,
  check_choice,
  scene_to_set,
  tfds_objects_to_set,
)
from experiments.common import batching


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
  """A raw CLEVR v1.0 split: ``<root>/images/<split>/*.png`` plus its scene file.

  The scene file is ``<root>/scenes/CLEVR_<split>_scenes.json``.

  All scenes are parsed and checked when the source is made, so an unknown attribute or an
  oversized scene fails before training starts; images are decoded on ``load``.

  Attributes:
    skipped_scenes: Scenes left out because they had more objects than the set size.
  """

  def __init__(self, root: str, split: str, *, set_size: int = SET_SIZE,
               on_too_many_objects: str = "error"):
    check_choice("on_too_many_objects", on_too_many_objects, ERROR_OR_SKIP)
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

  def pixel_coords(self, index: int, *, image_size: int) -> np.ndarray:
    """The objects' ``pixel_coords`` x and y, rescaled from the stored image to ``image_size``.

    Continuous positions (pixel j spans j .. j + 1), of shape [K, 2], row k for object k (the
    row of the set). Raises ClevrDataError if an object has no finite ones, BadImageError if
    the image cannot be opened for its size.
    """
    scene = self.scenes[index]
    for k, obj in enumerate(scene["objects"]):
      xy = obj.get("pixel_coords")
      if xy is None or len(xy) < 2 or not np.all(np.isfinite(np.asarray(xy[:2], float))):
        raise ClevrDataError(
          f"scene {scene['image_filename']!r} of split {self.split!r}, object {k}: no finite "
          f"pixel_coords [x, y, ...], got {xy!r}")
    path = self.image_path(index)
    try:
      with PIL.Image.open(path) as image:
        width, height = image.size
    except (OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError) as e:
      raise BadImageError(f"image {path!r} cannot be read or decoded: {e}") from e
    pixels = np.array([o["pixel_coords"][:2] for o in scene["objects"]], np.float64)
    return pixels.reshape(-1, 2) * np.array([image_size / width, image_size / height])

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

  def file_name(self, index: int) -> str:
    """The CLEVR image file name of example ``index`` (TFDS orders examples its own way)."""
    name = self._source[index]["file_name"]
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    try:
      example = self._source[index]
    except Exception as e:  # The image decodes inside tfds: any failure is a bad example.
      raise BadImageError(f"TFDS clevr {self.split}[{index}] cannot be decoded: {e}") from e
    return to_rgb(example["image"], image_size=image_size), tfds_objects_to_set(
      example["objects"], set_size=self.set_size, where=f"TFDS clevr {self.split}[{index}]")


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


class MixedSource:
  """Several sources read as one training set, each repeated a whole number of times.

  Example ``index`` runs through source 0's examples ``repeats[0]`` times, then source 1's
  ``repeats[1]`` times, and so on; shuffled batches (``ClevrBatches``) then draw from every
  source in proportion to ``len(source) * repeat``. Used to add a few scenes of another look
  (renders of CLEVR's own assets) to a large rendered training set.

  Attributes:
    sources: The sources, in order.
    repeats: How often each source's examples occur.
    skipped_scenes: The sources' skipped scenes, each source counted once.
  """

  def __init__(self, sources: Sequence[ClevrSource], repeats: Sequence[int] | None = None):
    sources = list(sources)
    repeats = [1] * len(sources) if repeats is None else list(repeats)
    if not sources:
      raise ValueError("MixedSource needs at least one source")
    if len(repeats) != len(sources):
      raise ValueError(f"{len(sources)} sources but {len(repeats)} repeats")
    for i, (source, repeat) in enumerate(zip(sources, repeats)):
      if isinstance(repeat, bool) or int(repeat) != repeat or repeat < 1:
        raise ValueError(f"repeat of source {i} must be a whole number >= 1, got {repeat!r}")
      if not len(source):
        raise ValueError(f"source {i} has no examples")
    self.sources, self.repeats = sources, [int(r) for r in repeats]
    self._ends = np.cumsum([len(s) * r for s, r in zip(sources, self.repeats)])
    self.skipped_scenes = sum(getattr(s, "skipped_scenes", 0) for s in sources)

  def __len__(self) -> int:
    return int(self._ends[-1])

  def locate(self, index: int) -> tuple[int, int]:
    """``(source, example of that source)`` of example ``index``."""
    if not 0 <= index < len(self):
      raise IndexError(f"example {index} of a mixed source of {len(self)}")
    i = int(np.searchsorted(self._ends, index, side="right"))
    start = int(self._ends[i - 1]) if i else 0
    return i, (index - start) % len(self.sources[i])

  def load(self, index: int, *, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    i, local = self.locate(index)
    return self.sources[i].load(local, image_size=image_size)


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


SOURCES = ("synthetic", "folder", "tfds", "tfds_tf")


def create_clevr_source(source: str, *, split: str, root: str | None = None,
                        data_dir: str | None = None, image_size: int = 128,
                        set_size: int = SET_SIZE,
                        on_too_many_objects: str = "error") -> ClevrSource:
  """Opens one split of a CLEVR source and logs which one is in use.

  Args:
    source: "synthetic" or "folder" (a CLEVR v1.0 folder at ``root``; the synthetic one is
      written by `experiments.clevr.render.render_dataset`), "tfds" (array_record in ``data_dir``,
      no TensorFlow) or "tfds_tf" (``tfds.load``, needs TensorFlow, held in memory).
    split: "train", "val", ...; for TFDS "val" means the builder's "validation" split.
    root: The folder of "synthetic" and "folder".
    data_dir: TFDS data_dir (None: TFDS's default).
    image_size: S; only "tfds_tf" uses it here (it resizes while loading).
    set_size: N.
    on_too_many_objects: "error" or "skip" for scenes with more than N objects (folder
      sources check every scene here; TFDS sources find them while loading, see
      ``ClevrBatches``).

  Returns:
    The source.
  """
  check_choice("source", source, SOURCES)
  if source in ("synthetic", "folder"):
    if root is None:
      raise ValueError(f"source={source!r} needs root=, the CLEVR folder")
    out = ClevrFolderSource(root, split, set_size=set_size,
                            on_too_many_objects=on_too_many_objects)
    where = root
  else:
    tfds_split = {"val": "validation"}.get(split, split)
    if source == "tfds":
      out = TfdsClevrSource(tfds_split, data_dir=data_dir, set_size=set_size)
    else:
      out = load_tfds_with_tensorflow(tfds_split, data_dir=data_dir, image_size=image_size,
                                      set_size=set_size)
    where = data_dir or "the default TFDS data_dir"
  logging.info("CLEVR source %r, split %r, from %s: %d scenes.", source, split, where, len(out))
  return out


@dataclasses.dataclass
class _BadExamples:
  """Examples found unusable while loading (shared by the loader threads)."""

  images: set = dataclasses.field(default_factory=set)
  scenes: set = dataclasses.field(default_factory=set)
  lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


class ClevrBatches(batching.Batches):
  """Deterministic, resumable batches of any CLEVR source: `batching.Batches` whose ``load``
  decodes the images.

  Batch ``step`` holds examples ``perm_e[k * B:(k + 1) * B]`` where ``e, k = divmod(step,
  steps_per_epoch)`` and ``perm_e`` is a permutation drawn from ``(seed, e)`` (the identity
  without shuffling). It is a pure function of ``step``, so ``iterate(start_step)`` yields
  exactly the batches an uninterrupted run would from there. Batches are decoded and resized
  by ``num_threads`` grain threads, ``prefetch`` batches ahead.

  With ``cache=True`` every image is decoded and resized once, in parallel, into a uint8
  array in memory; bad examples are then found (and skipped or raised) before training starts.
  Without the cache, a bad example found while loading raises, or with "skip" is replaced by
  the next usable example of the source (so batches keep their size) and counted.
  """

  def __init__(self, source: ClevrSource, *, batch_size: int, image_size: int,
               shuffle: bool = True, seed: int = 0, drop_remainder: bool = True,
               pad_remainder: bool = False, cache: bool = False, num_threads: int = 4,
               prefetch: int = 4, on_bad_image: str = "error", on_too_many_objects: str = "error",
               split: str | None = None):
    """Makes the batches.

    Args:
      source: Any ``ClevrSource``.
      batch_size: B.
      image_size: S, the side images are resized to.
      shuffle: Draw a new permutation per epoch (else the source order).
      seed: Seed of the permutations.
      drop_remainder: Leave out the last partial batch of each epoch (else it is smaller).
      pad_remainder: Fill the last partial batch up to B and mark the real rows in
        ``batch[batching.VALID]`` (see `batching.Batches`); needs ``drop_remainder=False``.
      cache: Decode everything once into memory.
      num_threads: Loader threads; 0 loads in the calling thread.
      prefetch: Batches decoded ahead.
      on_bad_image: "error" or "skip" for images that are missing or fail to decode.
      on_too_many_objects: "error" or "skip" for scenes found oversized while loading.
      split: The split's name, for messages.
    """
    check_choice("on_bad_image", on_bad_image, ERROR_OR_SKIP)
    check_choice("on_too_many_objects", on_too_many_objects, ERROR_OR_SKIP)
    if image_size <= 0:
      raise ValueError(f"image_size must be positive, got {image_size}")
    self.image_size = int(image_size)
    self._policy = {BadImageError: on_bad_image, TooManyObjectsError: on_too_many_objects}
    self._bad = _BadExamples()
    self._source_skipped = getattr(source, "skipped_scenes", 0)
    self.source = self._build_cache(source, num_threads) if cache else source
    if len(self.source) == 0:
      raise ClevrDataError("the source has no usable examples")
    super().__init__(len(self.source), self._load, batch_size=batch_size, seed=seed,
                     shuffle=shuffle, drop_remainder=drop_remainder,
                     pad_remainder=pad_remainder, num_threads=num_threads,
                     prefetch=prefetch, split=split)

  @property
  def stats(self) -> dict[str, int]:
    """Counts of unusable examples: bad images, and scenes skipped for too many objects."""
    return {"bad_images": len(self._bad.images),
            "skipped_scenes": self._source_skipped + len(self._bad.scenes)}

  def _try_load(self, source: ClevrSource, index: int):
    """The example, or the exception to skip it (policy "skip"); raises under "error"."""
    try:
      return source.load(index, image_size=self.image_size)
    except (BadImageError, TooManyObjectsError) as e:
      kind = type(e)
      if self._policy[kind] == "error":
        option = "on_bad_image" if kind is BadImageError else "on_too_many_objects"
        raise kind(f"{e} (pass {option}='skip' to skip such examples)") from e
      with self._bad.lock:
        seen = self._bad.images if kind is BadImageError else self._bad.scenes
        if index not in seen:
          logging.warning("Skipping CLEVR example %d: %s", index, e)
        seen.add(index)
      return e

  def _build_cache(self, source: ClevrSource, num_threads: int) -> ArraySource:
    n = len(source)
    s = self.image_size
    images = np.zeros((n, s, s, 3), np.uint8)
    sets = []
    keep = np.zeros(n, bool)
    def fill(index):
      example = self._try_load(source, index)
      if not isinstance(example, Exception):
        images[index] = example[0]
        keep[index] = True
        return example[1]
      return None
    with concurrent.futures.ThreadPoolExecutor(max(num_threads, 1)) as pool:
      sets = list(pool.map(fill, range(n)))
    good = np.flatnonzero(keep)
    logging.info("Cached %d CLEVR images of %d px (%.1f MB).", len(good), s,
                 images[good].nbytes / 1e6)
    if len(good) == n:
      return ArraySource(images, np.stack(sets))
    return ArraySource(images[good], np.stack([sets[i] for i in good]))

  def _load_usable(self, index: int) -> tuple[np.ndarray, np.ndarray]:
    for offset in range(self.num_examples):
      j = (index + offset) % self.num_examples
      if j in self._bad.images or j in self._bad.scenes:
        continue
      example = self._try_load(self.source, j)
      if not isinstance(example, Exception):
        return example
    raise ClevrDataError("no example of the source can be loaded")

  def _load(self, indices: np.ndarray, epoch: int, index: int) -> dict[str, np.ndarray]:
    """The batch of examples ``indices``: image float32 [B, S, S, 3] in [0, 1] and set float32
    [B, N, D]."""
    del epoch, index  # No per-batch randomness.
    examples = [self._load_usable(int(i)) for i in indices]
    images = np.stack([e[0] for e in examples])  # [B, S, S, 3] uint8
    return {"image": images.astype(np.float32) / np.float32(255.0),
            "set": np.stack([e[1] for e in examples]).astype(np.float32)}


def prepare_tfds_from_folder(root: str, data_dir: str, *,
                             splits: Sequence[str] = ("train", "val")) -> None:
  """Writes a CLEVR-layout folder as the tfds ``clevr`` dataset (version 3.1.0, array_record).

  The result is read by ``tfds.data_source("clevr", data_dir=data_dir)`` exactly like the
  prepared real dataset, which makes the TFDS path testable without the 19 GB download. The
  "val" split becomes TFDS's "validation". Question/answer lists are left empty.
  """
  import tensorflow_datasets as tfds

  real = tfds.builder_cls("clevr")
  names = {"train": "train", "val": "validation", "test": "test"}

  class _ClevrFromFolder(real, skip_registration=True):
    name = "clevr"

    def _split_generators(self, dl_manager):
      del dl_manager
      return {names.get(s, s): self._generate_examples(s) for s in splits}

    def _generate_examples(self, split):
      source = ClevrFolderSource(root, split)
      fields = ("color", "material", "shape", "size", "rotation", "pixel_coords", "3d_coords")
      for i, scene in enumerate(source.scenes):
        yield scene["image_filename"], {
          "image": source.image_path(i),
          "file_name": scene["image_filename"],
          "question_answer": [],
          "objects": [{f: o[f] for f in fields} for o in scene["objects"]],
        }

  builder = _ClevrFromFolder(data_dir=data_dir, file_format="array_record")
  builder.download_and_prepare(
    download_config=tfds.download.DownloadConfig(download_mode=tfds.download.GenerateMode
                                                 .REUSE_DATASET_IF_EXISTS))
