"""CLEVR v1.0's scene sampling, with the camera of CLEVR's own ``base_scene.blend``.

Both renderers draw the scenes sampled here: the NumPy one (`experiments.clevr.render`) and the
Blender one (`experiments.clevr.blender`, CLEVR's official assets). A scene is a pure function of
its random generator:

- the camera's location is jittered by U[-0.5, 0.5] per axis and each of the three area lamps'
  by U[-1, 1]; camera and lamps keep facing the origin (their Track To constraints), so the
  cardinal directions turn with the camera;
- 3 to 10 objects of uniform size, shape, colour and material; centres ``(x, y)`` ~ U[-3, 3]
  rejected when the gap between two objects (centre distance minus both radii) is under 0.25,
  or when the offset between two centres along the camera's left or behind direction (projected
  onto the ground) is under 0.4 in magnitude; 50 failed tries for one object place the whole
  scene again;
- rotation ``360 * U[0, 1)`` about z (CLEVR writes it into a radians field, so the angle drawn is
  that many radians);
- every object must show at least 200 pixels at 480 x 320 in a render of the objects alone
  (here an exact ray cast of their shapes, see `visible_pixels`), otherwise the objects are
  placed again under the same camera and lamps.

An object of CLEVR size ``r`` (0.7 large, 0.35 small) is its unit shape (extent [-1, 1]) scaled
by ``s = r`` (``r / sqrt(2)`` for cubes) and resting on the ground: centre ``(x, y, s)``, which
is ``3d_coords``. ``pixel_coords`` are ``[x, y, depth]`` in the 480 x 320 frame (x right, y down
from the top-left, rounded to whole pixels as CLEVR's are; depth along the camera's axis).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

# CLEVR's properties (properties.json of the official assets).
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
SHAPES = ("cube", "sphere", "cylinder")
MATERIALS = ("rubber", "metal")
# Blender object and node-group names of the official assets.
SHAPE_ASSETS = {"cube": "SmoothCube_v2", "sphere": "Sphere", "cylinder": "SmoothCylinder"}
MATERIAL_ASSETS = {"rubber": "Rubber", "metal": "MyMetal"}

# The stage of base_scene.blend (read from the file with Blender 3.4; the Blender smoke test
# checks them against it).
CAMERA_LOCATION = (7.481131553649902, -6.5076398849487305, 5.34366512298584)
# The camera's rotation as saved (Euler XYZ); its Track To constraint on the origin overrides it.
CAMERA_ROTATION = (1.1093189716339111, 0.010816991329193115, 0.8149281740188599)
CAMERA_LENS_MM = 35.0
CAMERA_SENSOR_MM = 32.0  # Fitted to the wider (horizontal) side.
LAMP_LOCATIONS = {
  "Lamp_Key": (6.446710109710693, -2.905174732208252, 4.258398056030273),
  "Lamp_Back": (-1.168501377105713, 2.646024465560913, 5.815736770629883),
  "Lamp_Fill": (-4.671124458312988, -4.01359748840332, 3.0112245082855225),
}
WIDTH, HEIGHT = 480, 320


@dataclasses.dataclass(frozen=True)
class SceneOptions:
  """CLEVR v1.0's sampling settings (the generator's published defaults).

  Attributes:
    min_objects, max_objects: Objects per scene, both inclusive.
    min_dist: Least gap between two objects (centre distance minus both radii).
    margin: Least offset of two centres along each cardinal direction.
    min_pixels: Least visible pixels of every object at ``width`` x ``height``.
    camera_jitter: Half-width of the camera location's uniform jitter, per axis.
    lamp_jitter: Half-width of each lamp location's uniform jitter, per axis.
    width, height: The frame the visibility test and ``pixel_coords`` use.
    max_tries: Tries to place one object before the whole scene is placed again.
  """

  min_objects: int = 3
  max_objects: int = 10
  min_dist: float = 0.25
  margin: float = 0.4
  min_pixels: int = 200
  camera_jitter: float = 0.5
  lamp_jitter: float = 1.0
  width: int = WIDTH
  height: int = HEIGHT
  max_tries: int = 50


def euler_xyz(angles) -> np.ndarray:
  """Blender's rotation matrix of Euler angles in "XYZ" mode (x applied first)."""
  ax, ay, az = angles
  cx, sx, cy, sy, cz, sz = (math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay),
                            math.cos(az), math.sin(az))
  rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
  ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
  rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
  return rz @ ry @ rx


