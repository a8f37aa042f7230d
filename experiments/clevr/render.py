r"""A synthetic CLEVR-style renderer in NumPy and PIL, writing the real CLEVR v1.0 layout.

  python -m experiments.clevr.render --root=data/clevr_synth --train=5000 --val=500 \
      --image_size=128

(splits already complete with the same settings are left as they are; the CLEVR experiment
renders its synthetic source itself on first use, with `render_dataset`.)

Scenes follow the public CLEVR generator (facebookresearch/clevr-dataset-gen): 3 to 10 objects,
centres ``(x, y)`` uniform in [-3, 3], each object resting on the ground plane, surfaces at least
``min_dist`` apart and centres at least ``margin`` apart along the camera's left/right and
front/behind directions, random rotation about z, camera and light jittered per image, and every
object at least ``min_visible`` of the image area visible (CLEVR's 200 pixels of 320x240),
otherwise the scene is drawn again. Shapes use CLEVR's scales: a sphere of radius r, a cylinder
of radius r and half-height r, a cube of half-side r / sqrt(2) (so that its footprint fits the
same circle), with r = 0.7 (large) or 0.35 (small); ``3d_coords`` is the object's centre, so z is
its half-height.

Rendering is exact ray casting, not Blender: for every pixel a ray from a pinhole camera is
intersected with each sphere, oriented box and capped cylinder (restricted to the object's
screen rectangle), and the nearest hit wins (a per-pixel depth test, which gives occlusion by
depth exactly where a painter's algorithm would only sort whole objects). Surfaces are shaded with
one jittered key light plus ambient: rubber is Lambertian (matte), metal has a weaker diffuse
term, a reflected sky gradient tinted by its colour (as metals reflect) and a sharp white
highlight. Objects cast soft blob shadows on the ground. Images are rendered square at the
requested size directly, supersampled 2x2 and box-filtered for anti-aliasing.
``pixel_coords`` are ``[x, y, depth]`` in that image's pixels (x right, y down from the
top-left corner) and camera-space depth, as CLEVR's are for its 320x240 renders.

The camera is CLEVR's position (7.36, -6.93, 4.96) jittered by up to 0.5 per axis, looking at
a ground point near the origin. CLEVR's horizontal field of view is 49.1 degrees (Blender's
35 mm lens on a 32 mm sensor); the default here is 42 degrees, for larger objects in small
images (``RenderOptions.fov_degrees``).
"""

import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Mapping

import numpy as np
import PIL.Image
from absl import app, flags, logging

# CLEVR's eight colours (RGB, 0-255) and its object scales.
COLORS_RGB = {
  "gray": (87, 87, 87),
  "red": (173, 35, 35),
  "blue": (42, 75, 215),
  "green": (29, 105, 20),
  "brown": (129, 74, 25),
  "purple": (129, 38, 192),
  "cyan": (41, 208, 208),
  "yellow": (255, 238, 51),
}
SIZES = {"large": 0.7, "small": 0.35}
SHAPES = ("sphere", "cube", "cylinder")
MATERIALS = ("rubber", "metal")

_COLOR_NAMES = tuple(COLORS_RGB)
_SIZE_NAMES = tuple(SIZES)
_CAMERA_POSITION = np.array([7.358891, -6.925791, 4.958309])
_GROUND_RGB = np.array([0.60, 0.60, 0.58], np.float32)
_SKY_RGB = np.array([0.75, 0.75, 0.76], np.float32)


@dataclasses.dataclass(frozen=True)
class RenderOptions:
  """Scene and camera settings of the synthetic source.

  Attributes:
    image_size: Side of the square output image in pixels.
    min_objects: Fewest objects per scene (CLEVR: 3).
    max_objects: Most objects per scene (CLEVR: 10).
    min_dist: Least gap between two objects' bounding circles on the ground (CLEVR: 0.25).
    margin: Least centre separation along each camera cardinal direction (CLEVR: 0.4).
    min_visible: Least visible area of each object, as a fraction of the image (CLEVR: 200 of
      320x240 pixels).
    fov_degrees: Horizontal field of view of the pinhole camera. CLEVR's is 49.1; the default
      42 makes objects 1.19x larger and cuts only the far left and right corners of the
      [-3, 3] square (scenes with an object too little visible are drawn again).
    look_at_shift: The camera looks at the ground point this far from the origin towards the
      camera, which centres the [-3, 3] square vertically in the frame.
    camera_jitter: Uniform jitter of each camera coordinate (CLEVR: 0.5).
    light_jitter: Uniform jitter of the key light direction's components and intensities.
    supersample: Rays per pixel side; the image is box-filtered down from this.
  """

  image_size: int = 128
  min_objects: int = 3
  max_objects: int = 10
  min_dist: float = 0.25
  margin: float = 0.4
  min_visible: float = 200.0 / (320 * 240)
  fov_degrees: float = 42.0
  look_at_shift: float = 0.5
  camera_jitter: float = 0.5
  light_jitter: float = 0.1
  supersample: int = 2


