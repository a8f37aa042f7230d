"""CLEVR scenes rendered by Blender from CLEVR's official assets, in the CLEVR v1.0 layout.

  python -m experiments.clevr.render --engine=blender --assets=<clevr assets> \
      --root=data/clevr_blender --val=500 --train=0

Scenes are sampled in Python by `experiments.clevr.generator` (CLEVR's rules, scene ``i`` of a
split a pure function of ``(seed, split, i)``, the same scenes as the NumPy renderer's for the
same seed) and drawn by ``blender -b`` running `experiments/clevr/blender_worker.py` on the
official ``base_scene.blend``, shapes and materials, at 480 x 320. Writes
``images/<split>/CLEVR_<split>_NNNNNN.png`` and ``scenes/CLEVR_<split>_scenes.json`` (CLEVR's
fields plus the camera and lamp locations), which `experiments.clevr.data.ClevrFolderSource`
reads as it reads CLEVR v1.0. At another image size the scenes stay those of CLEVR's rules at
480 x 320 and only ``pixel_coords`` move into the image's frame.

Resumable: every image is moved into place whole, so a killed render (even ``kill -9``) leaves
finished images only, and the next run renders the missing ones (the settings and a digest of
the scenes are kept in ``images/<split>/.blender_render.json``; a run with other settings, or a
generator that now samples other scenes, is refused). The scene file is written last,
atomically, and marks the split complete. A Blender worker stops after its current image when
the process that started it dies. Blender runs in ``workers`` processes of
``threads`` threads each, with a progress bar. Blender itself is needed only here (``apt-get
install blender``, or ``--blender=<path>``); nothing else in the project uses it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zlib

import numpy as np
import PIL.Image
from absl import logging

from experiments.clevr import generator

GENERATOR_NAME = "idspn_jax CLEVR generator, Blender with CLEVR's assets"
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "blender_worker.py")
_SETTINGS = ".blender_render.json"
_CLEVR_RULES = generator.SceneOptions()  # CLEVR v1.0's sampling defaults.
ASSET_FILES = (
  "base_scene.blend",
  *(os.path.join("shapes", f"{n}.blend") for n in generator.SHAPE_ASSETS.values()),
  *(os.path.join("materials", f"{n}.blend") for n in generator.MATERIAL_ASSETS.values()),
)


class BlenderError(RuntimeError):
  """Blender is missing, an asset is missing, or a Blender process failed."""


@dataclasses.dataclass(frozen=True)
class BlenderOptions:
  """How the images are rendered.

  Attributes:
    samples: Cycles samples per pixel (CLEVR v1.0: 512; images resized to 64-256 px average
      many pixels, so fewer do).
    workers: Blender processes rendering in parallel.
    threads: Threads per process (None: the CPUs divided among the workers).
    width, height: Image size (CLEVR v1.0: 480 x 320).
    mode: "render", or "flat": each object in plain emission of its colour, no ground or lamps
      (for checking a scene's attributes against its pixels).
  """

  samples: int = 16
  workers: int = 1
  threads: int | None = None
  width: int = generator.WIDTH
  height: int = generator.HEIGHT
  mode: str = "render"


def find_blender(blender: str | None = None) -> str:
  """The Blender executable (``blender`` on PATH unless given); raises BlenderError if absent."""
  name = blender or "blender"
  path = shutil.which(name)
  if path is None:
    raise BlenderError(
      f"Blender executable {name!r} not found; install it (Debian/Ubuntu: apt-get install "
      "blender) or pass its path with --blender=... (only the Blender renderer needs it)")
  return path


def check_assets(assets: str) -> str:
  """Raises BlenderError naming each missing file of CLEVR's assets folder."""
  if not os.path.isdir(assets):
    raise BlenderError(f"CLEVR assets folder {assets!r} does not exist")
  missing = [f for f in ASSET_FILES if not os.path.isfile(os.path.join(assets, f))]
  if missing:
    raise BlenderError(
      f"CLEVR assets folder {assets!r} lacks {missing} (it needs base_scene.blend, shapes/ and "
      "materials/ of clevr-dataset-gen's image_generation/data)")
  return os.path.abspath(assets)


def check_options(options: BlenderOptions) -> None:
  """Raises ValueError for options no render can use."""
  if options.mode not in ("render", "flat"):
    raise ValueError(f"unknown mode {options.mode!r}; expected 'render' or 'flat'")
  for name in ("samples", "workers", "width", "height"):
    if int(getattr(options, name)) < 1:
      raise ValueError(f"BlenderOptions.{name} must be positive, got {getattr(options, name)!r}")
  if options.threads is not None and options.threads < 1:
    raise ValueError(f"BlenderOptions.threads must be positive or None, got {options.threads!r}")


def scene_rng(seed: int, split: str, index: int) -> np.random.Generator:
  return np.random.default_rng([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])


def sample_split(split: str, count: int, seed: int,
                 options: generator.SceneOptions = _CLEVR_RULES, *,
                 frame: tuple[int, int] | None = None) -> list[dict]:
  """Scenes ``0 .. count - 1`` of a split, as CLEVR scene records (without the image).

  Args:
    split: The split's name (part of every scene's seed).
    count: Number of scenes.
    seed: The dataset seed.
    options: The sampling rules, including the frame of the visibility test.
    frame: ``(width, height)`` of the images the scenes will be rendered at, if not the
      options' frame: ``pixel_coords`` are then projected into it (continuous, 3 decimals),
      while the scenes themselves stay those of the options' frame (CLEVR's 200 pixels at
      480 x 320), so scene ``i`` does not depend on the image size.

  Returns:
    ``count`` scene records.
  """
  scenes = []
  for i in range(count):
    scene = generator.sample_scene(scene_rng(seed, split, i), options)
    if frame is not None and tuple(frame) != (options.width, options.height):
      camera = generator.scene_camera(scene, width=frame[0], height=frame[1])
      for obj in scene["objects"]:
        x, y, depth = camera.project(obj["3d_coords"])
        obj["pixel_coords"] = [round(x, 3), round(y, 3), round(depth, 6)]
    scenes.append({"split": split, "image_index": i,
                   "image_filename": f"CLEVR_{split}_{i:06d}.png", **scene})
  return scenes


def run_blender(specs: list[dict], *, assets: str, options: BlenderOptions = BlenderOptions(),
                blender: str | None = None, progress: bool = True, log_dir: str | None = None
                ) -> None:
  """Renders scene specs (each with an ``output`` path) whose output is missing.

  Raises BlenderError (with the end of the failing process's log) if a Blender process fails.
  """
  executable = find_blender(blender)
  assets = check_assets(assets)
  check_options(options)
  # Blender resolves a relative output path against its own idea of the current folder;
  # absolute paths leave no doubt.
  todo = [dict(s, output=os.path.abspath(s["output"])) for s in specs
          if not os.path.exists(s["output"])]
  if not todo:
    return
  workers = max(1, min(int(options.workers), len(todo)))
  # The CPUs this process may use (os.cpu_count() counts the whole machine's).
  cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  threads = options.threads or max(1, (cpus or 1) // workers)
  log_dir = log_dir or tempfile.mkdtemp(prefix="idspn_blender_")
  os.makedirs(log_dir, exist_ok=True)
  procs = []
  for w in range(workers):
    job = {
      "assets": assets, "samples": int(options.samples), "threads": int(threads),
      "width": int(options.width), "height": int(options.height), "mode": options.mode,
      "parent_pid": os.getpid(), "scenes": todo[w::workers],
    }
    job_file = os.path.join(log_dir, f"job_{os.getpid()}_{w}.json")
    with open(job_file, "w") as f:
      json.dump(job, f)
    log = open(os.path.join(log_dir, f"worker_{os.getpid()}_{w}.log"), "w")
    cmd = [executable, "-b", "--factory-startup", "-noaudio", "-P", WORKER_SCRIPT, "--", job_file]
    procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log))
  bar = None
  if progress:
    import tqdm

    bar = tqdm.tqdm(total=len(todo), desc=f"Blender ({workers} x {threads} threads)",
                    unit="image", file=sys.stderr)
  failed = None  # The first worker that exited with an error.
  try:
    done = 0
    while True:
      codes = [p.poll() for p, _ in procs]
      failed = next((w for w, c in enumerate(codes) if c not in (None, 0)), None)
      now = sum(os.path.exists(s["output"]) for s in todo)
      if bar is not None:
        bar.update(now - done)
      done = now
      if failed is not None or all(c is not None for c in codes):
        break
      time.sleep(0.5)
  finally:
    # Interrupted, or one worker failed: stop the others now (their finished images stay for
    # the next run) rather than report the failure after their whole share, and leave no
    # Blender behind to race the next run.
    for p, _ in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
    if bar is not None:
      bar.close()
    for _, log in procs:
      log.close()
  if failed is not None:
    p, log = procs[failed]
    with open(log.name, errors="replace") as f:
      tail = f.read()[-3000:]
    raise BlenderError(f"Blender worker {failed} exited with status {p.returncode}; its log "
                       f"({log.name}) ends:\n{tail}")
  missing = [s["output"] for s in todo if not os.path.exists(s["output"])]
  if missing:
    raise BlenderError(f"Blender finished but {len(missing)} images are missing, e.g. "
                       f"{missing[0]} (logs in {log_dir})")


