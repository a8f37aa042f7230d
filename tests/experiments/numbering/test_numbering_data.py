"""Tests of the class-specific numbering data (experiments/numbering/data.py)."""

import numpy as np
import pytest

from experiments.numbering import data as nd

_REFERENCE_FILES = ["class_numbering.npz", "class_numbering_8cls.npz", "class_numbering_small.npz"]


# Targets.


@pytest.mark.parametrize(
  "inputs, expected",
  [
    ([0, 0, 1, 0, 1, 2], [0, 1, 0, 2, 1, 0]),
    ([3, 3, 3, 3], [0, 1, 2, 3]),
    ([2, 0, 1, 3], [0, 0, 0, 0]),
    ([1, 0, 1, 0, 0, 1, 1], [0, 0, 1, 1, 2, 2, 3]),
    ([5], [0]),
  ],
)
def test_targets_on_hand_checked_examples(inputs, expected):
  targets = nd.numbering_targets(np.array(inputs))
  assert targets.dtype == np.int32
  np.testing.assert_array_equal(targets, expected)


def test_targets_keep_leading_axes_and_treat_sets_independently():
  inputs = np.array([[[0, 0, 1], [1, 1, 1]], [[2, 0, 2], [0, 1, 0]]])  # [2, 2, 3]
  expected = np.array([[[0, 1, 0], [0, 1, 2]], [[0, 0, 1], [0, 0, 1]]])
  np.testing.assert_array_equal(nd.numbering_targets(inputs), expected)


def test_targets_match_a_direct_count():
  inputs, _ = nd.make_numbering_dataset(n_samples=50, set_size=20, n_classes=6, seed=3)
  expected = [[np.sum(row[: k + 1] == row[k]) - 1 for k in range(row.size)] for row in inputs]
  np.testing.assert_array_equal(nd.numbering_targets(inputs), expected)


def test_targets_reject_non_integer_inputs():
  with pytest.raises(ValueError, match="integer class ids"):
    nd.numbering_targets(np.zeros((2, 3)))


@pytest.mark.parametrize("filename", _REFERENCE_FILES)
def test_targets_and_one_hots_match_reference(reference_dir, filename):
  ref = np.load(reference_dir / filename)
  set_size, n_classes = int(ref["set_size"]), int(ref["n_classes"])
  targets = nd.numbering_targets(ref["inputs"])
  np.testing.assert_array_equal(targets, ref["targets"])
  x, y = nd.one_hot_batch(ref["inputs"], targets, n_classes=n_classes, set_size=set_size)
  assert x.dtype == np.float32 and y.dtype == np.float32
  np.testing.assert_array_equal(x, ref["inputs_onehot"])
  np.testing.assert_array_equal(y, ref["targets_onehot"])
  # The reference's sets obey the generator's contract too.
  distinct = [np.unique(row).size for row in ref["inputs"]]
  assert max(distinct) <= int(ref["n_obj_per_sample"])


# Generator.


def test_generator_shapes_ranges_and_targets():
  inputs, targets = nd.make_numbering_dataset(n_samples=300, n_classes=8, seed=0)
  assert inputs.shape == targets.shape == (300, nd.SET_SIZE)
  assert inputs.dtype == targets.dtype == np.int32
  assert inputs.min() >= 0 and inputs.max() < 8
  assert targets.min() == 0 and targets.max() < nd.SET_SIZE
  np.testing.assert_array_equal(targets, nd.numbering_targets(inputs))


@pytest.mark.parametrize("n_classes, n_per_sample", [(4, 4), (8, 4), (5, 3), (3, 1)])
def test_generator_draws_n_per_sample_distinct_classes(n_classes, n_per_sample):
  inputs, _ = nd.make_numbering_dataset(
    n_samples=500, set_size=64, n_classes=n_classes, n_per_sample=n_per_sample, seed=1
  )
  # With 64 elements, a drawn class goes unused with probability below 1e-7 per set.
  distinct = np.array([np.unique(row).size for row in inputs])
  np.testing.assert_array_equal(distinct, n_per_sample)


def test_generator_is_uniform_over_classes_and_elements():
  n, s = 4000, 16
  inputs, _ = nd.make_numbering_dataset(n_samples=n, set_size=s, n_classes=8, seed=2)
  # Each class is among a set's 4 drawn classes with probability 4/8.
  present = np.stack([(inputs == c).any(axis=1) for c in range(8)], axis=1)  # [N, 8]
  np.testing.assert_allclose(present.mean(axis=0), 0.5, atol=0.04)
  # Each element picks one of the 4 drawn classes uniformly: a class, when present, holds s/4.
  counts = np.stack([(inputs == c).sum(axis=1) for c in range(8)], axis=1)  # [N, 8]
  np.testing.assert_allclose(counts.sum(axis=0) / present.sum(axis=0), s / 4, rtol=0.05)


