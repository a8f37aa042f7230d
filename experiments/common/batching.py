"""Deterministic, resumable batches: the batch at step s depends only on the seed and s.

One iterator, `Batches`, serves every experiment. The examples are numbered 0 .. n-1. Epoch
``e`` reads them in the order of a permutation drawn from ``(seed, e)`` (the identity without
shuffling), and the batch of step ``s = e * steps_per_epoch + k`` holds positions
``k * B .. (k + 1) * B`` of that order. A ``load(indices, epoch, k)`` function, the experiment's
hook, turns those example indices into arrays: rows of in-memory arrays (`take`), one-hot
numbering sets, decoded CLEVR images. Per-batch randomness (numbering's random permutations)
is seeded from ``(epoch, k)`` inside ``load``. A run resumed at step s therefore sees the
batches an uninterrupted run sees from step s.

In a multi-process run (`jax.distributed`) each process loads only its share of every batch:
process ``p`` of ``P`` reads rows ``p * B / P .. (p + 1) * B / P`` of the batch the single-process
run reads (the order is the same everywhere, so the processes' shares make up that batch).

Training reads shuffled epochs without end and drops each epoch's remainder (other examples
each epoch). An evaluation reads its split once in order (``shuffle=False, num_epochs=1``); a
remainder dropped there is always the same examples, so it is logged. With ``pad_remainder``
the last batch is filled up to the batch size instead (the compiled step sees one shape, and the
processes equal shares) and every batch marks its real rows in ``batch[VALID]``, which
`experiments.common.train.evaluate` uses to leave the padding out of the metrics.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np

Batch = dict[str, np.ndarray]
#: With ``pad_remainder``, the key of a batch's row mask [B]: 1.0 for an example, 0.0 for a
#: padding row. float32, the dtype every batch already has, so gathering it across processes
#: goes the way the batches' own arrays go.
VALID = "valid"
#: ``load(indices, epoch, index) -> batch``: the arrays of the examples ``indices`` (shape [B])
#: that batch ``index`` of epoch ``epoch`` reads.
Load = Callable[[np.ndarray, int, int], Batch]


def _check_count(name: str, value, minimum: int = 1) -> None:
  if isinstance(value, bool) or int(value) != value or value < minimum:
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
    raise ValueError(f"{name} must be {what}, got {value!r}")


class Batches:
  """Batches of examples 0 .. n-1 in an order fixed by ``(seed, epoch)``; see the module.

  Attributes:
    num_examples: n.
    batch_size: B.
    steps_per_epoch: Batches per epoch.
    num_steps: Batches over ``num_epochs``, or None when endless.
  """

  def __init__(self, num_examples: int, load: Load, *, batch_size: int, seed: int = 0,
               shuffle: bool = True, drop_remainder: bool = True, pad_remainder: bool = False,
               num_epochs: int | None = None, num_threads: int = 0, prefetch: int = 4,
               split: str | None = None, process_index: int | None = None,
               process_count: int | None = None):
    """Describes the batches; nothing is loaded yet.

    Args:
      num_examples: n, the examples to read.
      load: Builds a batch from example indices (see `Load`).
      batch_size: B.
      seed: Seeds the permutation of each epoch.
      shuffle: Draw a new permutation per epoch (else the examples' order).
      drop_remainder: Leave out the last partial batch of each epoch (else it is smaller).
      pad_remainder: Fill the last partial batch of each epoch up to B by repeating its last
        example, and mark every batch's real rows in ``batch[VALID]`` (only when the epoch has
        a remainder; the other batches then carry the key too). Needs ``drop_remainder=False``.
      num_epochs: Epochs to read; None reads without end.
      num_threads: Threads loading batches ahead (grain); 0 loads in the calling thread.
      prefetch: Batches loaded ahead by the threads.
      split: The split read, named in messages. An in-order pass (``shuffle=False``) that
        drops a remainder logs it.
      process_index, process_count: Which share of each batch this process loads (None: JAX's
        `jax.process_index()` and `jax.process_count()`).
    """
    _check_count("batch_size", batch_size)
    _check_count("num_examples", num_examples, minimum=0)
    if num_epochs is not None:
      _check_count("num_epochs", num_epochs)
    _check_count("num_threads", num_threads, minimum=0)
    of = f"the {split} split's" if split else "the"
    if drop_remainder and pad_remainder:
      raise ValueError("drop_remainder and pad_remainder exclude each other: drop the last "
                       "partial batch or pad it")
    if drop_remainder and batch_size > num_examples:
      raise ValueError(f"batch_size ({batch_size}) exceeds {of} {num_examples} examples, so "
                       "drop_remainder=True leaves no batch")
    if num_examples == 0:
      raise ValueError(f"{of} examples are none: there is nothing to batch")
    if process_index is None or process_count is None:
      import jax  # Only here: the rest of this module is NumPy.

      process_index, process_count = jax.process_index(), jax.process_count()
    _check_count("process_count", process_count)
    if not 0 <= process_index < process_count:
      raise ValueError(f"process_index must be in [0, {process_count}), got {process_index}")
    if batch_size % process_count:
      raise ValueError(
        f"a batch of {batch_size} cannot be split over {process_count} processes: each process "
        f"loads an equal share of every batch, so choose a multiple of {process_count}")
    self.process_index, self.process_count = int(process_index), int(process_count)
    self.num_examples, self.batch_size = int(num_examples), int(batch_size)
    self.load, self.seed, self.shuffle = load, int(seed), shuffle
    self.drop_remainder, self.num_epochs = drop_remainder, num_epochs
    self.num_threads, self.prefetch = int(num_threads), max(int(prefetch), 1)
    full, rest = divmod(self.num_examples, self.batch_size)
    self.steps_per_epoch = full if drop_remainder else full + (rest > 0)
    #: Whether batches carry ``VALID``: the epoch's last batch is padded.
    self.padded = bool(pad_remainder and rest)
    if not shuffle and drop_remainder and rest:
      logging.warning("%s last %d examples do not fill a batch of %d: skipped",
                      f"The {split} split's" if split else "The", rest, self.batch_size)

  @property
  def num_steps(self) -> int | None:
    if self.num_epochs is None:
      return None
    return self.num_epochs * self.steps_per_epoch

  def __len__(self) -> int:
    if self.num_steps is None:
      raise TypeError("endless batches (num_epochs=None) have no length")
    return self.num_steps

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` reads the examples, of shape [n]."""
    if not self.shuffle:
      return np.arange(self.num_examples)
    return np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)

  def batch_indices(self, step: int) -> np.ndarray:
    """The example indices of batch ``step``, of shape [B] (fewer for a last partial batch)."""
    if step < 0:
      raise ValueError(f"step must be non-negative, got {step}")
    epoch, index = divmod(int(step), self.steps_per_epoch)
    return self.epoch_order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]

  def share(self, size: int) -> slice:
    """This process's rows of a batch of ``size`` rows."""
    per_process = size // self.process_count
    return slice(self.process_index * per_process, (self.process_index + 1) * per_process)

  def batch(self, step: int) -> Batch:
    """This process's share of the batch of global step ``step`` (0-based; the whole batch in a
    single process), a pure function of ``(seed, step)``; padded up to B, with ``VALID``, when
    ``padded``."""
    epoch, index = divmod(int(step), self.steps_per_epoch)
    indices = self.batch_indices(step)
    if not self.padded:
      return self.load(indices[self.share(len(indices))], epoch, index)
    valid = (np.arange(self.batch_size) < len(indices)).astype(np.float32)  # [B]
    indices = np.concatenate([indices, np.repeat(indices[-1:], self.batch_size - len(indices))])
    rows = self.share(self.batch_size)
    return {**self.load(indices[rows], epoch, index), VALID: valid[rows]}

  def iterate(self, start_step: int = 0, *, num_steps: int | None = None) -> Iterator[Batch]:
    """The batches of steps ``start_step``, ``start_step + 1``, ...: ``num_steps`` of them, or
    up to the end of ``num_epochs`` (without end if both are None)."""
    if start_step < 0:
      raise ValueError(f"start_step must be non-negative, got {start_step}")
    stops = [s for s in (self.num_steps,
                         None if num_steps is None else start_step + num_steps) if s is not None]
    stop = min(stops) if stops else 2**62
    if self.num_threads == 0:
      return (self.batch(step) for step in range(start_step, stop))
    import grain  # Only threaded loading (CLEVR's image decoding) needs it.

    dataset = grain.MapDataset.range(start_step, max(stop, start_step)).map(self.batch)
    return iter(dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=self.num_threads, prefetch_buffer_size=self.prefetch)))

  def epoch(self, epoch: int = 0) -> Iterator[Batch]:
    """The batches of one epoch (e.g. an evaluation pass with shuffle=False)."""
    return self.iterate(epoch * self.steps_per_epoch, num_steps=self.steps_per_epoch)

  def __iter__(self) -> Iterator[Batch]:
    return self.iterate()


def take(arrays: Batch, *, sort: bool = False) -> Load:
  """The `Load` of in-memory arrays: the rows ``indices`` of each.

  Args:
    arrays: Equal-length arrays, indexed along their first axis.
    sort: Read each batch's rows in index order (the random-sets experiment's batches, which
      have always been read so; the order within a batch only moves rounding).
  """
  lengths = {k: len(v) for k, v in arrays.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f"arrays of different lengths: {lengths}")

  def load(indices: np.ndarray, epoch: int, index: int) -> Batch:
    del epoch, index
    rows = np.sort(indices) if sort else indices
    return {k: v[rows] for k, v in arrays.items()}

  return load
