"""CLEVR v1.0's scene sampling (`experiments.clevr.generator`) and its scene files; no Blender.

The Blender values below were read from CLEVR's base_scene.blend with Blender 3.4 at 480 x 320
(``bpy_extras.object_utils.world_to_camera_view``); tests/experiments/clevr/test_clevr_blender.py
reads them again where Blender is installed.
"""

import collections
import json
import math
import os

import numpy as np
import PIL.Image
import pytest

from experiments.clevr import blender as cb
from experiments.clevr import data as cd
from experiments.clevr import generator as g
from experiments.clevr import scenes as cs

NUM_SCENES = 120  # About 5 s of sampling and ray casting.


@pytest.fixture(scope="module")
def many_scenes() -> list[dict]:
  """Scenes of CLEVR's default rules, as `render_split` samples them."""
  return cb.sample_split("train", NUM_SCENES, seed=0)


def _gap_rule_radius(obj: dict) -> float:
  """The radius CLEVR keeps for a placed object (a cube's r / sqrt(2), as its centre height)."""
  return g.object_scale(obj["shape"], obj["size"])


def test_object_counts_span_3_to_10_roughly_uniformly(many_scenes):
  counts = collections.Counter(len(s["objects"]) for s in many_scenes)
  assert set(counts) == set(range(3, 11)), counts
  # Chi-square against uniform on 8 values (7 degrees of freedom; 24.3 is p = 0.001).
  expected = NUM_SCENES / 8
  chi2 = sum((counts[n] - expected) ** 2 / expected for n in range(3, 11))
  assert chi2 < 24.3, counts


def test_every_pair_keeps_clevr_gap_and_margins(many_scenes):
  checked = 0
  for scene in many_scenes:
    directions = {k: np.asarray(v) for k, v in scene["directions"].items()}
    objects = scene["objects"]
    for j, later in enumerate(objects):
      for earlier in objects[:j]:
        d = np.subtract(later["3d_coords"][:2], earlier["3d_coords"][:2])
        # CLEVR tests a new object with its size's r against the placed ones' kept radius.
        gap = np.hypot(*d) - g.SIZES[later["size"]] - _gap_rule_radius(earlier)
        assert gap >= 0.25 - 1e-5, (scene["image_filename"], gap)
        for name in ("behind", "front", "left", "right"):
          assert abs(d @ directions[name][:2]) >= 0.4 - 1e-5, (scene["image_filename"], name)
        checked += 1
  assert checked > 1000


def test_objects_have_clevr_attributes_coordinates_and_rotations(many_scenes):
  seen = collections.defaultdict(set)
  for scene in many_scenes:
    for obj in scene["objects"]:
      assert set(obj) == {"shape", "size", "material", "color", "3d_coords", "rotation",
                          "pixel_coords"}
      for attr, allowed in (("shape", g.SHAPES), ("size", g.SIZES), ("material", g.MATERIALS),
                            ("color", g.COLORS_RGB)):
        assert obj[attr] in allowed
        seen[attr].add(obj[attr])
      x, y, z = obj["3d_coords"]
      assert -3 <= x <= 3 and -3 <= y <= 3
      r = g.SIZES[obj["size"]]
      assert z == pytest.approx(r / math.sqrt(2) if obj["shape"] == "cube" else r, abs=1e-6)
      assert 0 <= obj["rotation"] < 360
  assert {k: len(v) for k, v in seen.items()} == {"shape": 3, "size": 2, "material": 2,
                                                  "color": 8}


def test_every_object_shows_200_pixels_and_pixel_coords_are_its_projection(many_scenes):
  for scene in many_scenes:
    camera = g.scene_camera(scene)
    assert (g.visible_pixels(camera, scene["objects"]) >= 200).all(), scene["image_filename"]
    for obj in scene["objects"]:
      x, y, depth = camera.project(obj["3d_coords"])
      px, py, pdepth = obj["pixel_coords"]
      assert isinstance(px, int) and isinstance(py, int)  # Whole pixels, as CLEVR's.
      assert (px, py) == (int(round(x)), int(round(y)))
      assert pdepth == pytest.approx(depth, abs=1e-5) and depth > 0
      assert 0 <= px <= g.WIDTH and 0 <= py <= g.HEIGHT