def test_generator_is_deterministic_from_its_seed():
  first = nd.make_numbering_dataset(n_samples=20, set_size=12, n_classes=5, seed=7)
  again = nd.make_numbering_dataset(n_samples=20, set_size=12, n_classes=5, seed=7)
  other = nd.make_numbering_dataset(n_samples=20, set_size=12, n_classes=5, seed=8)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])
  assert not np.array_equal(first[0], other[0])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(n_classes=3, n_per_sample=4), r"n_classes \(3\) must be at least n_per_sample \(4\)"),
    (dict(n_samples=0), "n_samples must be a positive integer"),
    (dict(set_size=-1), "set_size must be a positive integer"),
    (dict(n_per_sample=0), "n_per_sample must be a positive integer"),
  ],
)
def test_generator_rejects_bad_sizes(kwargs, message):
  options = dict(n_samples=4, set_size=8, n_classes=4, n_per_sample=2, seed=0) | kwargs
  with pytest.raises(ValueError, match=message):
    nd.make_numbering_dataset(**options)


def test_paper_sizes():
  assert nd.TRAIN_SIZES == {"1x": 640, "10x": 6400, "100x": 64000}
  assert nd.TRAIN_EPOCHS == {"1x": 10000, "10x": 1000, "100x": 100}
  assert (nd.VAL_SIZE, nd.TEST_SIZE, nd.SET_SIZE) == (6400, 64000, 64)


def test_splits_have_their_sizes_and_independent_streams():
  splits = nd.make_numbering_splits(
    train_size=40, val_size=30, test_size=20, set_size=8, n_classes=4, seed=0
  )
  assert {k: v[0].shape for k, v in splits.items()} == {
    "train": (40, 8),
    "val": (30, 8),
    "test": (20, 8),
  }
  assert not np.array_equal(splits["train"][0][:20], splits["test"][0])
  # Changing the training size leaves the evaluation sets unchanged.
  bigger = nd.make_numbering_splits(
    train_size=80, val_size=30, test_size=20, set_size=8, n_classes=4, seed=0
  )
  np.testing.assert_array_equal(bigger["val"][0], splits["val"][0])
  np.testing.assert_array_equal(bigger["test"][0], splits["test"][0])


# One-hots and data augmentation.


def test_one_hot_batch_rejects_sets_wider_than_the_one_hot():
  inputs, targets = nd.make_numbering_dataset(n_samples=2, set_size=10, n_classes=4, seed=0)
  with pytest.raises(ValueError, match="more than the target one-hot width set_size=8"):
    nd.one_hot_batch(inputs, targets, n_classes=4, set_size=8)


def test_one_hot_batch_rejects_out_of_range_classes():
  inputs, targets = nd.make_numbering_dataset(n_samples=2, set_size=10, n_classes=6, seed=0)
  inputs[0, 0] = 5
  with pytest.raises(ValueError, match=r"class ids must lie in \[0, 4\)"):
    nd.one_hot_batch(inputs, targets, n_classes=4, set_size=10)


def test_one_hot_batch_pads_targets_to_a_wider_one_hot():
  inputs, targets = nd.make_numbering_dataset(n_samples=3, set_size=6, n_classes=4, seed=0)
  x, y = nd.one_hot_batch(inputs, targets, n_classes=4, set_size=9)
  assert x.shape == (3, 6, 4) and y.shape == (3, 6, 9)
  np.testing.assert_array_equal(y.argmax(-1), targets)