class _Camera:
  """A pinhole camera looking at the origin with world z up."""

  def __init__(self, position: np.ndarray, *, width: int, fov_degrees: float,
               look_at: np.ndarray):
    self.position = position
    forward = (look_at - position) / np.linalg.norm(look_at - position)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    self.forward, self.right, self.up = forward, right, np.cross(right, forward)
    self.width = width
    self.focal = 0.5 * width / math.tan(math.radians(fov_degrees) / 2)

  def rays(self) -> np.ndarray:
    """Unit ray directions through the pixel centres, of shape [W, W, 3]."""
    centres = (np.arange(self.width) + 0.5 - 0.5 * self.width).astype(np.float32)
    across = centres[:, None] * self.right.astype(np.float32)  # [W, 3]
    down = (self.focal * self.forward - centres[:, None] * self.up).astype(np.float32)  # [W, 3]
    d = down[:, None, :] + across[None, :, :]  # [W, W, 3]
    return d / np.sqrt(np.einsum("...i,...i->...", d, d))[..., None]

  def project(self, point: np.ndarray) -> tuple[float, float, float]:
    """Pixel x (right), pixel y (down) and camera depth of a world point."""
    v = point - self.position
    depth = float(v @ self.forward)
    px = 0.5 * self.width + self.focal * float(v @ self.right) / depth
    py = 0.5 * self.width - self.focal * float(v @ self.up) / depth
    return px, py, depth

  def ground_directions(self) -> dict[str, list[float]]:
    """CLEVR's cardinal directions: camera right and forward projected onto the ground."""
    behind = self.forward * [1.0, 1.0, 0.0]
    behind /= np.linalg.norm(behind)
    right = self.right * [1.0, 1.0, 0.0]
    right /= np.linalg.norm(right)
    as_list = lambda v: [round(float(c), 6) for c in v]
    return {
      "behind": as_list(behind), "front": as_list(-behind),
      "right": as_list(right), "left": as_list(-right),
      "above": [0.0, 0.0, 1.0], "below": [0.0, 0.0, -1.0],
    }


def _geometry(shape: str, r: float) -> tuple[float, float]:
  """Half-height (= centre z) and bounding-sphere radius of a shape of CLEVR scale r."""
  if shape == "cube":
    a = r / math.sqrt(2)
    return a, a * math.sqrt(3)
  if shape == "cylinder":
    return r, r * math.sqrt(2)
  return r, r


def _sample_layout(rng: np.random.Generator, opts: RenderOptions, directions: dict) -> list[dict]:
  """Draws objects until all spacing rules hold (CLEVR's 50 tries per object, then restart)."""
  axes = [np.array(directions[k][:2]) for k in ("behind", "right")]
  while True:
    n = int(rng.integers(opts.min_objects, opts.max_objects + 1))
    objects: list[dict] = []
    for _ in range(n):
      for _ in range(50):
        size = _SIZE_NAMES[rng.integers(2)]
        shape = SHAPES[rng.integers(3)]
        r = SIZES[size]
        x, y = rng.uniform(-3, 3, size=2)
        ok = True
        for o in objects:
          dx, dy = x - o["_xy"][0], y - o["_xy"][1]
          if math.hypot(dx, dy) - r - o["_r"] < opts.min_dist:
            ok = False
            break
          if any(abs(dx * a[0] + dy * a[1]) < opts.margin for a in axes):
            ok = False
            break
        if ok:
          break
      else:
        break  # This object found no place: restart the scene, as CLEVR does.
      objects.append({
        "_xy": (x, y), "_r": r, "size": size, "shape": shape,
        "color": _COLOR_NAMES[rng.integers(8)], "material": MATERIALS[rng.integers(2)],
        "rotation": float(rng.uniform(0, 360)),
      })
    if len(objects) == n:
      return objects