def test_camera_and_lamps_are_jittered_within_clevr_bounds(many_scenes):
  cams = np.array([s["camera_location"] for s in many_scenes])
  offsets = cams - np.asarray(g.CAMERA_LOCATION)
  assert np.abs(offsets).max() <= 0.5 and np.abs(offsets).max() > 0.45
  assert len(np.unique(cams[:, 0])) == NUM_SCENES
  for name, base in g.LAMP_LOCATIONS.items():
    lamps = np.array([s["lamp_locations"][name] for s in many_scenes]) - np.asarray(base)
    assert np.abs(lamps).max() <= 1.0 and np.abs(lamps).max() > 0.9


def test_directions_are_the_cameras_ground_axes(many_scenes):
  for scene in many_scenes[:20]:
    d = {k: np.asarray(v) for k, v in scene["directions"].items()}
    for name in ("behind", "front", "left", "right"):
      assert np.linalg.norm(d[name]) == pytest.approx(1, abs=1e-5) and d[name][2] == 0
    assert d["left"] @ d["behind"] == pytest.approx(0, abs=1e-5)
    np.testing.assert_allclose(d["front"], -d["behind"], atol=1e-6)
    np.testing.assert_allclose(d["right"], -d["left"], atol=1e-6)
    assert d["above"].tolist() == [0, 0, 1] and d["below"].tolist() == [0, 0, -1]
    camera = g.scene_camera(scene)
    forward = camera.forward * [1, 1, 0]
    np.testing.assert_allclose(d["behind"], forward / np.linalg.norm(forward), atol=1e-5)
    # Left is the image's left: a point that way projects left of the centre.
    x, _, _ = camera.project(d["left"])
    x0, _, _ = camera.project([0.0, 0.0, 0.0])
    assert x < x0


def test_a_scene_is_a_pure_function_of_its_generator():
  a = g.sample_scene(np.random.default_rng(7))
  b = g.sample_scene(np.random.default_rng(7))
  c = g.sample_scene(np.random.default_rng(8))
  assert json.dumps(a) == json.dumps(b)
  assert json.dumps(a) != json.dumps(c)
  assert cb.sample_split("val", 3, seed=1) == cb.sample_split("val", 3, seed=1)
  assert cb.sample_split("val", 3, seed=1) != cb.sample_split("val", 3, seed=2)
  # Scene i depends on (seed, split, i) only, not on how many scenes are sampled.
  assert cb.sample_split("val", 3, seed=1)[:2] == cb.sample_split("val", 2, seed=1)
  assert cb.sample_split("val", 1, seed=1) != cb.sample_split("train", 1, seed=1)


def test_project_and_rays_are_inverse():
  rng = np.random.default_rng(0)
  for location in (g.CAMERA_LOCATION, (7.9, -6.1, 5.0)):
    camera = g.Camera(location, width=480, height=320)
    points = np.concatenate([rng.uniform(-3, 3, (50, 2)), rng.uniform(0, 1.5, (50, 1))], axis=1)
    projected = np.array([camera.project(p) for p in points])  # [P, 3]
    rays = camera.rays(projected[:, 0], projected[:, 1]).astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=1), 1, atol=1e-6)
    # The point lies on its ray, at its depth along the view axis.
    along = points - camera.location
    t = np.einsum("pi,pi->p", along, rays)
    np.testing.assert_allclose(camera.location + t[:, None] * rays, points, atol=1e-4)
    np.testing.assert_allclose(t * (rays @ camera.forward), projected[:, 2], rtol=1e-5)
    # And back: the ray's points project where the ray was cast.
    back = np.array([camera.project(camera.location + 5.0 * r) for r in rays])
    np.testing.assert_allclose(back[:, :2], projected[:, :2], atol=1e-3)


def test_camera_axes_are_orthonormal():
  for location in (g.CAMERA_LOCATION, (7.0, -7.0, 4.9)):
    camera = g.Camera(location)
    np.testing.assert_allclose(camera.rotation.T @ camera.rotation, np.eye(3), atol=1e-12)
    assert np.linalg.det(camera.rotation) == pytest.approx(1)
    assert camera.right[2] == pytest.approx(0, abs=1e-12)  # No roll.
    assert camera.up[2] > 0


