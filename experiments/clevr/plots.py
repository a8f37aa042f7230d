"""Pictures of CLEVR predictions: images with the predicted objects drawn over them, and the
poster's table (predicted coordinates, attributes and distance to the matched true object).

Predicted 3D coordinates are projected to pixels with a camera fitted per image on its true
objects: CLEVR's nominal camera (position (7.36, -6.93, 4.96), looking at the origin) gives
perspective coordinates, and a 2D affine map to the true objects' ``pixel_coords`` (least
squares, every scene has at least 3 objects) absorbs the per-image camera jitter, the field of
view and the resize to the model's image size. Without ``pixel_coords`` (TFDS) only the true
and predicted tables are drawn.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from experiments.clevr import render
from experiments.clevr import scenes as cd
from experiments.common import plots

_CAMERA_POSITION = np.array([7.358891, -6.925791, 4.958309])


def _nominal_view(coords: np.ndarray) -> np.ndarray:
  """Perspective coordinates of world points under CLEVR's nominal camera; [K, 3] -> [K, 2]."""
  forward = -_CAMERA_POSITION / np.linalg.norm(_CAMERA_POSITION)
  right = np.cross(forward, [0.0, 0.0, 1.0])
  right /= np.linalg.norm(right)
  up = np.cross(right, forward)
  v = np.asarray(coords, np.float64) - _CAMERA_POSITION  # [K, 3]
  depth = np.maximum(v @ forward, 1e-3)  # [K]
  return np.stack([v @ right / depth, -(v @ up) / depth], axis=-1)  # [K, 2]


def fit_projection(coords: np.ndarray, pixels: np.ndarray):
  """A map from 3D scene coordinates to pixels, fitted on known objects.

  Args:
    coords: 3D coordinates (scene units) of shape [K, 3], K >= 3.
    pixels: Their pixel positions (x right, y down) of shape [K, 2].

  Returns:
    ``project(points [M, 3]) -> [M, 2]``, or None for fewer than 3 objects.
  """
  if len(coords) < 3:
    return None
  view = _nominal_view(coords)  # [K, 2]
  design = np.concatenate([view, np.ones((len(view), 1))], axis=1)  # [K, 3]
  affine, *_ = np.linalg.lstsq(design, np.asarray(pixels, np.float64), rcond=None)  # [3, 2]

  def project(points: np.ndarray) -> np.ndarray:
    view = _nominal_view(points)  # [M, 2]
    return np.concatenate([view, np.ones((len(view), 1))], axis=1) @ affine  # [M, 2]

  return project


def _describe(obj: dict) -> str:
  x, y, z = obj["3d_coords"]
  return f"({x:5.2f} {y:5.2f} {z:4.2f}) {obj['size']} {obj['color']} {obj['material']} " \
         f"{obj['shape']}"


def match_objects(pred_objects: list[dict], true_objects: list[dict]) -> list[tuple[int, float]]:
  """Matches predictions to true objects by coordinate distance (Hungarian).

  Returns:
    Per prediction, ``(true index, distance)``, or ``(-1, nan)`` when it is unmatched.
  """
  out = [(-1, float("nan"))] * len(pred_objects)
  if not pred_objects or not true_objects:
    return out
  p = np.array([o["3d_coords"] for o in pred_objects])  # [P, 3]
  t = np.array([o["3d_coords"] for o in true_objects])  # [G, 3]
  dist = np.linalg.norm(p[:, None, :] - t[None, :, :], axis=-1)  # [P, G]
  for i, j in zip(*linear_sum_assignment(dist), strict=True):
    out[i] = (int(j), float(dist[i, j]))
  return out


def _same_attributes(a: dict, b: dict) -> bool:
  return all(a[k] == b[k] for k in ("material", "color", "shape", "size"))