def _scenes_path(root: str, split: str) -> str:
  return os.path.join(root, "scenes", f"CLEVR_{split}_scenes.json")


def render_split(root: str, split: str, count: int, *, assets: str, seed: int = 0,
                 options: BlenderOptions = BlenderOptions(), blender: str | None = None,
                 progress: bool = True, overwrite: bool = False) -> int:
  """Renders ``count`` scenes of a split into ``root`` (CLEVR v1.0 layout), resuming if killed.

  The scenes are those of CLEVR's rules at 480 x 320 whatever ``options.width`` and ``height``
  are; their ``pixel_coords`` are in the rendered image's frame.

  Args:
    root: The dataset folder.
    split: The split's name ("train", "val", ...).
    count: Number of images.
    assets: CLEVR's assets folder.
    seed: The dataset seed.
    options: How to render.
    blender: The Blender executable (None: ``blender`` on PATH).
    progress: Show a progress bar.
    overwrite: Delete a render of this split made with other settings instead of refusing.

  Returns:
    The number of images rendered now (0 if the split was complete).

  Raises:
    BlenderError: Blender or an asset is missing, or Blender failed.
    FileExistsError: The split's folder holds another render (and not ``overwrite``).
  """
  if int(count) != count or count <= 0:
    raise ValueError(f"split {split!r} needs a positive number of images, got {count!r}")
  find_blender(blender)
  check_assets(assets)
  check_options(options)  # Before the settings file records them.
  scenes = sample_split(split, int(count), seed, frame=(options.width, options.height))
  # The scenes' digest ties the images to the generator that sampled them: a changed
  # generator must not resume (and so mix) a render of other scenes.
  digest = hashlib.sha256(json.dumps(scenes, sort_keys=True).encode("utf-8")).hexdigest()
  settings = {"generator": GENERATOR_NAME, "split": split, "num_images": int(count),
              "seed": int(seed), "samples": int(options.samples), "width": options.width,
              "height": options.height, "mode": options.mode, "scenes_sha256": digest}
  image_dir = os.path.join(root, "images", split)
  settings_file = os.path.join(image_dir, _SETTINGS)
  scenes_file = _scenes_path(root, split)
  if os.path.exists(settings_file):
    with open(settings_file) as f:
      found = json.load(f)
    if found != settings:
      if not overwrite:
        raise FileExistsError(
          f"{image_dir} holds a Blender render with other settings ({found}, wanted "
          f"{settings}); choose another root or pass --overwrite")
      shutil.rmtree(image_dir)
      if os.path.exists(scenes_file):
        os.remove(scenes_file)
  elif os.path.isdir(image_dir) and any(not n.startswith(".partial-")
                                        for n in os.listdir(image_dir)):
    # (A run killed while writing its settings file leaves only a ".partial-" file.)
    raise FileExistsError(f"{image_dir} holds files not rendered by this renderer; choose "
                          "another root")
  if os.path.exists(scenes_file) and all(
      os.path.exists(os.path.join(image_dir, s["image_filename"])) for s in scenes):
    return 0
  os.makedirs(image_dir, exist_ok=True)
  os.makedirs(os.path.dirname(scenes_file), exist_ok=True)
  if not os.path.exists(settings_file):
    _write_json(settings_file, settings)
  specs = [dict(s, output=os.path.join(image_dir, s["image_filename"])) for s in scenes]
  missing = sum(not os.path.exists(s["output"]) for s in specs)
  run_blender(specs, assets=assets, options=options, blender=blender, progress=progress,
              log_dir=os.path.join(root, ".blender_logs"))
  info = {"split": split, "version": "1.0",
          "license": "renders of CLEVR's official assets (BSD licence, clevr-dataset-gen)",
          **settings}
  write_scenes(scenes_file, info, scenes)
  return missing