def _intersect(shape: str, o: np.ndarray, d: np.ndarray, centre: np.ndarray, r: float,
               theta: float) -> tuple[np.ndarray, np.ndarray]:
  """Ray hits against one object.

  Args:
    shape: "sphere", "cube" or "cylinder".
    o: Ray origin of shape [3].
    d: Unit ray directions of shape [P, 3].
    centre: Object centre of shape [3].
    r: CLEVR scale of the object.
    theta: Rotation about z in radians.

  Returns:
    Hit distance of shape [P] (inf where missed) and world normal of shape [P, 3].
  """
  c, s = math.cos(theta), math.sin(theta)
  rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # Local to world.
  lo = (o - centre) @ rot  # [3], origin in the object's frame.
  ld = d @ rot  # [P, 3]
  p = ld.shape[0]
  t = np.full(p, np.inf)
  normal = np.zeros((p, 3))
  if shape == "sphere":
    b = ld @ lo  # [P]
    disc = b * b - (lo @ lo - r * r)
    hit = disc > 0
    t[hit] = -b[hit] - np.sqrt(disc[hit])
    t[t <= 0] = np.inf
    normal = lo + np.where(np.isfinite(t), t, 0.0)[:, None] * ld  # [P, 3]
  elif shape == "cube":
    a = r / math.sqrt(2)
    with np.errstate(divide="ignore", invalid="ignore"):
      inv = 1.0 / ld  # [P, 3]
      t1, t2 = (-a - lo) * inv, (a - lo) * inv
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)  # [P, 3]
    near, far = tmin.max(axis=1), tmax.min(axis=1)
    hit = (near <= far) & (near > 0)
    t[hit] = near[hit]
    axis = tmin.argmax(axis=1)
    normal[np.arange(p), axis] = -np.sign(ld[np.arange(p), axis])
  else:
    h = r
    qa = ld[:, 0] ** 2 + ld[:, 1] ** 2
    qb = ld[:, 0] * lo[0] + ld[:, 1] * lo[1]
    disc = qb * qb - qa * (lo[0] ** 2 + lo[1] ** 2 - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
      side = np.where(disc > 0, (-qb - np.sqrt(np.maximum(disc, 0))) / qa, np.inf)
      cap_t = (np.sign(lo[2]) * h - lo[2]) / ld[:, 2]  # The cap facing the camera.
    side_z = lo[2] + side * ld[:, 2]
    side = np.where((side > 0) & (np.abs(side_z) <= h), side, np.inf)
    cap_xy = lo[:2] + cap_t[:, None] * ld[:, :2]
    cap = np.where((cap_t > 0) & ((cap_xy**2).sum(axis=1) <= r * r), cap_t, np.inf)
    t = np.minimum(side, cap)
    on_side = side <= cap
    pts = lo + np.where(np.isfinite(t), t, 0.0)[:, None] * ld
    normal = np.where(on_side[:, None], pts * [1.0, 1.0, 0.0], [0.0, 0.0, np.sign(lo[2])])
  normal = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
  return t, normal @ rot.T


def render_scene(rng: np.random.Generator, opts: RenderOptions) -> tuple[np.ndarray, list[dict],
                                                                         dict]:
  """Draws and renders one scene.

  Args:
    rng: The scene's random generator (the scene is a pure function of its state).
    opts: Scene and camera settings.

  Returns:
    The image as uint8 of shape [S, S, 3], the CLEVR ``objects`` list, and the directions dict.
  """
  sup = opts.supersample
  while True:
    camera = _Camera(
      _CAMERA_POSITION + rng.uniform(-opts.camera_jitter, opts.camera_jitter, size=3),
      width=opts.image_size * sup, fov_degrees=opts.fov_degrees,
      look_at=np.array([*(-opts.look_at_shift * _CAMERA_POSITION[:2]
                          / np.linalg.norm(_CAMERA_POSITION[:2])), 0.0]))
    directions = camera.ground_directions()
    objects = _sample_layout(rng, opts, directions)
    light = np.array([-0.45, -0.75, 1.0]) + rng.uniform(-1, 1, size=3) * opts.light_jitter * 3
    light /= np.linalg.norm(light)
    key = 0.75 + rng.uniform(-1, 1) * opts.light_jitter
    ambient = 0.38 + rng.uniform(-1, 1) * opts.light_jitter * 0.5
    image, ids = _shade(camera, objects, light=light, key=key, ambient=ambient,
                        min_pixels=opts.min_visible * (opts.image_size * sup) ** 2)
    if image is not None:
      break
  out = image.reshape(opts.image_size, sup, opts.image_size, sup, 3).mean(axis=(1, 3))
  out = np.clip(np.round(out * 255), 0, 255).astype(np.uint8)
  records = []
  for obj in objects:
    z, _ = _geometry(obj["shape"], obj["_r"])
    centre = np.array([*obj["_xy"], z])
    px, py, depth = camera.project(centre)
    records.append({
      "color": obj["color"], "size": obj["size"], "shape": obj["shape"],
      "material": obj["material"], "rotation": round(obj["rotation"], 4),
      "3d_coords": [round(float(v), 6) for v in centre],
      "pixel_coords": [round(px / sup, 3), round(py / sup, 3), round(depth, 4)],
    })
  return out, records, directions


def _shade(camera: _Camera, objects: list[dict], *, light: np.ndarray, key: float,
           ambient: float, min_pixels: float) -> tuple[np.ndarray | None, np.ndarray]:
  """Ray casts a scene at the camera's resolution and, if every object is visible enough, shades it.

  Returns:
    Linear RGB in [0, 1] of shape [W, W, 3] (None when some object has fewer than
    ``min_pixels`` visible pixels) and the visible object id per pixel (-1 for the ground) of
    shape [W, W].
  """
  w = camera.width
  d = camera.rays().reshape(-1, 3)  # [P, 3]
  o = camera.position
  with np.errstate(divide="ignore"):
    tg = np.where(d[:, 2] < 0, np.float32(-o[2]) / d[:, 2], np.float32(np.inf))  # [P], z = 0.
  # Geometry pass: nearest hit per pixel over the objects' screen rectangles.
  depth = tg.copy()
  ids = np.full(len(d), -1)
  grid = np.arange(w * w).reshape(w, w)
  hits = []
  for k, obj in enumerate(objects):
    z, bound = _geometry(obj["shape"], obj["_r"])
    centre = np.array([*obj["_xy"], z])
    px, py, dist = camera.project(centre)
    rad = camera.focal * bound / max(dist - bound, 1e-3) + 2
    x0, x1 = max(int(px - rad), 0), min(int(px + rad) + 1, w)
    y0, y1 = max(int(py - rad), 0), min(int(py + rad) + 1, w)
    idx = grid[y0:y1, x0:x1].ravel()
    t, n = _intersect(obj["shape"], o, d[idx], centre, obj["_r"], math.radians(obj["rotation"]))
    front = t < depth[idx]
    idx, n = idx[front], n[front]
    depth[idx] = t[front]
    ids[idx] = k
    hits.append((idx, n))
  counts = np.bincount(ids + 1, minlength=len(objects) + 1)[1:]
  if counts.min() < min_pixels:
    return None, ids.reshape(w, w)
  # Ground: soft blob shadows (each centre's shadow point along the light) and a distance fade.
  finite = np.isfinite(tg)
  tg_or_far = np.where(finite, tg, np.float32(1e3))
  gx = np.float32(o[0]) + tg_or_far * d[:, 0]  # [P]
  gy = np.float32(o[1]) + tg_or_far * d[:, 1]  # [P]
  shadow = np.zeros(len(d), np.float32)
  for obj in objects:
    z, _ = _geometry(obj["shape"], obj["_r"])
    cx, cy = (np.asarray(obj["_xy"]) - light[:2] * (z / light[2])).astype(np.float32)
    q = (gx - cx) ** 2 + (gy - cy) ** 2
    q *= np.float32(-0.5 / (obj["_r"] * 1.15) ** 2)
    q += np.float32(0.5)
    np.maximum(shadow, q, out=shadow)
  fade = np.exp(tg_or_far * np.float32(-1 / 60.0))[:, None]  # [P, 1]
  lit = (ambient + key * light[2] * (1 - shadow))[:, None]  # [P, 1]
  color = (_GROUND_RGB * lit - _SKY_RGB) * fade + _SKY_RGB  # [P, 3]
  # Objects: shade only the pixels each one finally owns.
  for k, (obj, (idx, n)) in enumerate(zip(objects, hits, strict=True)):
    mine = ids[idx] == k
    idx, n = idx[mine], n[mine]
    albedo = np.array(COLORS_RGB[obj["color"]]) / 255.0
    lambert = np.clip(n @ light, 0, None)[:, None]  # [Q, 1]
    if obj["material"] == "rubber":
      color[idx] = albedo * (ambient + key * lambert)
    else:
      view = d[idx]
      refl = view - 2 * (view * n).sum(axis=1, keepdims=True) * n  # [Q, 3]
      spec = np.clip(refl @ light, 0, None)[:, None] ** 20  # A broad, white highlight.
      # A mirror of a bright sky over a dark horizon, tinted by the metal's colour as metals
      # reflect: a coloured sheen that changes sharply with the surface orientation, so that
      # flat cube and cylinder faces look metallic too, and the colour stays readable.
      env = np.clip((refl[:, 2:3] - 0.05) / 0.5, 0, 1) ** 2
      color[idx] = (albedo * (0.6 * ambient + 0.5 * key * lambert + 0.8 * env)
                    + 0.05 * env + 0.8 * key * spec)
  return color.reshape(w, w, 3), ids.reshape(w, w)


# --- Writing a dataset in the CLEVR v1.0 layout. ---------------------------------------------

GENERATOR_NAME = "idspn_jax synthetic CLEVR"
_MARKER = ".idspn_synthetic"


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode("utf-8"))


