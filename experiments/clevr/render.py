r"""CLEVR scenes drawn in NumPy, as Blender draws CLEVR's official assets, in the CLEVR v1.0 layout.

  python -m experiments.clevr.render --root=data/clevr_synth --train=5000 --val=500 \
      --image_size=64
  # Blender and CLEVR's official assets instead (see experiments.clevr.blender):
  python -m experiments.clevr.render --engine=blender --assets=<clevr assets> \
      --root=data/clevr_blender --train=0 --val=500

(splits already complete with the same settings are left as they are; the CLEVR experiment
renders its synthetic source itself on first use, with `render_dataset`.)

Scenes are CLEVR v1.0's (`experiments.clevr.generator`: its sampling rules, the camera of its
``base_scene.blend`` with its 35 mm lens and 480 x 320 frame, camera and lamp jitter); scene
``i`` of a split is a pure function of ``(seed, split, i)``, the same scene the Blender path
draws for the same seed. Images are drawn in that 3:2 frame and resized to a square as CLEVR's
loaders resize CLEVR's images (bilinearly, no crop), so objects look as tall and narrow as they
do in real CLEVR inputs.

Rendering is exact ray casting (spheres, oriented boxes, capped cylinders; nearest hit per ray)
and shading modelled on Cycles with CLEVR's stage: the default grey diffuse ground lit by the
three jittered area lamps (key, back, fill: their powers, colours and positions) and the sun of
``base_scene.blend``, with inverse-square falloff, soft shadows (each object an occluding sphere,
the penumbra from the lamp's size) and a bounce term; rubber is diffuse with a faint gloss,
metal reflects the ground and the dark surroundings tinted by its colour, with lamp highlights.
Colours are CLEVR's: the sRGB values / 255 used as linear albedo, shown through Blender's
"Standard" view (the sRGB transfer curve). Each image is rendered at ``supersample`` times the
output size and resized down with PIL's bilinear filter, the loaders' filter. Optional domain
randomisation (``RenderOptions.randomize``) varies exposure, lamp powers and colours, the ground
and the object colours a little, from a random stream of its own, so scenes do not change.
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

from experiments.clevr import generator
from experiments.clevr.generator import COLORS_RGB, MATERIALS, SHAPES, SIZES  # noqa: F401

# Lamps of base_scene.blend: power (W), colour, size of the square area light.
_LAMPS = {
  "Lamp_Key": (100.0, (1.0, 0.9323, 0.8167), 0.5),
  "Lamp_Back": (50.0, (1.0, 1.0, 1.0), 1.0),
  "Lamp_Fill": (30.0, (0.7617, 0.8177, 1.0), 0.5),
}
_SUN_STRENGTH = 0.45
_SUN_ROTATION = (0.2360284924507141, 0.41688039898872375, 0.09707935154438019)
_GROUND_ALBEDO = 0.8
# Metal (fitted to Blender's renders of the same scenes, see experiments.clevr.compare): the
# reflected surroundings above the horizon as a fraction of the far ground's light, the weights
# of its two highlight lobes, how much of its reflection is blurred to the object's mean, and the
# reflection's strength.
ENV_UP = 0.6
METAL_LOBES = (2.0, 6.0)
METAL_BLUR = 0.4
METAL_ENV = 0.85


@dataclasses.dataclass(frozen=True)
class RenderOptions:
  """Settings of the NumPy renderer.

  Attributes:
    image_size: Side of the square output image in pixels.
    min_objects: Fewest objects per scene (CLEVR: 3).
    max_objects: Most objects per scene (CLEVR: 10).
    supersample: The 3:2 frame is drawn ``supersample * image_size`` pixels high (and 1.5 times
      that wide) and resized down to the square.
    exposure: Scale of all light (calibrated against Blender's renders of the same scenes).
    ambient: Light on every surface from everywhere, as a fraction of the direct light's scale.
    bounce: Light the ground reflects onto objects' lower sides, as a fraction of the direct
      light on the ground at the origin.
    randomize: Strength of the domain randomisation (0: every image under the base lights and
      colours, noise-free; 1: exposure x e^U(-0.25, 0.25), each lamp's power x e^U(-0.3, 0.3)
      and colour x e^U(-0.08, 0.08) per channel, the sun, the ambient light x e^U(-0.3, 0.3),
      the ground's albedo x e^U(-0.1, 0.1), each object's colour x e^U(-0.06, 0.06) per
      channel, pixel noise of relative deviation U(0, 0.08) before the resize, and metal's
      reflections: blur 0.4 + U(-0.2, 0.2), strength x e^U(-0.2, 0.2), highlights and the
      reflected surroundings x e^U(-0.5, 0.5)).
    rounded: Give cubes and cylinders the rounded edges of CLEVR's meshes.
  """

  image_size: int = 128
  min_objects: int = 3
  max_objects: int = 10
  supersample: int = 2
  exposure: float = 0.72
  ambient: float = 0.1
  bounce: float = 0.3
  randomize: float = 1.0
  rounded: bool = True


class _Look:
  """Lights and colours of one image (the base stage, or a randomised variant of it)."""

  def __init__(self, scene: dict, opts: RenderOptions, rng: np.random.Generator | None):
    u = (lambda lo, hi: float(rng.uniform(lo, hi))) if rng is not None and opts.randomize else (
      lambda lo, hi: 0.5 * (lo + hi))
    s = opts.randomize
    exposure = opts.exposure * math.exp(u(-0.25 * s, 0.25 * s))
    self.lamps = []
    for name, (power, colour, size) in _LAMPS.items():
      tint = np.array([math.exp(u(-0.08 * s, 0.08 * s)) for _ in range(3)])
      p = power * math.exp(u(-0.3 * s, 0.3 * s))
      location = np.asarray(scene.get("lamp_locations", {}).get(
        name, generator.LAMP_LOCATIONS[name]), np.float64)
      self.lamps.append((location, exposure * p * np.asarray(colour) * tint, size))
    self.sun = (generator.euler_xyz(_SUN_ROTATION) @ [0.0, 0.0, 1.0],
                exposure * _SUN_STRENGTH * math.exp(u(-0.3 * s, 0.3 * s)))
    self.ambient = exposure * opts.ambient * math.exp(u(-0.3 * s, 0.3 * s))
    self.ground = _GROUND_ALBEDO * math.exp(u(-0.1 * s, 0.1 * s))
    self.colour_jitter = 0.06 * s
    # Sampling noise, as a path tracer's: a relative standard deviation per drawn pixel.
    self.noise = u(0.0, 0.08 * s) if rng is not None else 0.0
    # Metal: how blurred its reflections are, how bright, and its highlights.
    self.metal_blur = METAL_BLUR + u(-0.2 * s, 0.2 * s)
    self.metal_env = METAL_ENV * math.exp(u(-0.2 * s, 0.2 * s))
    self.metal_lobes = tuple(w * math.exp(u(-0.5 * s, 0.5 * s)) for w in METAL_LOBES)
    self.env_up = ENV_UP * math.exp(u(-0.5 * s, 0.5 * s))
    self.rng = rng

  def albedo(self, colour: str) -> np.ndarray:
    a = np.asarray(COLORS_RGB[colour], np.float64) / 255.0
    if self.rng is not None and self.colour_jitter:
      a = a * np.exp(self.rng.uniform(-self.colour_jitter, self.colour_jitter, size=3))
    return np.clip(a, 0.0, 1.0)


def _occluders(objects: list[dict]) -> tuple[np.ndarray, np.ndarray]:
  """Centres [K, 3] and radii [K] of the spheres that stand in for the objects in shadows."""
  factor = {"sphere": 1.0, "cube": 1.2, "cylinder": 1.15}
  centres = np.array([o["3d_coords"] for o in objects], np.float64).reshape(-1, 3)
  radii = np.array([generator.object_scale(o["shape"], o["size"]) * factor[o["shape"]]
                    for o in objects])
  return centres, radii


def _visibility(points: np.ndarray, to_light: np.ndarray, distance: np.ndarray, size: float,
                centres: np.ndarray, radii: np.ndarray, skip: np.ndarray) -> np.ndarray:
  """Soft visibility in [0, 1] of a lamp from points, each object a soft-edged sphere.

  Args:
    points: [P, 3] shaded points.
    to_light: [P, 3] unit directions to the lamp.
    distance: [P] distances to the lamp (inf for the sun).
    size: The lamp's size (its angular size times distance gives the penumbra).
    centres, radii: The occluding spheres.
    skip: [P] object id of each point (-1: ground), which does not shadow itself.
  """
  vis = np.ones(len(points))
  for k in range(len(radii)):
    rel = centres[k] - points  # [P, 3]
    along = np.einsum("pi,pi->p", rel, to_light)
    perp = np.sqrt(np.maximum(np.einsum("pi,pi->p", rel, rel) - along**2, 0.0))
    beyond = np.maximum(distance - along, 1e-3)
    penumbra = 0.15 * radii[k] + size * along / beyond
    occ = np.clip((radii[k] - perp) / np.maximum(penumbra, 1e-3) + 0.5, 0.0, 1.0)
    occ = np.where((along > 0) & (along < distance) & (skip != k), occ, 0.0)
    vis *= 1.0 - occ
  return vis


def _direct(points: np.ndarray, normals: np.ndarray, look: _Look, centres, radii, skip,
            *, shadows: bool = True) -> np.ndarray:
  """Irradiance [P, 3] from the lamps and the sun at points with normals."""
  e = np.zeros((len(points), 3))
  for location, power, size in look.lamps:
    v = location - points
    dist = np.linalg.norm(v, axis=1)
    to_lamp = v / dist[:, None]
    cos_s = np.clip(np.einsum("pi,pi->p", normals, to_lamp), 0.0, None)
    facing = -location / np.linalg.norm(location)  # The lamps face the origin.
    cos_l = np.clip(-to_lamp @ facing, 0.0, None)
    w = cos_s * cos_l / (math.pi * dist**2)
    if shadows:
      w = w * _visibility(points, to_lamp, dist, size, centres, radii, skip)
    e += w[:, None] * power[None, :]
  sun_dir, strength = look.sun
  cos_s = np.clip(normals @ sun_dir, 0.0, None)
  if shadows:
    cos_s = cos_s * _visibility(points, np.broadcast_to(sun_dir, points.shape),
                                np.full(len(points), np.inf), 0.05, centres, radii, skip)
  e += (strength * cos_s)[:, None]
  return e


def _contact(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, skip) -> np.ndarray:
  """Ambient occlusion near objects' bases, in [0, 1] (1: open)."""
  ao = np.ones(len(points))
  for k in range(len(radii)):
    d = np.linalg.norm(points - centres[k] * [1, 1, 0], axis=1)
    ao *= np.where(skip == k, 1.0, 1.0 - 0.5 * np.clip(radii[k] / np.maximum(d, 1e-3), 0, 1)**3)
  return ao


def _ground_radiance(points, look: _Look, centres, radii, *, shadows: bool = True):
  """Linear radiance [P, 3] of ground points."""
  normals = np.broadcast_to([0.0, 0.0, 1.0], points.shape)
  skip = np.full(len(points), -1)
  e = _direct(points, normals, look, centres, radii, skip, shadows=shadows)
  ao = _contact(points, centres, radii, skip) if shadows else 1.0
  return look.ground / math.pi * (e + look.ambient * math.pi * np.asarray(ao)[..., None])


def srgb(linear: np.ndarray) -> np.ndarray:
  """Blender's "Standard" view: the sRGB transfer curve, clipped to [0, 1]."""
  x = np.clip(linear, 0.0, 1.0)
  return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _ground_image(camera, look: _Look, centres, radii, w: int, h: int) -> np.ndarray:
  """Linear radiance [h, w, 3] of the ground seen through a w x h grid (objects left out)."""
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  d = camera.rays((xs * camera.width / w).ravel(), (ys * camera.height / h).ravel())
  o = camera.location
  t = -o[2] / np.minimum(d[:, 2], -1e-3)  # Rays at or above the horizon: the far ground.
  return _ground_radiance(o + t[:, None] * d, look, centres, radii).reshape(h, w, 3)


def _upsample(image: np.ndarray, w: int, h: int) -> np.ndarray:
  """Bilinear interpolation of [h0, w0, C] pixel centres onto a w x h grid's."""
  h0, w0 = image.shape[:2]
  def axis(n0, n):
    x = np.clip((np.arange(n) + 0.5) * n0 / n - 0.5, 0, n0 - 1)
    i = np.minimum(x.astype(int), n0 - 2)
    return i, (x - i)
  iy, fy = axis(h0, h)
  ix, fx = axis(w0, w)
  top = image[iy][:, ix] * (1 - fx)[None, :, None] + image[iy][:, ix + 1] * fx[None, :, None]
  bottom = (image[iy + 1][:, ix] * (1 - fx)[None, :, None]
            + image[iy + 1][:, ix + 1] * fx[None, :, None])
  return top * (1 - fy)[:, None, None] + bottom * fy[:, None, None]


def shade(scene: dict, opts: RenderOptions, rng: np.random.Generator | None = None
          ) -> np.ndarray:
  """Draws a scene's 3:2 frame at ``supersample * image_size`` pixels high.

  Args:
    scene: A scene of `experiments.clevr.generator.sample_scene` (or a CLEVR scene record; the
      base camera and lamps are used where it has none).
    opts: Renderer settings.
    rng: Random stream of the domain randomisation (unused when ``opts.randomize`` is 0).

  Returns:
    sRGB values in [0, 1] of shape [H, 1.5 H, 3].
  """
  h = opts.supersample * opts.image_size
  w = int(round(1.5 * h))
  look = _Look(scene, opts, rng)
  camera = generator.scene_camera(scene)
  objects = scene["objects"]
  # The bounce light: a fraction of the irradiance on the open ground under the scene's centre.
  look.bounce = opts.bounce * _direct(np.zeros((1, 3)), np.array([[0.0, 0.0, 1.0]]), look,
                                      np.zeros((0, 3)), np.zeros(0), np.full(1, -1))[0]
  ids, depth, normals = generator.cast_grid(camera, objects, w, h, rounded=opts.rounded)
  ids, depth, normals = ids.ravel(), depth.ravel(), normals.reshape(-1, 3)
  ys, xs = np.mgrid[0:h, 0:w] + 0.5
  xs, ys = (xs * camera.width / w).ravel(), (ys * camera.height / h).ravel()
  o = camera.location
  centres, radii = _occluders(objects)
  # The ground (every ray of this camera meets it), smooth enough to shade at half the
  # resolution and interpolate.
  colour = _upsample(_ground_image(camera, look, centres, radii, w // 2, h // 2), w, h)
  colour = colour.reshape(-1, 3)
  # Objects.
  for k, obj in enumerate(objects):
    mine = np.flatnonzero(ids == k)
    if not len(mine):
      continue
    n = normals[mine].astype(np.float64)
    view = camera.rays(xs[mine], ys[mine]).astype(np.float64)
    pts = o + depth[mine, None] * view + 1e-3 * n
    albedo = look.albedo(obj["color"])
    skip = np.full(len(mine), k)
    e = _direct(pts, n, look, centres, radii, skip)
    refl = view - 2 * np.einsum("pi,pi->p", view, n)[:, None] * n
    cos_v = np.clip(-np.einsum("pi,pi->p", view, n), 0.0, 1.0)
    spec = np.zeros((len(mine), 3))
    for location, power, _ in look.lamps:
      to_lamp = location - pts
      dist = np.linalg.norm(to_lamp, axis=1)
      to_lamp /= dist[:, None]
      hv = to_lamp - view
      hv /= np.linalg.norm(hv, axis=1, keepdims=True)
      nh = np.clip(np.einsum("pi,pi->p", n, hv), 0.0, 1.0)
      lobe = (nh**60 * look.metal_lobes[0] + nh**600 * look.metal_lobes[1]
              if obj["material"] == "metal" else nh**30 * 0.6)
      facing = -location / np.linalg.norm(location)
      spec += (lobe * np.clip(-to_lamp @ facing, 0, None) / (math.pi * dist**2))[:, None] * power
    # Light bounced off the ground onto the object's lower side.
    e = e + np.clip(0.5 * (1 - n[:, 2]), 0, 1)[:, None] * look.bounce
    if obj["material"] == "rubber":
      fresnel = 0.04 + 0.96 * (1 - cos_v) ** 5
      colour[mine] = (albedo / math.pi * (e + look.ambient * math.pi)
                      + 0.08 * spec + (0.15 * fresnel)[:, None] * albedo * look.ambient * 3)
    else:
      # The reflected ray: the lit ground below the horizon, the dim surroundings above it.
      with np.errstate(divide="ignore", invalid="ignore"):
        tr = np.where(refl[:, 2] < -1e-3, -pts[:, 2] / refl[:, 2], np.inf)
      hit = np.isfinite(tr)
      env = np.zeros((len(mine), 3))
      if hit.any():
        q = pts[hit] + tr[hit, None] * refl[hit]
        env[hit] = _ground_radiance(q, look, centres, radii, shadows=False)
      far = _ground_radiance(np.array([[0.0, 12.0, 0.0]]), look, centres, radii,
                             shadows=False)[0]
      up = np.clip(refl[:, 2], 0.0, 1.0)[:, None]
      env[~hit] = (far * look.env_up * (1 - up) ** 4)[~hit]
      # Rough reflections: partly blurred to the object's mean.
      env = (1 - look.metal_blur) * env + look.metal_blur * env.mean(axis=0)
      colour[mine] = albedo * (look.metal_env * env + 0.08 * e / math.pi + spec)
  if look.noise:
    colour *= np.exp(look.noise * rng.standard_normal((len(colour), 1)))
  return srgb(colour).reshape(h, w, 3)


def to_square(frame: np.ndarray, image_size: int) -> np.ndarray:
  """The loaders' resize of a frame in [0, 1] to uint8 [S, S, 3] (bilinear, no crop)."""
  image = PIL.Image.fromarray(np.clip(np.round(frame * 255), 0, 255).astype(np.uint8))
  return np.asarray(image.resize((image_size, image_size), PIL.Image.BILINEAR), np.uint8)


def render_scene(rng: np.random.Generator, opts: RenderOptions) -> tuple[np.ndarray, list[dict],
                                                                         dict]:
  """Samples and draws one scene.

  Args:
    rng: The scene's random generator (the scene is a pure function of its state; the
      randomisation draws from a stream spawned from it after the scene is sampled).
    opts: Renderer settings.

  Returns:
    The image as uint8 of shape [S, S, 3], the CLEVR ``objects`` list (``pixel_coords`` in the
    square image's pixels), and the scene (with its ``directions``, camera and lamps).
  """
  scene_opts = generator.SceneOptions(min_objects=opts.min_objects,
                                      max_objects=opts.max_objects)
  scene = generator.sample_scene(rng, scene_opts)
  image = to_square(shade(scene, opts, np.random.default_rng(rng.integers(2**63))),
                    opts.image_size)
  objects = []
  for obj in scene["objects"]:
    x, y, depth = obj["pixel_coords"]
    objects.append(dict(obj, pixel_coords=[
      round(x * opts.image_size / generator.WIDTH, 3),
      round(y * opts.image_size / generator.HEIGHT, 3), depth]))
  return image, objects, scene


# --- Writing a dataset in the CLEVR v1.0 layout. ---------------------------------------------

GENERATOR_NAME = "idspn_jax synthetic CLEVR"
_MARKER = ".idspn_synthetic"


def _split_key(split: str) -> int:
  return zlib.crc32(split.encode("utf-8"))


def _render_one(job: tuple[str, int, int, RenderOptions, str]) -> dict:
  """Renders image ``index`` of ``split`` into ``folder`` and returns its scene record."""
  split, index, seed, opts, folder = job
  rng = np.random.default_rng([seed, _split_key(split), index])
  image, objects, scene = render_scene(rng, opts)
  filename = f"CLEVR_{split}_{index:06d}.png"
  PIL.Image.fromarray(image).save(os.path.join(folder, filename), compress_level=1)
  return {
    "split": split, "image_index": index, "image_filename": filename,
    "objects": objects, "directions": scene["directions"],
    "camera_location": scene["camera_location"], "lamp_locations": scene["lamp_locations"],
  }


def _scenes_path(root: str, split: str) -> str:
  return os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json")


def _expected_info(split: str, count: int, seed: int, opts: RenderOptions) -> dict:
  return {
    "generator": GENERATOR_NAME, "split": split, "version": "2.0", "num_images": count,
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
  flags.DEFINE_enum("engine", "numpy", ["numpy", "blender"],
                    "numpy: this module's renderer; blender: Blender with CLEVR's official "
                    "assets (experiments.clevr.blender).")
  flags.DEFINE_string("root", "data/clevr_synth", "Dataset folder.")
  flags.DEFINE_integer("train", 5000, "Training images (0: none).")
  flags.DEFINE_integer("val", 500, "Validation images (0: none).")
  flags.DEFINE_integer("seed", 0, "Dataset seed (scene i of a split is the same for both "
                       "engines).")
  flags.DEFINE_integer("workers", None, "Render processes (numpy default: every CPU; blender "
                       "default: 1, with every CPU's thread).")
  flags.DEFINE_bool("overwrite", False, "Re-render splits made with other settings.")
  # numpy only.
  flags.DEFINE_integer("image_size", 128, "numpy: side of the square images in pixels.")
  flags.DEFINE_float("randomize", RenderOptions.randomize,
                     "numpy: strength of the domain randomisation (0: none).")
  # blender only.
  flags.DEFINE_string("assets", None, "blender: CLEVR's assets folder (base_scene.blend, "
                      "shapes/, materials/, properties.json).")
  flags.DEFINE_string("blender", None, "blender: the Blender executable (default: blender on "
                      "PATH).")
  flags.DEFINE_integer("samples", 16, "blender: Cycles samples per pixel (CLEVR v1.0: 512).")
  flags.DEFINE_integer("width", generator.WIDTH, "blender: image width in pixels (CLEVR v1.0: "
                       "480; the scenes are CLEVR's at 480 x 320 whatever the size).")
  flags.DEFINE_integer("height", generator.HEIGHT, "blender: image height in pixels (CLEVR "
                       "v1.0: 320).")
  flags.DEFINE_string("scenes", None, "blender: render this CLEVR scene file's scenes into "
                      "--out instead of sampling splits.")
  flags.DEFINE_string("out", None, "blender: the folder for --scenes' images.")
  flags.DEFINE_integer("limit", None, "blender: render only the first this many of --scenes.")
  flags.DEFINE_string("export", None, "blender: also write a copy of the splits resized to "
                      "--export_size squares here (as the loaders resize them).")
  flags.DEFINE_integer("export_size", 128, "blender: the side of --export's images.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS
  splits = {k: v for k, v in (("train", f.train), ("val", f.val)) if v}
  if f.engine == "blender":
    from experiments.clevr import blender

    if not f.assets:
      raise app.UsageError("--engine=blender needs --assets=<CLEVR's assets folder>")
    blender.cli(root=f.root, splits=splits, seed=f.seed, assets=f.assets, samples=f.samples,
                workers=f.workers or 1, blender=f.blender, scenes_file=f.scenes, out=f.out,
                overwrite=f.overwrite, limit=f.limit, width=f.width, height=f.height)
    if f.export:
      for split in splits:
        blender.export_resized(f.root, split, f.export, image_size=f.export_size)
        logging.info("Wrote %s resized to %d px into %s.", split, f.export_size, f.export)
    return
  counts = render_dataset(f.root, splits=splits, image_size=f.image_size, seed=f.seed,
                          num_workers=f.workers, overwrite=f.overwrite,
                          options=RenderOptions(randomize=f.randomize))
  logging.info("Rendered per split (0 = already complete): %s", counts)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