def track_to(location, target=(0.0, 0.0, 0.0)) -> np.ndarray:
  """Rotation [3, 3] of Blender's "Track To" (-z towards the target, y up, no roll)."""
  back = np.asarray(location, np.float64) - np.asarray(target, np.float64)
  back /= np.linalg.norm(back)
  right = np.cross([0.0, 0.0, 1.0], back)
  right /= np.linalg.norm(right)
  return np.stack([right, np.cross(back, right), back], axis=1)


class Camera:
  """Blender's perspective camera, tracking the origin as base_scene.blend's camera does.

  In base_scene.blend the camera (and each lamp) has a "Track To" constraint on an empty at the
  origin (its -z towards the target, its y up), so after the location jitter it still looks at
  the origin, with no roll. Its local -z is the view direction, +x points right and +y up in the
  image; the sensor is fitted to the wider side.

  Attributes:
    location: [3] world position.
    rotation: [3, 3] local-to-world rotation (columns: right, up, backwards).
    width, height: The image frame in pixels.
    focal: Focal length in pixels.
  """

  def __init__(self, location=CAMERA_LOCATION, *, target=(0.0, 0.0, 0.0), width: int = WIDTH,
               height: int = HEIGHT, lens: float = CAMERA_LENS_MM,
               sensor: float = CAMERA_SENSOR_MM):
    self.location = np.asarray(location, np.float64)
    self.rotation = track_to(self.location, target)
    self.width, self.height = int(width), int(height)
    self.focal = lens / sensor * max(self.width, self.height)

  @property
  def right(self) -> np.ndarray:
    return self.rotation[:, 0]

  @property
  def up(self) -> np.ndarray:
    return self.rotation[:, 1]

  @property
  def forward(self) -> np.ndarray:
    return -self.rotation[:, 2]

  def project(self, point) -> tuple[float, float, float]:
    """Continuous pixel x (right), pixel y (down from the top) and depth of a world point."""
    local = self.rotation.T @ (np.asarray(point, np.float64) - self.location)
    depth = -local[2]
    x = 0.5 * self.width + self.focal * local[0] / depth
    y = 0.5 * self.height - self.focal * local[1] / depth
    return float(x), float(y), float(depth)

  def rays(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Unit world directions of rays through image points (continuous pixel coordinates).

    Args:
      xs: [P] x positions (pixel j spans j .. j + 1).
      ys: [P] y positions, down from the top.

    Returns:
      [P, 3] float32 unit directions.
    """
    local = np.stack([xs - 0.5 * self.width, 0.5 * self.height - ys,
                      np.full(np.shape(xs), -self.focal)], axis=-1)
    d = local @ self.rotation.T
    return (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)

  def directions(self) -> dict[str, list[float]]:
    """CLEVR's ``directions``: the camera's view axis (behind) and -x (left) on the ground."""
    def ground(v):
      v = np.array([v[0], v[1], 0.0])
      return v / np.linalg.norm(v)
    behind, left = ground(self.forward), ground(-self.right)
    as_list = lambda v: [round(float(c), 6) for c in v]
    return {
      "behind": as_list(behind), "front": as_list(-behind), "left": as_list(left),
      "right": as_list(-left), "above": [0.0, 0.0, 1.0], "below": [0.0, 0.0, -1.0],
    }


def object_scale(shape: str, size: str) -> float:
  """The factor the unit shape is scaled by (= the centre's height above the ground)."""
  r = SIZES[size]
  return r / math.sqrt(2) if shape == "cube" else r


def bounding_radius(shape: str, scale: float) -> float:
  """Radius of a sphere around the object's centre that holds the whole object."""
  return scale * (math.sqrt(3) if shape == "cube" else math.sqrt(2) if shape == "cylinder" else 1)


# The radius of the rounded edges of CLEVR's SmoothCube_v2 and SmoothCylinder, as a fraction of
# the unit shape (their flat faces end at 0.80 and 0.94 of the half-size).
ROUNDING = {"cube": 0.2, "cylinder": 0.06}


def _rounded_sdf(shape: str, p: np.ndarray, r: float) -> np.ndarray:
  """Signed distance [Q] from local points [Q, 3] to the rounded cube or cylinder of scale r."""
  rb = ROUNDING[shape] * r
  if shape == "cube":
    q = np.abs(p) - (r - rb)
    return np.linalg.norm(np.maximum(q, 0.0), axis=1) + np.minimum(q.max(axis=1), 0.0) - rb
  dx = np.hypot(p[:, 0], p[:, 1]) - (r - rb)
  dz = np.abs(p[:, 2]) - (r - rb)
  return (np.minimum(np.maximum(dx, dz), 0.0)
          + np.hypot(np.maximum(dx, 0.0), np.maximum(dz, 0.0)) - rb)


def _round_edges(shape: str, lo: np.ndarray, ld: np.ndarray, t: np.ndarray, r: float
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Moves sharp-shape hits onto the rounded shape inside it, by sphere tracing its distance.

  Returns hit distances [P] (inf where the ray passes by a rounded edge) and local normals
  [P, 3] (the distance's gradient) for the rays that hit.
  """
  idx = np.flatnonzero(np.isfinite(t))
  tt = t[idx].copy()
  for _ in range(40):
    dist = _rounded_sdf(shape, lo + tt[:, None] * ld[idx], r)
    tt += dist
  pts = lo + tt[:, None] * ld[idx]
  hit = np.abs(_rounded_sdf(shape, pts, r)) < 1e-3 * r
  out = np.full(len(t), np.inf)
  out[idx[hit]] = tt[hit]
  eps = 1e-4 * r
  grad = np.stack([
    _rounded_sdf(shape, pts + e, r) - _rounded_sdf(shape, pts - e, r)
    for e in np.eye(3) * eps], axis=1)  # [Q, 3]
  normal = np.zeros((len(t), 3))
  normal[idx] = grad
  return out, normal


def intersect(shape: str, origin: np.ndarray, d: np.ndarray, centre: np.ndarray, scale: float,
              theta: float, *, rounded: bool = False) -> tuple[np.ndarray, np.ndarray]:
  """Ray hits against one object.

  Sharp cube and cylinder edges by default (CLEVR's visibility test here); ``rounded`` gives
  them the rounded edges of CLEVR's meshes (``ROUNDING``), for drawing.

  Args:
    shape: "sphere", "cube" or "cylinder".
    origin: Ray origin of shape [3].
    d: Unit ray directions of shape [P, 3].
    centre: Object centre of shape [3].
    scale: The unit shape's scale: sphere radius, cube half-side, cylinder radius and
      half-height.
    theta: Rotation about z in radians.

  Returns:
    Hit distance of shape [P] (inf where missed) and world unit normal of shape [P, 3].
  """
  c, s = math.cos(theta), math.sin(theta)
  rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])  # Local to world.
  lo = (origin - centre) @ rot  # [3], origin in the object's frame.
  ld = d @ rot  # [P, 3]
  p = ld.shape[0]
  t = np.full(p, np.inf)
  normal = np.zeros((p, 3))
  r = scale
  if shape == "sphere":
    b = ld @ lo  # [P]
    disc = b * b - (lo @ lo - r * r)
    hit = disc > 0
    t[hit] = -b[hit] - np.sqrt(disc[hit])
    t[t <= 0] = np.inf
    normal = lo + np.where(np.isfinite(t), t, 0.0)[:, None] * ld  # [P, 3]
  elif shape == "cube":
    with np.errstate(divide="ignore", invalid="ignore"):
      inv = 1.0 / ld  # [P, 3]
      t1, t2 = (-r - lo) * inv, (r - lo) * inv
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)  # [P, 3]
    near, far = tmin.max(axis=1), tmax.min(axis=1)
    hit = (near <= far) & (near > 0)
    t[hit] = near[hit]
    axis = tmin.argmax(axis=1)
    normal[np.arange(p), axis] = -np.sign(ld[np.arange(p), axis])
  elif shape == "cylinder":
    qa = ld[:, 0] ** 2 + ld[:, 1] ** 2
    qb = ld[:, 0] * lo[0] + ld[:, 1] * lo[1]
    disc = qb * qb - qa * (lo[0] ** 2 + lo[1] ** 2 - r * r)
    with np.errstate(divide="ignore", invalid="ignore"):
      side = np.where(disc > 0, (-qb - np.sqrt(np.maximum(disc, 0))) / qa, np.inf)
      cap_t = (np.sign(lo[2]) * r - lo[2]) / ld[:, 2]  # The cap facing the camera.
    side_z = lo[2] + side * ld[:, 2]
    side = np.where((side > 0) & (np.abs(side_z) <= r), side, np.inf)
    cap_xy = lo[:2] + cap_t[:, None] * ld[:, :2]
    cap = np.where((cap_t > 0) & ((cap_xy**2).sum(axis=1) <= r * r), cap_t, np.inf)
    t = np.minimum(side, cap)
    on_side = side <= cap
    pts = lo + np.where(np.isfinite(t), t, 0.0)[:, None] * ld
    normal = np.where(on_side[:, None], pts * [1.0, 1.0, 0.0], [0.0, 0.0, np.sign(lo[2])])
  else:
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
  if rounded and shape in ROUNDING:
    t, rounded_normal = _round_edges(shape, lo, ld, t, r)
    normal = np.where(np.isfinite(t)[:, None], rounded_normal, normal)
  normal = normal / np.maximum(np.linalg.norm(normal, axis=1, keepdims=True), 1e-9)
  return t, normal @ rot.T


def object_centre(obj: dict) -> np.ndarray:
  return np.asarray(obj["3d_coords"], np.float64)


def cast_grid(camera: Camera, objects: list[dict], width: int, height: int, *,
              rounded: bool = False):
  """Ray casts the objects through the pixel centres of a ``width`` x ``height`` grid.

  The grid covers the camera's frame (so a grid of another aspect squeezes it). Rays are cast
  only inside each object's screen rectangle. ``rounded``: with the meshes' rounded edges.

  Returns:
    Nearest object id [H, W] (-1: none), hit distance [H, W] (inf: none) and unit normal
    [H, W, 3] (float32).
  """
  sx, sy = camera.width / width, camera.height / height
  depth = np.full((height, width), np.inf)
  ids = np.full((height, width), -1)
  normals = np.zeros((height, width, 3), np.float32)
  for k, obj in enumerate(objects):
    centre = object_centre(obj)
    scale = object_scale(obj["shape"], obj["size"])
    px, py, dist = camera.project(centre)
    bound = bounding_radius(obj["shape"], scale)
    if dist <= bound:
      raise ValueError(f"object {k} at {centre.tolist()} is too near the camera")
    reach = camera.focal * bound / (dist - bound) + 2
    x0, x1 = max(int((px - reach) / sx), 0), min(int((px + reach) / sx) + 1, width)
    y0, y1 = max(int((py - reach) / sy), 0), min(int((py + reach) / sy) + 1, height)
    if x0 >= x1 or y0 >= y1:
      continue
    ys, xs = np.mgrid[y0:y1, x0:x1] + 0.5
    d = camera.rays((xs * sx).ravel(), (ys * sy).ravel())
    t, n = intersect(obj["shape"], camera.location, d, centre, scale, obj["rotation"],
                     rounded=rounded)
    t, n = t.reshape(y1 - y0, x1 - x0), n.reshape(y1 - y0, x1 - x0, 3)
    front = t < depth[y0:y1, x0:x1]
    depth[y0:y1, x0:x1][front] = t[front]
    ids[y0:y1, x0:x1][front] = k
    normals[y0:y1, x0:x1][front] = n[front]
  return ids, depth, normals


def visible_pixels(camera: Camera, objects: list[dict]) -> np.ndarray:
  """Pixels of the camera's frame where each object is the nearest surface: [K] counts."""
  ids, _, _ = cast_grid(camera, objects, camera.width, camera.height)
  return np.bincount(ids.ravel() + 1, minlength=len(objects) + 1)[1:]


def _place(rng: np.random.Generator, n: int, opts: SceneOptions, axes) -> list[dict] | None:
  """Draws n objects under the spacing rules, or None after max_tries fails for one object."""
  objects: list[dict] = []
  placed: list[tuple[float, float, float]] = []  # (x, y, r), cubes' r / sqrt(2) as CLEVR keeps.
  for _ in range(n):
    size = ("large", "small")[rng.integers(2)]
    r = SIZES[size]
    for _ in range(opts.max_tries):
      x, y = (float(v) for v in rng.uniform(-3, 3, size=2))
      ok = True
      for px, py, pr in placed:
        dx, dy = x - px, y - py
        if math.hypot(dx, dy) - r - pr < opts.min_dist or any(
            abs(dx * a[0] + dy * a[1]) < opts.margin for a in axes):
          ok = False
          break
      if ok:
        break
    else:
      return None
    shape = SHAPES[rng.integers(3)]
    scale = object_scale(shape, size)
    placed.append((x, y, scale))
    objects.append({
      "shape": shape, "size": size,
      "material": MATERIALS[rng.integers(2)],
      "color": tuple(COLORS_RGB)[rng.integers(len(COLORS_RGB))],
      "3d_coords": [x, y, scale],
      "rotation": 360.0 * float(rng.random()),
    })
  return objects


def sample_scene(rng: np.random.Generator, opts: SceneOptions = SceneOptions()) -> dict:
  """Samples one scene as CLEVR's generator does.

  Returns:
    ``{"objects": [...], "directions": {...}, "camera_location": [3], "lamp_locations":
    {lamp: [3]}}``; each object has CLEVR's ``shape``, ``size``, ``material``, ``color``,
    ``3d_coords``, ``rotation`` and ``pixel_coords`` fields. The camera and lamp fields are not
    CLEVR's: they let both renderers draw the same scene again.
  """
  jitter = lambda half, n: rng.uniform(-half, half, size=n)
  camera_location = np.asarray(CAMERA_LOCATION) + jitter(opts.camera_jitter, 3)
  lamps = {name: [float(v) for v in np.asarray(loc) + jitter(opts.lamp_jitter, 3)]
           for name, loc in LAMP_LOCATIONS.items()}
  camera = Camera(camera_location, width=opts.width, height=opts.height)
  directions = camera.directions()
  axes = [directions["behind"][:2], directions["left"][:2]]
  n = int(rng.integers(opts.min_objects, opts.max_objects + 1))
  while True:
    objects = _place(rng, n, opts, axes)
    if objects is None:
      continue
    if visible_pixels(camera, objects).min() >= opts.min_pixels:
      break
  for obj in objects:
    x, y, depth = camera.project(obj["3d_coords"])
    obj["pixel_coords"] = [int(round(x)), int(round(y)), round(depth, 6)]
    obj["3d_coords"] = [round(v, 6) for v in obj["3d_coords"]]
  return {
    "objects": objects, "directions": directions,
    "camera_location": [round(float(v), 6) for v in camera_location],
    "lamp_locations": {k: [round(v, 6) for v in loc] for k, loc in lamps.items()},
  }


def scene_camera(scene: dict, *, width: int = WIDTH, height: int = HEIGHT) -> Camera:
  """The camera a scene was sampled under (the base camera for scenes without the field)."""
  return Camera(scene.get("camera_location", CAMERA_LOCATION), width=width, height=height)
