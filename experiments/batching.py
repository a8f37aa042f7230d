"""Deterministic batches from in-memory arrays: the batch at step s depends on (seed, s) only."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]


def _length(arrays: Batch) -> int:
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"arrays of different lengths: {lengths}")
  return next(iter(lengths.values()))


def train_batches(
  arrays: Batch,
  *,
  batch_size: int,
  seed: int,
  start_step: int = 0,
  transform: Callable[[Batch, np.random.Generator], Batch] | None = None,
) -> Iterator[Batch]:
  """Endless shuffled batches (a fresh permutation each epoch, the remainder dropped).

  Args:
    arrays: Equal-length arrays, indexed along their first axis.
    batch_size: Examples per batch.
    seed: Seeds the per-epoch permutations and ``transform``'s rng.
    start_step: The step to start at; a run resumed at step s sees the batches an
      uninterrupted run sees from step s.
    transform: Optional ``transform(batch, rng)`` (e.g. a random permutation of each set), with
      an rng seeded by (seed, step).

  Yields:
    Dicts of arrays with a leading axis of ``batch_size``.
  """
  n = _length(arrays)
  if batch_size > n:
    raise ValueError(f"batch_size {batch_size} is larger than the dataset ({n} examples)")
  steps_per_epoch = n // batch_size
  step = start_step
  epoch, perm = None, None
  while True:
    e, i = divmod(step, steps_per_epoch)
    if e != epoch:
      epoch, perm = e, np.random.default_rng([seed, e]).permutation(n)
    index = np.sort(perm[i * batch_size:(i + 1) * batch_size])
    batch = {k: v[index] for k, v in arrays.items()}
    if transform is not None:
      batch = transform(batch, np.random.default_rng([seed, 1 << 20, step]))
    yield batch
    step += 1


def eval_batches(arrays: Batch, *, batch_size: int, name: str = "split") -> list[Batch]:
  """The split in order, in batches of ``batch_size`` (a remainder is dropped, with a warning)."""
  n = _length(arrays)
  if n < batch_size:
    raise ValueError(f"the {name} split has {n} examples, fewer than one batch of {batch_size}")
  if n % batch_size:
    logging.warning("the %s split's last %d examples do not fill a batch of %d: skipped",
                    name, n % batch_size, batch_size)
  return [{k: v[s:s + batch_size] for k, v in arrays.items()}
          for s in range(0, n - batch_size + 1, batch_size)]