# Blender 3.4, base_scene.blend at 480 x 320: the camera's matrix_world and
# world_to_camera_view (x * 480, (1 - y) * 320, depth) at its saved location and a jittered one.
BLENDER_FORWARD = (-0.6641793251037598, 0.5777521133422852, -0.4744137227535248)
BLENDER_RIGHT = (0.6563112735748291, 0.7544902563095093, 0.0)
BLENDER_JITTERED = (7.9, -6.1, 5.0)
BLENDER_JITTERED_ROTATION = ((0.6111623048782349, -0.35451117157936096, 0.707673966884613),
                             (0.7915053367614746, 0.27373644709587097, -0.5464317798614502),
                             (0.0, 0.8940861821174622, 0.4478949010372162))
BLENDER_VIEW = {
  None: {(0, 0, 0): (240.0, 160.0, 11.263723373413086),
         (1, 2, 0.35): (338.0910873413086, 134.04712677001953, 11.589003562927246),
         (-2.5, 2.9, 0.7): (260.1367950439453, 71.17206573486328, 14.267562866210938),
         (3, -3, 0.35): (219.02409553527832, 281.05419635772705, 7.371884346008301)},
  BLENDER_JITTERED: {
    (0, 0, 0): (240.0, 160.00000953674316, 11.163334846496582),
    (1, 2, 0.35): (341.12053871154785, 136.68550491333008, 11.39176082611084),
    (-2.5, 2.9, 0.7): (268.3671283721924, 74.76579666137695, 14.203645706176758),
    (3, -3, 0.35): (200.79095363616943, 273.9112186431885, 7.244253635406494)},
}


def test_camera_matches_blenders_camera_of_base_scene():
  camera = g.Camera()
  assert camera.focal == pytest.approx(35 / 32 * 480)  # Sensor fitted to the wider side.
  np.testing.assert_allclose(camera.forward, BLENDER_FORWARD, atol=1e-6)
  np.testing.assert_allclose(camera.right, BLENDER_RIGHT, atol=1e-6)
  np.testing.assert_allclose(g.Camera(BLENDER_JITTERED).rotation, BLENDER_JITTERED_ROTATION,
                             atol=1e-6)
  for location, views in BLENDER_VIEW.items():
    camera = g.Camera(g.CAMERA_LOCATION if location is None else location)
    for point, want in views.items():
      np.testing.assert_allclose(camera.project(point), want, atol=1e-3)
  # A point on the optical axis projects to the image centre, at its distance as depth.
  for camera in (g.Camera(), g.Camera(BLENDER_JITTERED, width=120, height=80)):
    x, y, depth = camera.project(camera.location + 9.0 * camera.forward)
    assert (x, y, depth) == pytest.approx((camera.width / 2, camera.height / 2, 9.0))
    # Image x grows to the camera's right, y downwards.
    assert camera.project(camera.location + 9 * camera.forward + camera.right)[0] > x
    assert camera.project(camera.location + 9 * camera.forward + camera.up)[1] < y


def test_a_smaller_frame_scales_the_projection():
  """Blender fits the sensor to the wider side, so 120 x 80 is 480 x 320 divided by 4."""
  big, small = g.Camera(BLENDER_JITTERED), g.Camera(BLENDER_JITTERED, width=120, height=80)
  for point in BLENDER_VIEW[None]:
    bx, by, bd = big.project(point)
    assert small.project(point) == pytest.approx((bx / 4, by / 4, bd))


def test_sample_split_projects_pixel_coords_into_a_given_frame():
  default = cb.sample_split("val", 4, seed=3)
  small = cb.sample_split("val", 4, seed=3, frame=(120, 80))
  for a, b in zip(default, small):
    assert [{k: v for k, v in o.items() if k != "pixel_coords"} for o in a["objects"]] == [
      {k: v for k, v in o.items() if k != "pixel_coords"} for o in b["objects"]]
    camera = g.scene_camera(b, width=120, height=80)
    for oa, ob in zip(a["objects"], b["objects"]):
      np.testing.assert_allclose(ob["pixel_coords"], camera.project(ob["3d_coords"]), atol=2e-3)
      np.testing.assert_allclose(np.array(ob["pixel_coords"][:2]) * 4, oa["pixel_coords"][:2],
                                 atol=0.51)
  assert cb.sample_split("val", 2, seed=3, frame=(480, 320)) == default[:2]