def _write_json(path: str, value) -> None:
  """Writes JSON atomically (a killed run leaves the old file or the new one, never half)."""
  directory = os.path.dirname(os.path.abspath(path))
  with tempfile.NamedTemporaryFile("w", dir=directory, prefix=".partial-", delete=False) as f:
    json.dump(value, f)
  os.replace(f.name, path)


def write_scenes(path: str, info: dict, scenes: list[dict]) -> None:
  """Writes a CLEVR scene file atomically."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  _write_json(path, {"info": info, "scenes": scenes})


def render_scene_file(scenes_file: str, out_dir: str, *, assets: str,
                      options: BlenderOptions = BlenderOptions(), blender: str | None = None,
                      limit: int | None = None, progress: bool = True) -> list[str]:
  """Renders the scenes of a CLEVR scene file (e.g. the NumPy renderer's) into ``out_dir``.

  Scenes without ``camera_location`` / ``lamp_locations`` use the base scene's. Objects need
  ``shape``, ``size``, ``material``, ``color``, ``3d_coords`` and ``rotation``.

  Returns:
    The image paths, in the file's order.
  """
  find_blender(blender)  # Missing prerequisites first, before the file is read and checked.
  check_assets(assets)
  with open(scenes_file) as f:
    scenes = json.load(f)["scenes"][:limit]
  os.makedirs(out_dir, exist_ok=True)
  specs = []
  for scene in scenes:
    for k, obj in enumerate(scene["objects"]):
      for key in ("shape", "size", "material", "color", "3d_coords", "rotation"):
        if key not in obj:
          raise ValueError(f"{scenes_file}: scene {scene.get('image_filename')!r} object {k} "
                           f"has no {key!r}")
    specs.append(dict(scene, output=os.path.join(out_dir, scene["image_filename"])))
  run_blender(specs, assets=assets, options=options, blender=blender, progress=progress,
              log_dir=os.path.join(out_dir, ".blender_logs"))
  return [s["output"] for s in specs]


def export_resized(root: str, split: str, out_root: str, *, image_size: int) -> None:
  """Copies a split resized to ``image_size`` squares (as the loaders resize: bilinear, no crop).

  ``pixel_coords`` x and y are rescaled to the new frame, so the copy reads as the original
  does at that size.
  """
  with open(_scenes_path(root, split)) as f:
    data = json.load(f)
  image_dir = os.path.join(out_root, "images", split)
  os.makedirs(image_dir, exist_ok=True)
  for scene in data["scenes"]:
    with PIL.Image.open(os.path.join(root, "images", split, scene["image_filename"])) as image:
      width, height = image.size
      small = image.convert("RGB").resize((image_size, image_size), PIL.Image.BILINEAR)
    small.save(os.path.join(image_dir, scene["image_filename"]), optimize=True)
    for obj in scene["objects"]:
      x, y, depth = obj["pixel_coords"]
      obj["pixel_coords"] = [round(x * image_size / width, 3),
                             round(y * image_size / height, 3), depth]
  data["info"] = dict(data["info"], resized_to=[image_size, image_size])
  write_scenes(_scenes_path(out_root, split), data["info"], data["scenes"])


def cli(*, root: str, splits: dict[str, int], seed: int, assets: str, samples: int,
        workers: int = 1, blender: str | None = None, scenes_file: str | None = None,
        out: str | None = None, overwrite: bool = False, limit: int | None = None,
        width: int = generator.WIDTH, height: int = generator.HEIGHT,
        threads: int | None = None, progress: bool = True) -> dict[str, int]:
  """The work of ``python -m experiments.clevr.render --engine=blender ...``.

  Either renders sampled splits into ``root`` (CLEVR v1.0 layout, resuming a killed run), or,
  with ``scenes_file``, the scenes of that CLEVR scene file into ``out``.

  Args:
    root: The dataset folder (splits mode).
    splits: Images per split, e.g. ``{"train": 0, "val": 500}``; splits of 0 are skipped.
    seed: The dataset seed (splits mode).
    assets: CLEVR's assets folder.
    samples: Cycles samples per pixel.
    workers: Blender processes.
    blender: The Blender executable (None: ``blender`` on PATH).
    scenes_file: Render this scene file's scenes instead of sampling splits.
    out: The folder for ``scenes_file``'s images (required with it, refused without it).
    overwrite: Re-render splits rendered with other settings (splits mode).
    limit: Render only the first this many scenes of ``scenes_file``.
    width, height: Image size (CLEVR v1.0: 480 x 320).
    threads: Threads per Blender process (None: the CPUs divided among the workers).
    progress: Show a progress bar.

  Returns:
    Per split, the images rendered now (0: it was complete); with ``scenes_file``, ``{its
    file name: images it lists in out}``.

  Raises:
    ValueError: Inconsistent arguments.
    BlenderError, FileExistsError: As ``render_split`` raises them.
  """
  options = BlenderOptions(samples=int(samples), workers=int(workers), threads=threads,
                           width=int(width), height=int(height))
  if scenes_file is not None:
    if not out:
      raise ValueError("rendering a scene file (--scenes) needs --out, the images' folder")
    paths = render_scene_file(scenes_file, out, assets=assets, options=options,
                              blender=blender, limit=limit, progress=progress)
    logging.info("Rendered the %d scenes of %s into %s.", len(paths), scenes_file, out)
    return {os.path.basename(scenes_file): len(paths)}
  if out is not None or limit is not None:
    raise ValueError("--out and --limit apply to --scenes only; splits go to --root")
  for split, count in splits.items():
    if int(count) != count or count < 0:
      raise ValueError(f"split {split!r}: the number of images must be >= 0, got {count!r}")
  if not any(splits.values()):
    raise ValueError(f"no images to render: every split's count is 0 ({splits})")
  counts = {}
  for split, count in splits.items():
    if not count:
      continue
    start = time.time()
    counts[split] = render_split(root, split, int(count), assets=assets, seed=seed,
                                 options=options, blender=blender, progress=progress,
                                 overwrite=overwrite)
    logging.info("CLEVR %r: %d of %d images rendered now (the others were done) into %s in "
                 "%.1f s.", split, counts[split], count, root, time.time() - start)
  return counts