def _render_one(job: tuple[str, int, int, RenderOptions, str]) -> dict:
  """Renders image ``index`` of ``split`` into ``folder`` and returns its scene record."""
  split, index, seed, opts, folder = job
  rng = np.random.default_rng([seed, _split_key(split), index])
  image, objects, directions = render_scene(rng, opts)
  filename = f"CLEVR_{split}_{index:06d}.png"
  PIL.Image.fromarray(image).save(os.path.join(folder, filename), compress_level=1)
  return {
    "split": split, "image_index": index, "image_filename": filename,
    "objects": objects, "directions": directions,
  }


def _scenes_path(root: str, split: str) -> str:
  return os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json")


def _expected_info(split: str, count: int, seed: int, opts: RenderOptions) -> dict:
  return {
    "generator": GENERATOR_NAME, "split": split, "version": "1.1", "num_images": count,
    "seed": seed, "options": dataclasses.asdict(opts),
  }


def _is_complete(root: str, split: str, info: dict) -> bool:
  """True if the split's scene file (written last) matches ``info`` and every image exists."""
  path = _scenes_path(root, split)
  if not os.path.exists(path):
    return False
  with open(path) as f:
    data = json.load(f)
  found = data.get("info", {})
  if found.get("generator") != GENERATOR_NAME:
    raise FileExistsError(
      f"{path} exists but was not written by this renderer; choose another root for the "
      "synthetic dataset")
  if found != info:
    raise FileExistsError(
      f"{path} was rendered with other settings ({found}, wanted {info}); delete "
      f"{root!r} or pass overwrite=True")
  folder = os.path.join(root, "images", split)
  return all(os.path.exists(os.path.join(folder, s["image_filename"])) for s in data["scenes"])