def _decode(x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """Unique id class * W + target of every element, shape [B, S]."""
  return x.argmax(-1) * y.shape[-1] + y.argmax(-1)


def test_augmentation_permutes_each_set_and_keeps_pairs_aligned():
  inputs, targets = nd.make_numbering_dataset(n_samples=32, set_size=12, n_classes=4, seed=0)
  x0, y0 = nd.one_hot_batch(inputs, targets, n_classes=4, set_size=12)
  x, y = nd.one_hot_batch(
    inputs, targets, n_classes=4, set_size=12, permute_rng=np.random.default_rng(0)
  )
  # Within a set every (class, target) pair is unique, so it names its element: recover the
  # permutation from it and check it moves inputs and targets together.
  ids0, ids = _decode(x0, y0), _decode(x, y)
  np.testing.assert_array_equal(np.sort(ids, axis=1), np.sort(ids0, axis=1))
  perm = np.array([[list(row0).index(v) for v in row] for row0, row in zip(ids0, ids, strict=True)])
  np.testing.assert_array_equal(np.take_along_axis(inputs, perm, axis=1), x.argmax(-1))
  np.testing.assert_array_equal(np.take_along_axis(targets, perm, axis=1), y.argmax(-1))
  # The sets are really shuffled, and each with its own permutation.
  assert not np.array_equal(perm, np.broadcast_to(np.arange(12), perm.shape))
  assert len({tuple(p) for p in perm}) > 1
  # The model can no longer read the numbering from the positions.
  assert not np.array_equal(y.argmax(-1), nd.numbering_targets(x.argmax(-1)))


def test_augmentation_is_deterministic_from_the_generator():
  inputs, targets = nd.make_numbering_dataset(n_samples=8, set_size=12, n_classes=4, seed=0)
  kwargs = dict(n_classes=4, set_size=12)
  first = nd.one_hot_batch(inputs, targets, permute_rng=np.random.default_rng(5), **kwargs)
  again = nd.one_hot_batch(inputs, targets, permute_rng=np.random.default_rng(5), **kwargs)
  np.testing.assert_array_equal(first[0], again[0])
  np.testing.assert_array_equal(first[1], again[1])


# Batches.


@pytest.fixture(scope="module")
def small_dataset():
  return nd.make_numbering_dataset(n_samples=10, set_size=8, n_classes=4, seed=0)


def test_batches_cover_each_epoch_once(small_dataset):
  inputs, targets = small_dataset
  batches = nd.NumberingBatches(inputs, targets, batch_size=3, n_classes=4, seed=0)
  assert batches.steps_per_epoch == 3
  for epoch in range(2):
    order = batches.epoch_order(epoch)
    np.testing.assert_array_equal(np.sort(order), np.arange(10))
    for index in range(3):
      step = epoch * 3 + index
      rows = order[3 * index : 3 * index + 3]
      x, y = nd.one_hot_batch(inputs[rows], targets[rows], n_classes=4, set_size=8)
      batch = batches.batch(step)
      np.testing.assert_array_equal(batch["inputs"], x)
      np.testing.assert_array_equal(batch["targets"], y)
  assert not np.array_equal(batches.epoch_order(0), batches.epoch_order(1))


def test_batches_keep_the_remainder_when_asked(small_dataset):
  batches = nd.NumberingBatches(
    *small_dataset, batch_size=4, n_classes=4, seed=0, drop_remainder=False, num_epochs=2
  )
  sizes = [batch["inputs"].shape[0] for batch in batches]
  assert sizes == [4, 4, 2, 4, 4, 2] and len(batches) == 6


def test_batches_without_shuffle_keep_the_dataset_order(small_dataset):
  inputs, targets = small_dataset
  batches = nd.NumberingBatches(inputs, targets, batch_size=5, n_classes=4, seed=0, shuffle=False)
  np.testing.assert_array_equal(batches.batch(3)["inputs"].argmax(-1), inputs[5:])


@pytest.mark.parametrize("permute", [False, True])
def test_batches_resume_exactly(small_dataset, permute):
  def make():
    return nd.NumberingBatches(
      *small_dataset, batch_size=3, n_classes=4, seed=11, permute=permute, num_epochs=3
    )

  full = list(make())
  resumed = list(make().iterate(start_step=4))
  assert len(full) == 9 and len(resumed) == 5
  for a, b in zip(full[4:], resumed, strict=True):
    np.testing.assert_array_equal(a["inputs"], b["inputs"])
    np.testing.assert_array_equal(a["targets"], b["targets"])


def test_batches_with_augmentation_permute_anew_each_epoch(small_dataset):
  batches = nd.NumberingBatches(
    *small_dataset, batch_size=10, n_classes=4, seed=0, shuffle=False, permute=True
  )
  first, second = batches.batch(0), batches.batch(1)
  ids = _decode(first["inputs"], first["targets"]), _decode(second["inputs"], second["targets"])
  np.testing.assert_array_equal(np.sort(ids[0], axis=1), np.sort(ids[1], axis=1))
  assert not np.array_equal(ids[0], ids[1])


@pytest.mark.parametrize(
  "kwargs, message",
  [
    (dict(batch_size=11), r"batch_size \(11\) exceeds the 10 examples"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(n_classes=2), r"class ids must lie in \[0, 2\)"),
    (dict(set_size=4), "more than the target one-hot width set_size=4"),
    (dict(num_epochs=0), "num_epochs must be a positive integer"),
  ],
)
def test_batches_reject_bad_options(small_dataset, kwargs, message):
  options = dict(batch_size=2, n_classes=4, seed=0) | kwargs
  with pytest.raises(ValueError, match=message):
    nd.NumberingBatches(*small_dataset, **options)


def test_batches_reject_negative_steps(small_dataset):
  batches = nd.NumberingBatches(*small_dataset, batch_size=2, n_classes=4, seed=0)
  with pytest.raises(ValueError, match="start_step must be non-negative"):
    next(batches.iterate(start_step=-1))
  with pytest.raises(ValueError, match="step must be non-negative"):
    batches.batch(-2)
  with pytest.raises(TypeError, match="no length"):
    len(batches)
