"""Renders CLEVR scenes with Blender from CLEVR's official assets; runs inside Blender.

  blender -b --factory-startup -noaudio -P experiments/clevr/blender_worker.py -- job.json

Started by `experiments.clevr.blender` (which samples the scenes and writes the job file); it
imports only Blender's ``bpy`` and the standard library. The job file holds::

  {"assets": folder, "samples": int, "threads": int, "width": int, "height": int,
   "mode": "render" | "flat", "parent_pid": int or null,
   "scenes": [{"output": png path, "camera_location": [3], "lamp_locations": {lamp: [3]},
               "objects": [{"shape", "size", "material", "color", "3d_coords", "rotation"}]}]}

For each scene whose output does not exist yet: open ``base_scene.blend`` afresh, move the camera
and lamps, add each object (its shape scaled by ``3d_coords[2]`` and placed at ``3d_coords``,
turned by ``rotation`` radians about z) with a node material whose surface is the asset's group
with its "Color" input set to the colour's sRGB values / 255, render with Cycles and move the
image into place (a killed render leaves no partial image). Mode "flat" renders each object in
plain emission of its colour with the ground and lamps hidden, for checking the scene's
attributes against its pixels. Prints ``RENDERED <path>`` per image. With ``parent_pid`` set,
it stops before the next scene once the process that started it has died.
"""

import json
import os
import sys

import bpy

SHAPE_ASSETS = {"cube": "SmoothCube_v2", "sphere": "Sphere", "cylinder": "SmoothCylinder"}
MATERIAL_ASSETS = {"rubber": "Rubber", "metal": "MyMetal"}
COLORS_RGB = {
  "gray": (87, 87, 87), "red": (173, 35, 35), "blue": (42, 75, 215), "green": (29, 105, 20),
  "brown": (129, 74, 25), "purple": (129, 38, 192), "cyan": (41, 208, 208),
  "yellow": (255, 238, 51),
}


def _append(path, kind, name):
  """Brings object or node group ``name`` from a .blend file into this one."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"asset file {path} is missing")
  with bpy.data.libraries.load(path) as (source, target):
    if name not in getattr(source, kind):
      raise KeyError(f"{path} holds no {kind[:-1]} named {name!r}")
    setattr(target, kind, [name])
  return getattr(target, kind)[0]


def _settings(job):
  scene = bpy.context.scene
  render = scene.render
  render.engine = "CYCLES"
  render.resolution_x, render.resolution_y = job["width"], job["height"]
  render.resolution_percentage = 100
  render.image_settings.file_format = "PNG"
  render.image_settings.color_mode = "RGB"
  render.threads_mode = "FIXED"
  render.threads = max(1, int(job["threads"]))
  cycles = scene.cycles
  cycles.device = "CPU"
  cycles.samples = int(job["samples"])
  cycles.use_adaptive_sampling = False
  cycles.use_denoising = False
  cycles.blur_glossy = 2.0
  cycles.transparent_max_bounces = 8
  cycles.seed = 0
  if job["mode"] == "flat":
    cycles.samples = 1
    cycles.filter_width = 0.01
    cycles.max_bounces = 0


def _material(kind, color, mode):
  rgba = [c / 255.0 for c in COLORS_RGB[color]] + [1.0]
  mat = bpy.data.materials.new(name=f"{kind}_{color}")
  mat.use_nodes = True
  nodes, links = mat.node_tree.nodes, mat.node_tree.links
  for node in list(nodes):
    nodes.remove(node)
  output = nodes.new("ShaderNodeOutputMaterial")
  if mode == "flat":
    shader = nodes.new("ShaderNodeEmission")
    shader.inputs["Color"].default_value = rgba
    shader.inputs["Strength"].default_value = 1.0
    links.new(shader.outputs["Emission"], output.inputs["Surface"])
  else:
    group = nodes.new("ShaderNodeGroup")
    group.node_tree = bpy.data.node_groups[MATERIAL_ASSETS[kind]]
    group.inputs["Color"].default_value = rgba
    links.new(group.outputs["Shader"], output.inputs["Surface"])
  return mat


def render_scene(job, spec):
  assets = job["assets"]
  bpy.ops.wm.open_mainfile(filepath=os.path.join(assets, "base_scene.blend"))
  _settings(job)
  scene = bpy.context.scene
  objects = bpy.data.objects
  if spec.get("camera_location") is not None:
    objects["Camera"].location = spec["camera_location"]
  for lamp, location in (spec.get("lamp_locations") or {}).items():
    objects[lamp].location = location
  if job["mode"] == "flat":
    for name in ("Ground", "Lamp_Key", "Lamp_Back", "Lamp_Fill", "Area"):
      if name in objects:
        objects[name].hide_render = True
  else:
    for kind in sorted({o["material"] for o in spec["objects"]}):
      _append(os.path.join(assets, "materials", MATERIAL_ASSETS[kind] + ".blend"), "node_groups",
              MATERIAL_ASSETS[kind])
  collection = scene.collection
  for k, obj in enumerate(spec["objects"]):
    asset = SHAPE_ASSETS[obj["shape"]]
    source = _append(os.path.join(assets, "shapes", asset + ".blend"), "objects", asset)
    instance = source.copy()
    instance.name = f"object_{k}"
    collection.objects.link(instance)
    x, y, scale = obj["3d_coords"]
    instance.scale = (scale, scale, scale)
    instance.location = (x, y, scale)
    instance.rotation_euler = (0.0, 0.0, obj["rotation"])
    instance.data = instance.data.copy()
    instance.data.materials.clear()
    instance.data.materials.append(_material(obj["material"], obj["color"], job["mode"]))
  output = spec["output"]
  partial = f"{output}.partial-{os.getpid()}.png"
  scene.render.filepath = partial
  bpy.ops.render.render(write_still=True)
  os.replace(partial, output)
  print(f"RENDERED {output}", flush=True)


def main(argv):
  if len(argv) != 1:
    raise SystemExit("usage: blender -b -P blender_worker.py -- job.json")
  with open(argv[0]) as f:
    job = json.load(f)
  # The process that started Blender (the host, or a wrapper script between them): when it
  # dies, this process is handed to another parent.
  started_by = os.getppid()
  for spec in job["scenes"]:
    if job.get("parent_pid") is not None and os.getppid() != started_by:
      print("parent process gone; stopping", flush=True)
      return
    if os.path.exists(spec["output"]):
      continue
    render_scene(job, spec)


if __name__ == "__main__":
  args = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
  try:
    main(args)
  except BaseException as err:  # Blender keeps running after a script's error: exit non-zero.
    import traceback

    traceback.print_exc()
    print(f"BLENDER WORKER FAILED: {err}", flush=True)
    sys.stdout.flush()
    os._exit(1)
  sys.stdout.flush()
  os._exit(0)