def render_dataset(root: str, *, splits: Mapping[str, int], image_size: int = 128, seed: int = 0,
                   num_workers: int | None = None, options: RenderOptions | None = None,
                   overwrite: bool = False) -> dict[str, int]:
  """Renders synthetic scenes into ``root`` in the CLEVR v1.0 layout, unless already there.

  Writes ``<root>/images/<split>/CLEVR_<split>_000000.png`` ... and
  ``<root>/scenes/CLEVR_<split>_scenes.json`` (``{"info": ..., "scenes": [...]}`` with CLEVR's
  object fields). Image ``i`` of a split is a pure function of ``(seed, split, i)``, so the
  result does not depend on ``num_workers``. Each split is written atomically: images go to a
  temporary folder that is renamed into place, then the scene file is written to a temporary
  name and renamed; the scene file marks a split complete, so a killed render is redone.

  Args:
    root: Dataset folder (created if missing).
    splits: Number of images per split, e.g. ``{"train": 5000, "val": 500}``.
    image_size: Side of the square images in pixels (overrides ``options.image_size``).
    seed: Seed of the whole dataset.
    num_workers: Processes to render with; 0 renders in this process; None uses every CPU.
    options: Scene and camera settings; defaults to ``RenderOptions()``.
    overwrite: Re-render splits that exist with other settings instead of raising.

  Returns:
    The number of images rendered per split (0 for a split that was already complete).
  """
  opts = dataclasses.replace(options or RenderOptions(), image_size=int(image_size))
  if num_workers is None:
    num_workers = os.cpu_count() or 1
  rendered = {}
  for split, count in splits.items():
    if int(count) != count or count <= 0:
      raise ValueError(f"split {split!r} needs a positive number of images, got {count!r}")
    info = _expected_info(split, int(count), int(seed), opts)
    try:
      if _is_complete(root, split, info):
        logging.info("Synthetic CLEVR split %r already complete in %s.", split, root)
        rendered[split] = 0
        continue
    except FileExistsError:
      if not overwrite:
        raise
    _render_split(root, split, info, opts, num_workers=num_workers)
    rendered[split] = int(count)
  return rendered


