"""The Blender renderer's host side (`experiments.clevr.blender`), with a fake and a real Blender.

Most tests run a fake Blender: a Python script that reads the job file as
`experiments/clevr/blender_worker.py` would and writes solid-colour PNGs, so the host's layout,
resume, failure and parallel logic are tested without Blender. The ``test_real_blender_*``
tests (``-k real_blender``) run Debian's ``blender`` on CLEVR's official assets (the folder
``$IDSPN_CLEVR_ASSETS`` names: clevr-dataset-gen's ``image_generation/data``) at tiny sizes,
about 20 s in all, and are skipped where either is missing.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import PIL.Image
import pytest

from experiments.clevr import blender as cb
from experiments.clevr import data as cd
from experiments.clevr import generator as g
from experiments.clevr import scenes as cs

REPO = pathlib.Path(__file__).resolve().parents[3]
ASSETS = os.environ.get("IDSPN_CLEVR_ASSETS")
TINY = {"width": 48, "height": 32, "samples": 1}  # For the fake Blender.


def _real_blender_skip_reason() -> str | None:
  if shutil.which("blender") is None:
    return "Blender is not installed (apt-get install blender)"
  if not ASSETS:
    return ("IDSPN_CLEVR_ASSETS is not set (the folder of CLEVR's base_scene.blend, shapes/ "
            "and materials/)")
  missing = [f for f in cb.ASSET_FILES if not os.path.isfile(os.path.join(ASSETS, f))]
  if missing:
    return (f"CLEVR's assets are not at {ASSETS} (set IDSPN_CLEVR_ASSETS; missing "
            f"{missing[:2]})")
  return None


real_blender = pytest.mark.skipif(_real_blender_skip_reason() is not None,
                                  reason=str(_real_blender_skip_reason()))

FAKE_BLENDER = '''\
#!{python}
"""A fake Blender: renders a job file's scenes as solid colours, as blender_worker.py would.