def plot_predictions(pred: np.ndarray, batch: dict, path: pathlib.Path, *,
                     pixel_coords: Sequence[np.ndarray | None] | None = None,
                     max_images: int = 4, threshold: float = 0.5) -> None:
  """Draws images with their predicted objects and the poster-style table into a PNG.

  Each row shows one image, true objects as white circles and predicted ones (mask above
  ``threshold``) as crosses in their predicted color, numbered as in the table beside it: the
  true objects, then the predictions in descending mask order with their distance ``d`` to the
  matched true object (green: same four attributes, red: not).

  Args:
    pred: Predicted sets of shape [B, N, 19].
    batch: ``{"image": [B, S, S, 3] in [0, 1], "set": [B, N, 19]}``.
    path: Where to write the PNG (atomically).
    pixel_coords: Per image, the true objects' pixel positions of shape [K, 2] in the model's
      image (in the order of the set's rows), or None where unknown (no overlay then).
    max_images: Images drawn at most.
    threshold: Mask value above which a predicted row is an object.
  """
  plt = plots._pyplot()
  images = np.asarray(batch["image"])
  targets = np.asarray(batch["set"])
  count = min(len(images), max_images)
  size = images.shape[1]
  fig, axes = plt.subplots(count, 2, figsize=(11, 3.4 * count), squeeze=False,
                           gridspec_kw={"width_ratios": [1, 2.3]})
  for i in range(count):
    ax_image, ax_table = axes[i]
    true_objects = cd.set_to_objects(targets[i])
    pred_objects = cd.set_to_objects(pred[i], threshold=threshold)
    pred_objects.sort(key=lambda o: -o["mask"])
    matches = match_objects(pred_objects, true_objects)
    ax_image.imshow(np.clip(images[i], 0, 1), interpolation="nearest")
    pixels = None if pixel_coords is None or i >= len(pixel_coords) else pixel_coords[i]
    project = None
    if pixels is not None and len(pixels) == len(true_objects):
      project = fit_projection(np.array([o["3d_coords"] for o in true_objects]), pixels)
    if project is not None:
      ax_image.scatter(pixels[:, 0], pixels[:, 1], s=90, facecolors="none", edgecolors="white",
                       linewidths=1.2)
      if pred_objects:
        where = project(np.array([o["3d_coords"] for o in pred_objects]))  # [P, 2]
        for k, (obj, (u, v)) in enumerate(zip(pred_objects, where, strict=True)):
          rgb = np.array(render.COLORS_RGB[obj["color"]]) / 255.0
          ax_image.scatter([u], [v], marker="x", s=50, color=rgb, linewidths=2.2)
          ax_image.annotate(str(k + 1), (u, v), xytext=(3, 3), textcoords="offset points",
                            fontsize=7, color="white", fontweight="bold")
    ax_image.set_xlim(-0.5, size - 0.5)
    ax_image.set_ylim(size - 0.5, -0.5)
    ax_image.set_xticks([])
    ax_image.set_yticks([])
    lines = [("ground truth", "black")]
    lines += [(f"    {_describe(o)}", "0.25") for o in true_objects]
    lines.append((f"prediction (mask > {threshold:g}), d = distance to the matched object",
                  "black"))
    for k, (obj, (j, dist)) in enumerate(zip(pred_objects, matches, strict=True)):
      good = j >= 0 and _same_attributes(obj, true_objects[j])
      d = f"d={dist:4.2f}" if j >= 0 else "unmatched"
      lines.append((f"{k + 1:2d}  {_describe(obj)} {d}  mask {obj['mask']:.2f}",
                    "tab:green" if good else "tab:red"))
    ax_table.axis("off")
    step = 1.0 / max(len(lines), 22)
    for row, (text, color) in enumerate(lines):
      ax_table.text(0.0, 1.0 - row * step, text, color=color, family="monospace", fontsize=6.5,
                    va="top", transform=ax_table.transAxes)
  fig.tight_layout()
  plots._save(fig, path)
  plt.close(fig)