def _render_split(root: str, split: str, info: dict, opts: RenderOptions, *,
                  num_workers: int) -> None:
  images_dir = os.path.join(root, "images")
  final = os.path.join(images_dir, split)
  scenes_file = _scenes_path(root, split)
  os.makedirs(images_dir, exist_ok=True)
  os.makedirs(os.path.dirname(scenes_file), exist_ok=True)
  if os.path.exists(scenes_file):
    os.remove(scenes_file)  # Marks the split incomplete before anything else changes.
  if os.path.exists(final) and not os.path.exists(os.path.join(final, _MARKER)):
    raise FileExistsError(
      f"{final} exists without a scene file and was not written by this renderer; "
      "move it away or choose another root")
  tmp = tempfile.mkdtemp(prefix=f".{split}.partial-", dir=images_dir)
  try:
    jobs = [(split, i, info["seed"], opts, tmp) for i in range(info["num_images"])]
    start = time.time()
    if num_workers == 0:
      scenes = [_render_one(job) for job in jobs]
    else:
      # Spawned workers: forking a process that already runs JAX threads is unsafe.
      with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
        scenes = pool.map(_render_one, jobs, chunksize=max(1, len(jobs) // (8 * num_workers)))
    open(os.path.join(tmp, _MARKER), "w").close()
    if os.path.exists(final):
      shutil.rmtree(final)
    os.rename(tmp, final)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  with tempfile.NamedTemporaryFile(
      "w", dir=os.path.dirname(scenes_file), prefix=".scenes.partial-", delete=False) as f:
    json.dump({"info": info, "scenes": scenes}, f)
  os.replace(f.name, scenes_file)
  logging.info("Rendered %d synthetic CLEVR %r images into %s in %.1f s.", len(scenes), split,
               root, time.time() - start)


# --- The command line. ---------------------------------------------------------------------


def _define_flags() -> None:
  # Defined only when run as a script: importing the module (the experiment, spawned render
  # workers, tests) adds no flags that could clash with other scripts' (the probe's --root).
  flags.DEFINE_string("root", "data/clevr_synth", "Dataset folder.")
  flags.DEFINE_integer("train", 5000, "Training images.")
  flags.DEFINE_integer("val", 500, "Validation images.")
  flags.DEFINE_integer("image_size", 128, "Side of the square images in pixels.")
  flags.DEFINE_integer("seed", 0, "Dataset seed.")
  flags.DEFINE_integer("workers", None, "Render processes (default: every CPU).")
  flags.DEFINE_bool("overwrite", False, "Re-render splits made with other settings.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  counts = render_dataset(f.root, splits={"train": f.train, "val": f.val},
                          image_size=f.image_size, seed=f.seed, num_workers=f.workers,
                          overwrite=f.overwrite)
  logging.info("Rendered per split (0 = already complete): %s", counts)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
