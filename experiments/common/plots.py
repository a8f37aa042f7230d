"""Pictures of predicted against true sets, like the paper's figures."""

from __future__ import annotations

import os
import pathlib

import numpy as np
from scipy.optimize import linear_sum_assignment


def _pyplot():
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  return plt


def _save(fig, path: pathlib.Path) -> None:
  """Writes the figure to a temporary file, then renames it: no half-written PNG is left."""
  path = pathlib.Path(path)
  tmp = path.with_suffix(".tmp.png")
  fig.savefig(tmp, dpi=100)
  os.replace(tmp, path)


def plot_matched_sets(pred: np.ndarray, target: np.ndarray, path: pathlib.Path,
                      *, max_sets: int = 8) -> None:
  """Scatter of the first two features of predicted (x) and true (o) elements, matched pairs
  (minimum total squared distance) joined by a line, one panel per set.

  Args:
    pred: Predicted sets of shape [B, N, D].
    target: True sets of shape [B, N, D].
    path: Where to write the PNG.
    max_sets: Panels drawn at most.
  """
  plt = _pyplot()
  # A diverged model must not break the picture: draw non-finite values at the border.
  pred = np.clip(np.nan_to_num(pred, nan=0.0, posinf=1e3, neginf=-1e3), -1e3, 1e3)
  count = min(len(pred), max_sets)
  cols = min(count, 4)
  rows = -(-count // cols)
  fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), squeeze=False)
  for ax, p, t in zip(axes.flat, pred[:count], target[:count]):
    cost = ((t[:, None, :] - p[None, :, :]) ** 2).sum(-1)  # [N, N]
    rows_i, cols_j = linear_sum_assignment(cost)
    for i, j in zip(rows_i, cols_j):
      ax.plot([t[i, 0], p[j, 0]], [t[i, 1 % t.shape[1]], p[j, 1 % p.shape[1]]],
              color="0.6", lw=0.8, zorder=1)
    ax.scatter(t[:, 0], t[:, 1 % t.shape[1]], marker="o", facecolors="none",
               edgecolors="tab:blue", label="true", zorder=2)
    ax.scatter(p[:, 0], p[:, 1 % p.shape[1]], marker="x", color="tab:red", label="predicted",
               zorder=3)
    ax.set_xticks([])
    ax.set_yticks([])
  for ax in list(axes.flat)[count:]:
    ax.axis("off")
  axes.flat[0].legend(loc="upper left", fontsize=7)
  fig.tight_layout()
  _save(fig, path)
  plt.close(fig)