Environment: FAKE_BLENDER_LOG (a folder for a record of each run), FAKE_BLENDER_FAIL_AFTER (exit
with status 3 after this many images), FAKE_BLENDER_FAIL_WORKER (only worker w fails),
FAKE_BLENDER_SLEEP (seconds to wait before each image).
"""
import json, os, sys, time
import PIL.Image

job_file = sys.argv[sys.argv.index("--") + 1]
worker = int(os.path.splitext(job_file)[0].rsplit("_", 1)[1])
with open(job_file) as f:
  job = json.load(f)
fail_after = int(os.environ.get("FAKE_BLENDER_FAIL_AFTER", "-1"))
if os.environ.get("FAKE_BLENDER_FAIL_WORKER", str(worker)) != str(worker):
  fail_after = -1
record = {{"argv": sys.argv[1:], "job": job, "worker": worker, "rendered": [],
          "scene_file_seen": False}}
for spec in job["scenes"]:
  if os.path.exists(spec["output"]):
    continue
  if len(record["rendered"]) == fail_after:
    print("fake blender: failing on purpose after", fail_after, "images", flush=True)
    sys.exit(3)
  time.sleep(float(os.environ.get("FAKE_BLENDER_SLEEP", "0")))
  image_dir = os.path.dirname(spec["output"])
  root = os.path.dirname(os.path.dirname(image_dir))
  split = os.path.basename(image_dir)
  if os.path.exists(os.path.join(root, "scenes", "CLEVR_%s_scenes.json" % split)):
    record["scene_file_seen"] = True
  colour = (20 * len(spec["objects"]), 7 * worker, 100)
  partial = spec["output"] + ".partial.png"
  PIL.Image.new("RGB", (job["width"], job["height"]), colour).save(partial)
  os.replace(partial, spec["output"])
  record["rendered"].append(spec["output"])
  print("RENDERED", spec["output"], flush=True)
log = os.environ.get("FAKE_BLENDER_LOG")
if log:
  with open(os.path.join(log, "run_%d_%d.json" % (os.getpid(), worker)), "w") as f:
    json.dump(record, f)
'''


@pytest.fixture
def fake(tmp_path, monkeypatch):
  """A fake Blender executable and a fake assets folder; ``fake.runs()`` lists its runs."""
  exe = tmp_path / "fake_blender"
  exe.write_text(FAKE_BLENDER.format(python=sys.executable))
  exe.chmod(0o755)
  assets = tmp_path / "assets"
  for name in cb.ASSET_FILES:
    (assets / name).parent.mkdir(parents=True, exist_ok=True)
    (assets / name).write_bytes(b"")
  log = tmp_path / "fake_log"
  log.mkdir()
  monkeypatch.setenv("FAKE_BLENDER_LOG", str(log))

  class Fake:
    blender = str(exe)
    assets_dir = str(assets)

    @staticmethod
    def runs() -> list[dict]:
      return [json.loads(p.read_text()) for p in sorted(log.glob("run_*.json"))]

    @staticmethod
    def clear():
      for p in log.glob("run_*.json"):
        p.unlink()

  return Fake()


def _render(fake, root, count, split="val", **kwargs):
  options = cb.BlenderOptions(**{**TINY, **kwargs.pop("options", {})})
  return cb.render_split(str(root), split, count, assets=fake.assets_dir, seed=5,
                         options=options, blender=fake.blender, progress=False, **kwargs)


def _images(root, split="val") -> list[str]:
  return sorted(n for n in os.listdir(os.path.join(root, "images", split))
                if n.endswith(".png") and ".partial" not in n)


# --- Without Blender. ------------------------------------------------------------------------


def test_a_missing_blender_is_a_clear_error(tmp_path, fake):
  with pytest.raises(cb.BlenderError, match="'no-such-blender' not found.*apt-get install"):
    cb.render_split(str(tmp_path / "r"), "val", 2, assets=fake.assets_dir,
                    blender="no-such-blender")
  with pytest.raises(cb.BlenderError, match="'no-such-blender' not found"):
    cb.render_scene_file(str(tmp_path / "x.json"), str(tmp_path / "out"),
                         assets=fake.assets_dir, blender="no-such-blender")
  assert not (tmp_path / "r").exists()


def test_missing_assets_are_a_clear_error(tmp_path, fake):
  with pytest.raises(cb.BlenderError, match="assets folder .*nowhere.* does not exist"):
    cb.render_split(str(tmp_path / "r"), "val", 2, assets=str(tmp_path / "nowhere"),
                    blender=fake.blender)
  os.remove(os.path.join(fake.assets_dir, "shapes", "Sphere.blend"))
  with pytest.raises(cb.BlenderError, match=r"lacks \['shapes/Sphere.blend'\]"):
    _render(fake, tmp_path / "r", 2)
  assert not (tmp_path / "r").exists() and not fake.runs()


@pytest.mark.parametrize("options,match", [({"mode": "glossy"}, "unknown mode 'glossy'"),
                                           ({"samples": 0}, "samples must be positive"),
                                           ({"workers": 0}, "workers must be positive"),
                                           ({"width": 0}, "width must be positive")])
def test_bad_options_are_refused_before_anything_is_written(tmp_path, fake, options, match):
  with pytest.raises(ValueError, match=match):
    _render(fake, tmp_path / "r", 2, options=options)
  assert not (tmp_path / "r").exists()


def test_render_split_writes_the_clevr_layout(tmp_path, fake, monkeypatch):
  monkeypatch.chdir(tmp_path)  # A relative root: Blender gets absolute paths.
  assert _render(fake, "data", 3) == 3
  root = tmp_path / "data"
  assert _images(root) == [f"CLEVR_val_{i:06d}.png" for i in range(3)]
  for name in _images(root):
    with PIL.Image.open(root / "images" / "val" / name) as image:
      assert image.size == (48, 32)
  (run,) = fake.runs()
  job = run["job"]
  assert run["argv"][:5] == ["-b", "--factory-startup", "-noaudio", "-P", cb.WORKER_SCRIPT]
  assert {k: job[k] for k in ("width", "height", "samples", "mode", "parent_pid")} == {
    "width": 48, "height": 32, "samples": 1, "mode": "render", "parent_pid": os.getpid()}
  assert job["assets"] == fake.assets_dir
  assert all(os.path.isabs(s["output"]) for s in job["scenes"])
  assert not run["scene_file_seen"]  # The scene file is written after every image.
  with open(root / "scenes" / "CLEVR_val_scenes.json") as f:
    data = json.load(f)
  assert data["info"]["num_images"] == 3 and data["info"]["seed"] == 5
  assert [s["image_filename"] for s in data["scenes"]] == _images(root)
  # The scenes are sample_split's, pixel_coords in the 48 x 32 images.
  want = cb.sample_split("val", 3, 5, frame=(48, 32))
  assert data["scenes"] == want
  for scene in want:
    camera = g.scene_camera(scene, width=48, height=32)
    for obj in scene["objects"]:
      np.testing.assert_allclose(obj["pixel_coords"], camera.project(obj["3d_coords"]),
                                 atol=1e-3)
  source = cd.ClevrFolderSource(str(root), "val")
  for i, scene in enumerate(want):
    image, objects = source.load(i, image_size=16)
    assert objects[:, cs.MASK].sum() == len(scene["objects"])
    assert tuple(image[0, 0]) == (20 * len(scene["objects"]), 0, 100)
  # Complete: nothing to do, Blender not started.
  fake.clear()
  assert _render(fake, "data", 3) == 0 and not fake.runs()


def test_a_failing_worker_raises_with_its_log_and_a_rerun_renders_the_rest(
    tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_BLENDER_FAIL_AFTER", "1")
  with pytest.raises(cb.BlenderError, match=r"(?s)worker 0 exited with status 3.*"
                     r"failing on purpose after 1 images"):
    _render(fake, tmp_path, 4)
  assert _images(tmp_path) == ["CLEVR_val_000000.png"]
  assert not (tmp_path / "scenes" / "CLEVR_val_scenes.json").exists()
  monkeypatch.delenv("FAKE_BLENDER_FAIL_AFTER")
  fake.clear()
  assert _render(fake, tmp_path, 4) == 3
  (run,) = fake.runs()
  assert [os.path.basename(s["output"]) for s in run["job"]["scenes"]] == [
    f"CLEVR_val_{i:06d}.png" for i in (1, 2, 3)]
  assert len(cd.ClevrFolderSource(str(tmp_path), "val")) == 4


def test_a_worker_that_writes_nothing_is_an_error(tmp_path, fake):
  # This Blender exits 0 without rendering (as the worker does when it thinks its parent died).
  pathlib.Path(fake.blender).write_text(
    f"#!{sys.executable}\nprint('parent process gone; stopping')\n")
  with pytest.raises(cb.BlenderError, match="Blender finished but 2 images are missing"):
    _render(fake, tmp_path, 2)


def test_one_failing_worker_stops_the_others(tmp_path, fake, monkeypatch):
  monkeypatch.setenv("FAKE_BLENDER_FAIL_AFTER", "0")
  monkeypatch.setenv("FAKE_BLENDER_FAIL_WORKER", "0")
  monkeypatch.setenv("FAKE_BLENDER_SLEEP", "60")
  start = time.time()
  with pytest.raises(cb.BlenderError, match="worker 0 exited with status 3"):
    _render(fake, tmp_path, 4, options={"workers": 2})
  assert time.time() - start < 30  # Worker 1 would sleep 60 s per image.


def test_other_settings_are_refused_on_resume(tmp_path, fake, monkeypatch):
  assert _render(fake, tmp_path, 2) == 2
  with pytest.raises(FileExistsError, match="other settings"):
    _render(fake, tmp_path, 2, options={"samples": 4})
  with pytest.raises(FileExistsError, match="other settings"):
    _render(fake, tmp_path, 3)
  # Other scenes for the same settings (a changed generator) are refused too.
  with monkeypatch.context() as m:
    m.setattr(cb, "scene_rng", lambda seed, split, i: np.random.default_rng([seed, 99, i]))
    with pytest.raises(FileExistsError, match="other settings"):
      _render(fake, tmp_path, 2)
  assert _render(fake, tmp_path, 2) == 0
  # --overwrite renders afresh.
  assert _render(fake, tmp_path, 2, options={"samples": 4}, overwrite=True) == 2
  with open(tmp_path / "images" / "val" / ".blender_render.json") as f:
    assert json.load(f)["samples"] == 4
  # A folder of images this renderer did not make is refused.
  other = tmp_path / "other"
  (other / "images" / "val").mkdir(parents=True)
  (other / "images" / "val" / "CLEVR_val_000000.png").write_bytes(b"x")
  with pytest.raises(FileExistsError, match="not rendered by this renderer"):
    _render(fake, other, 2)


def test_workers_share_the_scenes(tmp_path, fake):
  assert _render(fake, tmp_path, 5, options={"workers": 2, "threads": 3}) == 5
  runs = sorted(fake.runs(), key=lambda r: r["worker"])
  assert [r["worker"] for r in runs] == [0, 1]
  names = [[os.path.basename(s["output"]) for s in r["job"]["scenes"]] for r in runs]
  assert names == [[f"CLEVR_val_{i:06d}.png" for i in (0, 2, 4)],
                   [f"CLEVR_val_{i:06d}.png" for i in (1, 3)]]
  assert all(r["job"]["threads"] == 3 for r in runs)
  assert len(cd.ClevrFolderSource(str(tmp_path), "val")) == 5
  # Never more workers than images.
  fake.clear()
  assert _render(fake, tmp_path / "b", 1, options={"workers": 4}) == 1
  assert len(fake.runs()) == 1


def test_render_scene_file(tmp_path, fake):
  scenes = cb.sample_split("test", 3, seed=2)
  scenes_file = tmp_path / "scenes.json"
  cb.write_scenes(str(scenes_file), {"split": "test"}, scenes)
  out = tmp_path / "out"
  paths = cb.render_scene_file(str(scenes_file), str(out), assets=fake.assets_dir,
                               options=cb.BlenderOptions(**TINY), blender=fake.blender,
                               limit=2, progress=False)
  assert paths == [str(out / f"CLEVR_test_{i:06d}.png") for i in range(2)]
  assert sorted(os.listdir(out)) == [".blender_logs", *(os.path.basename(p) for p in paths)]
  del scenes[2]["objects"][1]["rotation"]
  cb.write_scenes(str(scenes_file), {"split": "test"}, scenes)
  with pytest.raises(ValueError, match="scene 'CLEVR_test_000002.png' object 1 has no "
                     "'rotation'"):
    cb.render_scene_file(str(scenes_file), str(out), assets=fake.assets_dir,
                         blender=fake.blender, progress=False)


def test_export_resized(tmp_path, fake):
  _render(fake, tmp_path / "big", 2, options={"width": 60, "height": 40})
  cb.export_resized(str(tmp_path / "big"), "val", str(tmp_path / "small"), image_size=16)
  big = cd.ClevrFolderSource(str(tmp_path / "big"), "val")
  small = cd.ClevrFolderSource(str(tmp_path / "small"), "val")
  assert small.info["resized_to"] == [16, 16]
  for i in range(2):
    with PIL.Image.open(small.image_path(i)) as image:
      assert image.size == (16, 16)
    np.testing.assert_allclose(small.pixel_coords(i, image_size=32),
                               big.pixel_coords(i, image_size=32), atol=0.01)
    np.testing.assert_array_equal(small.sets[i], big.sets[i])


def test_cli(tmp_path, fake):
  common = {"seed": 5, "assets": fake.assets_dir, "samples": 1, "workers": 1,
            "blender": fake.blender, "overwrite": False, "width": 48, "height": 32,
            "progress": False}
  root = str(tmp_path / "data")
  counts = cb.cli(root=root, splits={"train": 0, "val": 2}, scenes_file=None, out=None,
                  limit=None, **common)
  assert counts == {"val": 2}
  assert not os.path.exists(os.path.join(root, "images", "train"))
  assert cb.cli(root=root, splits={"train": 1, "val": 2}, scenes_file=None, out=None,
                limit=None, **common) == {"train": 1, "val": 0}
  scenes_file = os.path.join(root, "scenes", "CLEVR_val_scenes.json")
  out = str(tmp_path / "again")
  assert cb.cli(root=root, splits={}, scenes_file=scenes_file, out=out, limit=1,
                **common) == {"CLEVR_val_scenes.json": 1}
  assert os.path.exists(os.path.join(out, "CLEVR_val_000000.png"))
  with pytest.raises(ValueError, match="needs --out"):
    cb.cli(root=root, splits={}, scenes_file=scenes_file, out=None, limit=None, **common)
  with pytest.raises(ValueError, match="--scenes only"):
    cb.cli(root=root, splits={"val": 2}, scenes_file=None, out=out, limit=None, **common)
  with pytest.raises(ValueError, match="every split's count is 0"):
    cb.cli(root=root, splits={"val": 0}, scenes_file=None, out=None, limit=None, **common)
  with pytest.raises(ValueError, match=">= 0"):
    cb.cli(root=root, splits={"val": -1}, scenes_file=None, out=None, limit=None, **common)


def test_command_line_passes_the_image_size(tmp_path, fake):
  root = tmp_path / "data"
  subprocess.run(
    [sys.executable, "-m", "experiments.clevr.render", "--engine=blender",
     f"--blender={fake.blender}", f"--assets={fake.assets_dir}", f"--root={root}", "--train=0",
     "--val=1", "--seed=2", "--samples=1", "--width=60", "--height=40",
     f"--export={tmp_path / 'small'}", "--export_size=24"],
    cwd=str(REPO), check=True, capture_output=True)
  with PIL.Image.open(root / "images" / "val" / "CLEVR_val_000000.png") as image:
    assert image.size == (60, 40)
  with PIL.Image.open(tmp_path / "small" / "images" / "val" / "CLEVR_val_000000.png") as image:
    assert image.size == (24, 24)


# --- With Blender and CLEVR's assets. ----------------------------------------------------------


def _real(root, split, count, **options) -> int:
  return cb.render_split(str(root), split, count, assets=ASSETS, seed=11,
                         options=cb.BlenderOptions(**options), progress=False)


@real_blender
def test_real_blender_renders_a_loadable_split(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)  # A relative root.
  assert _real("clevr", "val", 2, width=120, height=80, samples=2) == 2
  source = cd.ClevrFolderSource(str(tmp_path / "clevr"), "val")
  assert len(source) == 2
  for i, scene in enumerate(source.scenes):
    with PIL.Image.open(source.image_path(i)) as image:
      assert image.size == (120, 80) and image.mode == "RGB"
      pixels = np.asarray(image, np.float32)
    assert pixels.std() > 5  # Not blank: a lit stage with objects.
    image, objects = source.load(i, image_size=32)
    assert objects[:, cs.MASK].sum() == len(scene["objects"]) >= 3
    camera = g.scene_camera(scene, width=120, height=80)
    for obj in scene["objects"]:
      np.testing.assert_allclose(obj["pixel_coords"], camera.project(obj["3d_coords"]),
                                 atol=1e-3)
  assert _real("clevr", "val", 2, width=120, height=80, samples=2) == 0


def _srgb(linear: np.ndarray) -> np.ndarray:
  """The sRGB encoding of Blender's "Standard" view transform."""
  return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _ray_cast(scene: dict, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
  """The generator's shapes cast through the pixel centres (no reach limit, unlike its own).

  Returns:
    The nearest object per pixel [H, W] (-1: none) and each object's silhouette, occluded or
    not, [K, H, W].
  """
  camera = g.scene_camera(scene, width=width, height=height)
  ys, xs = np.mgrid[0:height, 0:width] + 0.5
  rays = camera.rays(xs.ravel(), ys.ravel())
  depth = np.full(len(rays), np.inf)
  ids = np.full(len(rays), -1)
  silhouettes = []
  for k, obj in enumerate(scene["objects"]):
    t, _ = g.intersect(obj["shape"], camera.location, rays, g.object_centre(obj),
                       g.object_scale(obj["shape"], obj["size"]), obj["rotation"])
    front = t < depth
    depth[front], ids[front] = t[front], k
    silhouettes.append(np.isfinite(t).reshape(height, width))
  return ids.reshape(height, width), np.stack(silhouettes)


@real_blender
def test_real_blender_flat_render_shows_each_object_at_its_pixel_coords_in_its_colour(tmp_path):
  """Flat mode: plain emission of each colour, so every pixel is one of 9 known values.

  Blender's view is compared pixel by pixel with the generator's ray cast of the same scene
  (its camera, sizes, positions and rotations): CLEVR's meshes lie inside the generator's
  shapes (the cube's and cylinder's edges are rounded, the sphere is inscribed), so every pixel
  of an object's colour lies in the silhouette of an object of that colour; and most of each
  object's ray-cast visible pixels show its colour.
  """
  count = 4
  assert _real(tmp_path, "val", count, mode="flat") == count
  names = list(g.COLORS_RGB)
  # Emission c / 255 (linear) through the sRGB view transform, to 8 bits; index 0 is the
  # black background (the world's strength is 0).
  palette = np.round(255 * _srgb(np.array([[0, 0, 0], *g.COLORS_RGB.values()]) / 255))
  source = cd.ClevrFolderSource(str(tmp_path), "val")
  for i, scene in enumerate(source.scenes):
    name = scene["image_filename"]
    with PIL.Image.open(source.image_path(i)) as image:
      pixels = np.asarray(image.convert("RGB"), np.float64)  # [320, 480, 3]
    distance = np.abs(pixels[:, :, None] - palette).max(axis=-1)  # [H, W, 9]
    seen = distance.argmin(axis=-1)  # 0: background, 1 + colour index.
    # No shading, no anti-aliasing: every pixel is a palette colour (dithering aside).
    assert (distance.min(axis=-1) <= 2).mean() > 0.999, name
    objects = scene["objects"]
    colour = np.array([1 + names.index(o["color"]) for o in objects])
    ids, silhouettes = _ray_cast(scene, 480, 320)
    expected = np.where(ids >= 0, colour[ids], 0)
    either = (expected > 0) | (seen > 0)
    assert (expected == seen)[either].mean() > 0.93, name
    for c in set(colour):
      inside = silhouettes[colour == c].any(axis=0)
      assert inside[seen == c].mean() > 0.998, (name, names[c - 1])
    for k, obj in enumerate(objects):
      # The cube's rounded edges take about 9% of its box's silhouette.
      share = 0.85 if obj["shape"] == "cube" else 0.95
      assert (seen[ids == k] == colour[k]).mean() > share, (name, k)
    # At each object's pixel_coords: its own colour or that of an object in front of it, and
    # mostly its own.
    own = 0
    for k, obj in enumerate(objects):
      x, y, depth = obj["pixel_coords"]
      at = seen[min(int(y), 319), min(int(x), 479)]
      nearer = {colour[j] for j, o in enumerate(objects) if o["pixel_coords"][2] < depth}
      assert at == colour[k] or at in nearer, (name, k)
      own += at == colour[k]
    assert own > len(objects) / 2, name


def _children(pid: int) -> list[int]:
  out = []
  for entry in os.listdir("/proc"):
    if entry.isdigit():
      try:
        with open(f"/proc/{entry}/stat") as f:
          stat = f.read()
      except OSError:
        continue
      if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
        out.append(int(entry))
  return out


def _gone(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat") as f:
      return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # A zombie has finished.
  except OSError:
    return True


@real_blender
def test_real_blender_resumes_after_kill_9_of_the_host(tmp_path):
  root = tmp_path / "clevr"
  code = textwrap.dedent(f"""
    from experiments.clevr import blender as cb
    cb.render_split({str(root)!r}, "val", 3, assets={ASSETS!r}, seed=11, progress=False,
                    options=cb.BlenderOptions(width=120, height=80, samples=32, threads=1))
  """)
  host = subprocess.Popen([sys.executable, "-c", code], cwd=str(REPO))
  image_dir = root / "images" / "val"
  deadline = time.time() + 120
  while not (image_dir.is_dir() and _images(root)):
    assert host.poll() is None, "the host exited before rendering"
    assert time.time() < deadline, "no image after 120 s"
    time.sleep(0.02)
  workers = _children(host.pid)
  os.kill(host.pid, signal.SIGKILL)
  host.wait()
  assert len(workers) == 1
  # Blender notices its parent is gone and stops after the scene it is rendering.
  deadline = time.time() + 60
  while not _gone(workers[0]):
    if time.time() > deadline:
      os.kill(workers[0], signal.SIGKILL)
      pytest.fail("Blender kept rendering after its host was killed")
    time.sleep(0.1)
  done = len(_images(root))
  assert 1 <= done < 3
  assert not (root / "scenes" / "CLEVR_val_scenes.json").exists()
  (log,) = (root / ".blender_logs").glob(f"worker_{host.pid}_0.log")
  assert "parent process gone" in log.read_text()
  assert _real(root, "val", 3, width=120, height=80, samples=32, threads=1) == 3 - done
  source = cd.ClevrFolderSource(str(root), "val")
  assert len(source) == 3
  for i in range(3):
    source.load(i, image_size=16)


BLENDER_PROBE = '''\
import json, os, sys
import bpy
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector

assets, points_file, out_file = sys.argv[sys.argv.index("--") + 1:]
with open(points_file) as f:
  request = json.load(f)
bpy.ops.wm.open_mainfile(filepath=os.path.join(assets, "base_scene.blend"))
scene = bpy.context.scene
scene.render.resolution_x, scene.render.resolution_y = 480, 320
scene.render.resolution_percentage = 100
objects = bpy.data.objects
camera = objects["Camera"]
out = {
  "camera": {"location": list(camera.location), "rotation": list(camera.rotation_euler),
             "rotation_mode": camera.rotation_mode, "lens": camera.data.lens,
             "sensor_width": camera.data.sensor_width, "sensor_fit": camera.data.sensor_fit,
             "shift": [camera.data.shift_x, camera.data.shift_y], "type": camera.data.type},
  "lamps": {n: list(objects[n].location) for n in request["lamps"]},
  "constraints": {o.name: [[c.type, c.target.name, list(c.target.location), c.track_axis,
                            c.up_axis] for c in o.constraints] for o in objects
                  if o.constraints},
  "view": [scene.view_settings.view_transform, scene.view_settings.look,
           scene.view_settings.exposure, scene.view_settings.gamma,
           scene.display_settings.display_device],
  "world_strength": scene.world.node_tree.nodes["Background"].inputs["Strength"].default_value,
  "views": [],
}
for location in request["cameras"]:
  if location is not None:
    camera.location = location
  bpy.context.view_layer.update()
  out["views"].append({
    "rotation": [list(row)[:3] for row in camera.matrix_world][:3],
    "points": [list(world_to_camera_view(scene, camera, Vector(p))) for p in request["points"]]})
shapes = {}
for name in request["shapes"]:
  with bpy.data.libraries.load(os.path.join(assets, "shapes", name + ".blend")) as (src, dst):
    dst.objects = [name]
  obj = dst.objects[0]
  co = [v.co for v in obj.data.vertices]
  shapes[name] = {"transform": [list(obj.location), list(obj.rotation_euler), list(obj.scale)],
                  "min": [min(c[i] for c in co) for i in range(3)],
                  "max": [max(c[i] for c in co) for i in range(3)]}
out["shapes"] = shapes
groups = {}
for name in request["materials"]:
  with bpy.data.libraries.load(os.path.join(assets, "materials", name + ".blend")) as (src, dst):
    dst.node_groups = [name]
  group = dst.node_groups[0]
  groups[name] = {"inputs": [s.name for s in group.inputs],
                  "outputs": [s.name for s in group.outputs]}
out["materials"] = groups
with open(out_file, "w") as f:
  json.dump(out, f)
'''


@real_blender
def test_real_blender_base_scene_matches_the_generators_constants_and_camera(tmp_path):
  scenes = cb.sample_split("val", 3, seed=0)
  cameras = [None, (7.9, -6.1, 5.0)] + [s["camera_location"] for s in scenes]
  points = [[0, 0, 0], [1, 2, 0.35], [-2.5, 2.9, 0.7], [3, -3, 0.35], [-3, -3, 0.7],
            [2.9, 2.8, 0.35]] + [o["3d_coords"] for o in scenes[0]["objects"]]
  request = {"cameras": cameras, "points": points, "lamps": list(g.LAMP_LOCATIONS),
             "shapes": list(g.SHAPE_ASSETS.values()),
             "materials": list(g.MATERIAL_ASSETS.values())}
  (tmp_path / "request.json").write_text(json.dumps(request))
  (tmp_path / "probe.py").write_text(BLENDER_PROBE)
  result = subprocess.run(
    ["blender", "-b", "--factory-startup", "-noaudio", "--python-exit-code", "1", "-P",
     str(tmp_path / "probe.py"), "--", ASSETS, str(tmp_path / "request.json"),
     str(tmp_path / "out.json")], capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  found = json.loads((tmp_path / "out.json").read_text())
  cam = found["camera"]
  np.testing.assert_allclose(cam["location"], g.CAMERA_LOCATION, atol=1e-6)
  np.testing.assert_allclose(cam["rotation"], g.CAMERA_ROTATION, atol=1e-6)
  assert (cam["type"], cam["rotation_mode"], cam["sensor_fit"], cam["shift"]) == (
    "PERSP", "XYZ", "AUTO", [0, 0])
  assert (cam["lens"], cam["sensor_width"]) == (g.CAMERA_LENS_MM, g.CAMERA_SENSOR_MM)
  for name, location in g.LAMP_LOCATIONS.items():
    np.testing.assert_allclose(found["lamps"][name], location, atol=1e-6)
  # Camera and lamps track the empty at the origin (-z to it, y up): the generator's model.
  for name in ("Camera", *g.LAMP_LOCATIONS):
    assert found["constraints"][name] == [["TRACK_TO", "Empty", [0, 0, 0], "TRACK_NEGATIVE_Z",
                                           "UP_Y"]]
  for location, view in zip(cameras, found["views"]):
    camera = g.Camera(g.CAMERA_LOCATION if location is None else location)
    np.testing.assert_allclose(camera.rotation, view["rotation"], atol=1e-5)
    for point, (x, y, depth) in zip(points, view["points"]):
      np.testing.assert_allclose(camera.project(point), [480 * x, 320 * (1 - y), depth],
                                 atol=2e-3)
  # Unit shapes: extent [-1, 1], no transform of their own (the worker sets scale and place).
  for name, shape in found["shapes"].items():
    assert shape["transform"] == [[0, 0, 0], [0, 0, 0], [1, 1, 1]], name
    np.testing.assert_allclose(shape["min"], [-1, -1, -1], atol=2e-3)
    np.testing.assert_allclose(shape["max"], [1, 1, 1], atol=2e-3)
  for name, group in found["materials"].items():
    assert "Color" in group["inputs"] and group["outputs"] == ["Shader"], name
  # The flat test's colour model: Standard sRGB view, no exposure or look; a black world.
  assert found["view"] == ["Standard", "None", 0.0, 1.0, "sRGB"]
  assert found["world_strength"] == 0