def _write_split(root: str, split: str, scenes: list[dict], size=(480, 320)) -> None:
  os.makedirs(os.path.join(root, "images", split))
  for i, scene in enumerate(scenes):
    PIL.Image.new("RGB", size, (10 * i, 20, 30)).save(
      os.path.join(root, "images", split, scene["image_filename"]))
  cb.write_scenes(os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json"),
                  {"split": split, "version": "1.0"}, scenes)


def test_sampled_split_is_a_clevr_scene_file(tmp_path):
  scenes = cb.sample_split("val", 5, seed=4)
  root = str(tmp_path)
  _write_split(root, "val", scenes)
  with open(os.path.join(root, "scenes", "CLEVR_val_scenes.json")) as f:
    data = json.load(f)
  assert data["info"]["split"] == "val"
  for i, scene in enumerate(data["scenes"]):
    assert scene["image_index"] == i and scene["split"] == "val"
    assert scene["image_filename"] == f"CLEVR_val_{i:06d}.png"
    assert set(scene["directions"]) == {"behind", "front", "left", "right", "above", "below"}
    assert len(scene["camera_location"]) == 3 and set(scene["lamp_locations"]) == set(
      g.LAMP_LOCATIONS)
  source = cd.ClevrFolderSource(root, "val")
  assert len(source) == 5
  for i, scene in enumerate(scenes):
    image, objects = source.load(i, image_size=64)
    assert image.shape == (64, 64, 3)
    assert objects[:, cs.MASK].sum() == len(scene["objects"])
    np.testing.assert_array_equal(objects, cs.scene_to_set(scene))
    np.testing.assert_allclose(objects[:len(scene["objects"]), :3],
                               np.array([o["3d_coords"] for o in scene["objects"]]) / 3,
                               rtol=1e-6)
    np.testing.assert_allclose(
      source.pixel_coords(i, image_size=64),
      np.array([o["pixel_coords"][:2] for o in scene["objects"]]) * [64 / 480, 64 / 320])


@pytest.mark.parametrize("shape", ["cube", "cylinder"])
def test_rounded_edges_lie_inside_the_sharp_shape_and_keep_the_flat_faces(shape):
  """Drawing with CLEVR's rounded edges: every ray that hits the rounded shape hits the sharp
  one no later; rays through the middle of a face hit both at the same point with the same
  normal; rays grazing the sharp corners miss the rounded shape."""
  camera = g.Camera()
  obj = {"shape": shape, "size": "large", "3d_coords": [0.0, 0.0, 0.0], "rotation": 0.3}
  scale = g.object_scale(shape, "large")
  obj["3d_coords"] = [0.0, 0.0, scale]
  ids_sharp, depth_sharp, n_sharp = g.cast_grid(camera, [obj], 480, 320)
  ids_round, depth_round, n_round = g.cast_grid(camera, [obj], 480, 320, rounded=True)
  hit_round, hit_sharp = ids_round == 0, ids_sharp == 0
  assert hit_round.sum() > 1000 and not (hit_round & ~hit_sharp).any()
  assert (hit_sharp & ~hit_round).sum() > 10  # The corners and rims.
  assert np.all(depth_round[hit_round] >= depth_sharp[hit_round] - 1e-9)
  # The ray through the projected centre of the top face.
  x, y, _ = camera.project([0.0, 0.0, 2 * scale])
  row, col = int(y), int(x)
  assert hit_round[row + 1, col]
  np.testing.assert_allclose(depth_round[row + 1, col], depth_sharp[row + 1, col], rtol=1e-6)
  np.testing.assert_allclose(n_round[row + 1, col], [0.0, 0.0, 1.0], atol=1e-3)
  np.testing.assert_allclose(np.linalg.norm(n_round[hit_round], axis=-1), 1.0, atol=1e-4)
