"""Evaluation metrics: CLEVR object average precision and numbering accuracy.

CLEVR object rows have 19 features: 3D coordinates / 3, material (2), color (8), shape (3),
size (2) one-hots, then a mask bit (1 = object present).
"""

import jax
import jax.numpy as jnp
import numpy as np

CLEVR_THRESHOLDS = (float("inf"), 1.0, 0.5, 0.25, 0.125, 0.0625)
# Feature slices of a CLEVR object row.
_COORDS = slice(0, 3)
_ATTRIBUTES = (slice(3, 5), slice(5, 13), slice(13, 16), slice(16, 18))
_MASK = 18
# The coordinates were divided by 3 in the data; distances are in the scene's units.
_COORD_SCALE = 3.0


def _attributes(objects: np.ndarray) -> np.ndarray:
  """Argmax of each attribute one-hot; [N, 19] -> [N, 4]."""
  return np.stack([np.argmax(objects[:, s], axis=-1) for s in _ATTRIBUTES], axis=-1)


def _interpolated_ap(recall: np.ndarray, precision: np.ndarray) -> float:
  """All-point interpolated area under a precision/recall curve (as PASCAL VOC); [P] -> []."""
  mrec = np.concatenate([[0.0], recall, [1.0]])  # [P + 2]
  mpre = np.concatenate([[0.0], precision, [0.0]])  # [P + 2]
  # Precision envelope: the best precision at this recall or any higher one.
  mpre = np.maximum.accumulate(mpre[::-1])[::-1]
  steps = np.nonzero(mrec[1:] != mrec[:-1])[0] + 1
  return float(np.sum((mrec[steps] - mrec[steps - 1]) * mpre[steps]))


def _image_ap(pred: np.ndarray, target: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
  """AP of one image at each threshold; [N, 19] x [M, 19] x [T] -> [T]."""
  present = target[:, _MASK] == 1
  true_attributes = _attributes(target[present])  # [G, 4]
  true_coords = target[present, _COORDS] * _COORD_SCALE  # [G, 3]
  free = np.ones(len(true_coords), bool)  # [G]
  order = np.argsort(-pred[:, _MASK], kind="stable")  # [N]
  pred_attributes = _attributes(pred)  # [N, 4]
  true_positive = np.zeros((len(thresholds), len(order)), bool)  # [T, N]
  for rank, k in enumerate(order):
    candidates = free & np.all(true_attributes == pred_attributes[k], axis=-1)  # [G]
    if not candidates.any():
      continue  # A false positive at every threshold.
    dist = np.linalg.norm(true_coords - pred[k, _COORDS] * _COORD_SCALE, axis=-1)  # [G]
    closest = int(np.argmin(np.where(candidates, dist, np.inf)))  # first of equal distances
    free[closest] = False
    true_positive[:, rank] = dist[closest] < thresholds
  hits = np.cumsum(true_positive, axis=1)  # [T, N]
  precision = hits / np.arange(1, len(order) + 1)  # [T, N]
  # An image without true objects has no recall: count it as 0 (so its AP is 0).
  recall = hits / max(len(true_coords), 1)  # [T, N]
  return np.array([_interpolated_ap(r, p) for r, p in zip(recall, precision, strict=True)])


def average_precision(
  pred: jax.typing.ArrayLike,
  target: jax.typing.ArrayLike,
  thresholds: tuple[float, ...] = CLEVR_THRESHOLDS,
) -> np.ndarray:
  """CLEVR object average precision at each distance threshold, averaged over images.

  Every predicted row is a prediction; they are taken in descending order of their mask value
  (ties keep row order). Each takes the closest (Euclidean distance of the coordinates times 3)
  not-yet-taken true object (mask == 1) with the same material, color, shape and size (argmax
  of each one-hot); that object is taken whether or not it is within a threshold, once for all
  thresholds. The prediction is a true positive at a threshold when the distance is strictly
  under it, else a false positive; with no such object left it is a false positive everywhere.
  Recall divides by the number of true objects. Each image's AP is the all-point interpolated
  area under its precision/recall curve (PASCAL VOC); the result is the mean over images.

  This runs on the host in numpy (it is an evaluation metric, not part of a jitted step).

  Args:
    pred: Predicted objects of shape [B, N, 19].
    target: True objects of shape [B, M, 19] (padding rows have mask 0).
    thresholds: Distance thresholds, each positive (`inf` allowed), of length T.

  Returns:
    The mean AP at each threshold, a float64 numpy array of shape [T].

  Raises:
    ValueError: for shapes other than [B, N, 19] / [B, M, 19] or a threshold that is not
      positive.
  """
  pred = np.asarray(pred, np.float64)
  target = np.asarray(target, np.float64)
  thresholds = np.asarray(thresholds, np.float64).reshape(-1)  # [T]
  if pred.ndim != 3 or target.ndim != 3 or pred.shape[-1] != 19 or target.shape[-1] != 19:
    raise ValueError(
      f"pred and target must have shape [B, N, 19]; got {pred.shape} and {target.shape}"
    )
  if pred.shape[0] != target.shape[0]:
    raise ValueError(f"pred and target batch sizes differ: {pred.shape[0]} != {target.shape[0]}")
  if thresholds.size == 0 or not np.all(thresholds > 0):
    raise ValueError(f"thresholds must be positive (inf allowed); got {thresholds.tolist()}")
  if pred.shape[0] == 0:
    raise ValueError("average_precision needs at least one image")
  per_image = [_image_ap(p, t, thresholds) for p, t in zip(pred, target, strict=True)]
  return np.mean(per_image, axis=0)  # [T]


def numbering_accuracy(
  pred: jax.typing.ArrayLike, target: jax.typing.ArrayLike, matching: jax.typing.ArrayLike
) -> tuple[jax.Array, jax.Array]:
  """Micro and macro accuracy of the class-specific numbering task after matching.

  Args:
    pred: Predicted numberings of shape [B, N, D] (scores; the argmax is the prediction).
    target: One-hot target numberings of shape [B, N, D].
    matching: The matched prediction of each target element, of shape [B, N] (the `cols`
      returned by `hungarian_loss_numbering`).

  Returns:
    micro: Per set, the fraction of matched pairs whose argmaxes agree, of shape [B].
    macro: Per set, 1.0 when every matched pair agrees, else 0.0, of shape [B].
    (Average each over the sets for the dataset figures.)
  """
  pred, target, matching = jnp.asarray(pred), jnp.asarray(target), jnp.asarray(matching)
  if pred.ndim != 3 or pred.shape != target.shape or matching.shape != pred.shape[:2]:
    raise ValueError(
      "pred and target must have shape [B, N, D] and matching [B, N]; got "
      f"{pred.shape}, {target.shape} and {matching.shape}"
    )
  pred_label = jnp.argmax(pred, axis=-1)  # [B, N]
  matched_label = jnp.take_along_axis(pred_label, matching, axis=1)  # [B, N]
  correct = matched_label == jnp.argmax(target, axis=-1)  # [B, N]
  dtype = pred.dtype if jnp.issubdtype(pred.dtype, jnp.floating) else jnp.float32
  return jnp.mean(correct, axis=1).astype(dtype), jnp.all(correct, axis=1).astype(dtype)
