"""Tests of idspn_jax.metrics on hand-made cases whose values are worked out in the comments."""

import numpy as np
import pytest

from idspn_jax import metrics

THRESHOLDS = (np.inf, 1.0, 0.5, 0.25, 0.125, 0.0625)


def clevr_object(coords, material, color, shape, size, mask=1.0):
  """One 19-feature CLEVR row; `coords` in data units (scene units / 3)."""
  row = np.zeros(19)
  row[0:3] = coords
  row[3 + material] = 1
  row[5 + color] = 1
  row[13 + shape] = 1
  row[16 + size] = 1
  row[18] = mask
  return row


def scene():
  """Three true objects (none with all-zero attributes, so padding rows never match)."""
  objects = np.zeros((10, 19))
  objects[0] = clevr_object([0.0, 0.0, 0.1], 1, 2, 1, 1)
  objects[1] = clevr_object([0.5, 0.5, 0.1], 0, 3, 2, 0)
  objects[2] = clevr_object([-0.5, 0.3, 0.2], 1, 4, 0, 1)
  return objects


def with_masks(pred, masks):
  pred = pred.copy()
  pred[:3, 18] = masks
  return pred


def test_perfect_prediction():
  # TP, TP, TP, then 7 padding rows with no candidate left (FP): precision 1 up to recall 1,
  # so AP = 1 at every threshold.
  target = scene()
  ap = metrics.average_precision(target[None], target[None], THRESHOLDS)
  np.testing.assert_allclose(ap, np.ones(6))


def test_one_wrong_attribute():
  # Ranked by mask: obj0 TP, obj1 (wrong color) FP, obj2 TP, then FPs.
  # Precision 1, 1/2, 2/3 at recall 1/3, 1/3, 2/3; the envelope is 1 at recall 1/3 and 2/3 at
  # recall 2/3; AP = 1/3 * 1 + 1/3 * 2/3 = 5/9 at every threshold.
  target = scene()
  pred = with_masks(target, [0.9, 0.8, 0.7])
  pred[1, 5:13] = np.eye(8)[7]
  np.testing.assert_allclose(metrics.average_precision(pred[None], target[None]), np.full(6, 5 / 9))


def test_one_object_too_far():
  # obj1 is 0.1 data units = 0.3 scene units off: a TP under 0.5 and above, a FP under 0.25 and
  # below (then it is as in test_one_wrong_attribute: 5/9).
  target = scene()
  pred = with_masks(target, [0.9, 0.8, 0.7])
  pred[1, 0] += 0.1
  expected = [1, 1, 1, 5 / 9, 5 / 9, 5 / 9]
  np.testing.assert_allclose(metrics.average_precision(pred[None], target[None]), expected)


def test_mask_ordering():
  target = scene()
  pred = target.copy()
  pred[1, 5:13] = np.eye(8)[7]  # obj1 has a wrong color.
  # Ranked last among the three: TP, TP, FP: precision 1, 1, 2/3 at recall 1/3, 2/3, 2/3,
  # AP = 2/3.
  low = with_masks(pred, [0.9, 0.2, 0.7])
  np.testing.assert_allclose(metrics.average_precision(low[None], target[None]), np.full(6, 2 / 3))
  # Ranked first: FP, TP, TP: precision 0, 1/2, 2/3 at recall 0, 1/3, 2/3; the envelope is 2/3
  # at both recalls: AP = 2/3 * 2/3 = 4/9.
  high = with_masks(pred, [0.5, 0.95, 0.7])
  np.testing.assert_allclose(metrics.average_precision(high[None], target[None]), np.full(6, 4 / 9))
  # Ties keep row order: all masks equal ranks obj0, obj1, obj2: TP, FP, TP = 5/9.
  tied = with_masks(pred, [1.0, 1.0, 1.0])
  np.testing.assert_allclose(metrics.average_precision(tied[None], target[None]), np.full(6, 5 / 9))
  # The mean over images: (2/3 + 4/9) / 2 = 5/9.
  both = np.stack([low, high])
  np.testing.assert_allclose(metrics.average_precision(both, np.stack([target, target])), 5 / 9)


def test_taken_object_is_used_once():
  # Two predictions of obj0, the first (higher mask) 0.3 scene units off: it takes obj0 (a FP
  # under 0.25), so the exact second one finds no candidate and is a FP everywhere.
  # At inf..0.5: TP, FP, TP(obj1), TP(obj2): precision 1, 1/2, 2/3, 3/4 at recall 1/3, 1/3, 2/3,
  # 1: envelope 1, 3/4, 3/4: AP = 1/3 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6.
  # At 0.25 and below: FP, FP, TP, TP: precision 0, 0, 1/3, 1/2 at recall 0, 0, 1/3, 2/3:
  # AP = 1/3 * 1/2 + 1/3 * 1/2 = 1/3.
  target = scene()
  pred = np.zeros((10, 19))
  pred[0] = target[0]
  pred[0, 1] += 0.1
  pred[0, 18] = 0.99
  pred[1] = target[0]
  pred[1, 18] = 0.98
  pred[2:4] = target[1:3]
  pred[2:4, 18] = [0.5, 0.4]
  expected = [5 / 6, 5 / 6, 5 / 6, 1 / 3, 1 / 3, 1 / 3]
  np.testing.assert_allclose(metrics.average_precision(pred[None], target[None]), expected)


def test_average_precision_bad_inputs():
  target = scene()[None]
  for bad in [(0.5, 0.0), (-1.0,), ()]:
    with pytest.raises(ValueError, match="thresholds"):
      metrics.average_precision(target, target, bad)
  with pytest.raises(ValueError, match="shape"):
    metrics.average_precision(target[..., :18], target)
  with pytest.raises(ValueError, match="batch"):
    metrics.average_precision(np.concatenate([target, target]), target)


def test_numbering_accuracy():
  target = np.eye(3)[[[0, 1, 2], [0, 1, 2]]]  # [2, 3, 3]
  pred = np.eye(3)[[[2, 1, 0], [1, 1, 2]]] * 0.8 + 0.05  # [2, 3, 3]
  matching = np.array([[2, 1, 0], [0, 1, 2]])
  micro, macro = metrics.numbering_accuracy(pred, target, matching)
  # Set 0: target i gets pred cols[i] = 2, 1, 0 with labels 0, 1, 2: all right.
  # Set 1: labels 1, 1, 2 against 0, 1, 2: 2 of 3 right.
  np.testing.assert_allclose(micro, [1.0, 2 / 3])
  np.testing.assert_allclose(macro, [1.0, 0.0])
  with pytest.raises(ValueError, match="shape"):
    metrics.numbering_accuracy(pred, target, matching[:, :2])
