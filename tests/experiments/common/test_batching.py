"""The one batch iterator of the three experiments: order, resumption, remainders, threads."""

import logging

import numpy as np
import pytest

from experiments.common import batching


def _arrays(n=10):
  return {"x": np.arange(n) * 10, "y": np.arange(n)[:, None] * np.ones((1, 3))}


def _batches(n=10, **options):
  options = dict(batch_size=3, seed=7) | options
  return batching.Batches(n, batching.take(_arrays(n)), **options)


def test_each_epoch_reads_a_permutation_from_seed_and_epoch():
  batches = _batches()
  assert batches.steps_per_epoch == 3
  for epoch in range(3):
    order = np.random.default_rng([7, epoch]).permutation(10)
    np.testing.assert_array_equal(batches.epoch_order(epoch), order)
    for k in range(3):
      step = 3 * epoch + k
      np.testing.assert_array_equal(batches.batch(step)["x"], 10 * order[3 * k:3 * k + 3])
  assert not np.array_equal(batches.epoch_order(0), batches.epoch_order(1))


def test_a_resumed_iteration_sees_the_same_batches():
  full = list(_batches().iterate(0, num_steps=8))
  resumed = list(_batches().iterate(5, num_steps=3))
  for a, b in zip(full[5:], resumed, strict=True):
    np.testing.assert_array_equal(a["y"], b["y"])


def test_threaded_loading_gives_the_same_batches_in_order():
  plain = list(_batches().iterate(2, num_steps=6))
  threaded = list(_batches(num_threads=2, prefetch=2).iterate(2, num_steps=6))
  for a, b in zip(plain, threaded, strict=True):
    np.testing.assert_array_equal(a["x"], b["x"])


def test_load_sees_the_epoch_and_the_batch_index():
  seen = []
  batches = batching.Batches(7, lambda i, e, k: seen.append((e, k)) or {"i": i}, batch_size=2)
  list(batches.iterate(0, num_steps=5))
  assert seen == [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1)]


def test_sorted_take_reads_each_batch_in_index_order():
  batches = batching.Batches(10, batching.take(_arrays(), sort=True), batch_size=4, seed=3)
  indices = batches.batch_indices(1)
  np.testing.assert_array_equal(batches.batch(1)["x"], 10 * np.sort(indices))


def test_an_evaluation_pass_reads_in_order_and_logs_the_skipped_remainder(caplog):
  with caplog.at_level(logging.WARNING):
    batches = _batches(shuffle=False, num_epochs=1, batch_size=4, split="val")
  assert "The val split's last 2 examples do not fill a batch of 4: skipped" in caplog.text
  assert len(batches) == 2
  np.testing.assert_array_equal(np.concatenate([b["x"] for b in batches]), 10 * np.arange(8))
  kept = _batches(shuffle=False, num_epochs=2, batch_size=4, drop_remainder=False)
  assert [len(b["x"]) for b in kept] == [4, 4, 2, 4, 4, 2]


def test_a_padded_evaluation_pass_reads_every_example_in_full_batches():
  batches = _batches(shuffle=False, num_epochs=1, batch_size=4, drop_remainder=False,
                     pad_remainder=True, split="val")
  assert batches.padded and len(batches) == 3
  read = list(batches)
  assert [len(b["x"]) for b in read] == [4, 4, 4]
  valid = np.concatenate([b[batching.VALID] for b in read])
  assert valid.dtype == np.float32 and valid.tolist() == [1.0] * 10 + [0.0] * 2
  x = np.concatenate([b["x"] for b in read])
  np.testing.assert_array_equal(x[valid > 0], 10 * np.arange(10))
  # Each of 2 processes loads half of every batch, its mask's half with it.
  shares = [_batches(shuffle=False, num_epochs=1, batch_size=4, drop_remainder=False,
                     pad_remainder=True, process_index=p, process_count=2).batch(2)
            for p in range(2)]
  np.testing.assert_array_equal(np.concatenate([s["x"] for s in shares]), read[2]["x"])
  assert [s[batching.VALID].tolist() for s in shares] == [[1.0, 1.0], [0.0, 0.0]]
  # Without a remainder nothing is padded and batches carry no mask.
  even = _batches(8, shuffle=False, num_epochs=1, batch_size=4, drop_remainder=False,
                  pad_remainder=True)
  assert not even.padded and batching.VALID not in even.batch(1)
  with pytest.raises(ValueError, match="drop_remainder and pad_remainder exclude each other"):
    _batches(pad_remainder=True)


@pytest.mark.parametrize("options, error, message", [
  (dict(batch_size=11), ValueError, r"batch_size \(11\) exceeds the 10 examples"),
  (dict(batch_size=11, split="val"), ValueError,
   r"batch_size \(11\) exceeds the val split's 10 examples"),
  (dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
  (dict(num_epochs=0), ValueError, "num_epochs must be a positive integer"),
])
def test_bad_options_are_clear_errors(options, error, message):
  with pytest.raises(error, match=message):
    _batches(**options)


def test_steps_are_checked_and_endless_batches_have_no_length():
  batches = _batches()
  with pytest.raises(ValueError, match="start_step must be non-negative"):
    next(batches.iterate(-1))
  with pytest.raises(ValueError, match="step must be non-negative"):
    batches.batch(-2)
  with pytest.raises(TypeError, match="no length"):
    len(batches)
  with pytest.raises(ValueError, match="arrays of different lengths"):
    batching.take({"a": np.zeros(3), "b": np.zeros(4)})
