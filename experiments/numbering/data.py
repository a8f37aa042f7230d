"""Data for class-specific numbering, experiment 1 of iDSPN.

Each input is a multiset of S elements, each one of C classes: per sample, ``n_per_sample``
distinct class ids are drawn uniformly without replacement from the C, then every element picks
one of them uniformly. The target of element k is its 0-based running index within its class,
in input order:

  target[k] = #{k' <= k : input[k'] == input[k]} - 1.

Equal input elements therefore need different outputs, which set-equivariant models (DeepSets,
a Transformer without positional encoding) cannot produce.

Everything here is NumPy and runs on the host; the models see float32 one-hots of shape
[B, S, C] (inputs) and [B, S, S] (targets). Data augmentation ("DA" in the paper) permutes each
set, inputs and targets alike, every time it is read.

References:
  Zhang, Zhang, Lacoste-Julien, Burghouts, Snoek. Multiset-Equivariant Set Prediction with
  Approximate Implicit Differentiation. ICLR 2022. arXiv:2111.12193.
"""

import numpy as np

from experiments.common import batching

# The paper's training-set sizes ("1x", "10x", "100x") and their epoch counts.
TRAIN_SIZES = {"1x": 640, "10x": 6_400, "100x": 64_000}
TRAIN_EPOCHS = {"1x": 10_000, "10x": 1_000, "100x": 100}
VAL_SIZE = 6_400
TEST_SIZE = 64_000

# The paper's set size and class counts.
SET_SIZE = 64
N_PER_SAMPLE = 4


def _check_positive(**sizes: int) -> None:
  for name, value in sizes.items():
    if int(value) != value or value <= 0:
      raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _check_ids(inputs: np.ndarray, targets: np.ndarray, *, n_classes: int, set_size: int) -> None:
  """Raises ValueError unless [B, S] inputs and targets fit one-hots of widths C and set_size."""
  if inputs.ndim != 2 or inputs.shape != targets.shape:
    raise ValueError(
      f"inputs and targets must both have shape [B, S], got {inputs.shape} and {targets.shape}"
    )
  s = inputs.shape[1]
  if s > set_size:
    raise ValueError(
      f"sets have {s} elements, more than the target one-hot width set_size={set_size}"
    )
  if inputs.size and (inputs.min() < 0 or inputs.max() >= n_classes):
    raise ValueError(
      f"class ids must lie in [0, {n_classes}), got [{inputs.min()}, {inputs.max()}]"
    )
  if targets.size and (targets.min() < 0 or targets.max() >= set_size):
    raise ValueError(f"targets must lie in [0, {set_size}), got [{targets.min()}, {targets.max()}]")


def numbering_targets(inputs: np.ndarray) -> np.ndarray:
  """The class-specific running index of every element.

  Vectorised: a stable sort by class puts each class's elements in a run, in input order; the
  rank inside the run is the target, which is then scattered back to input order.

  Args:
    inputs: Integer class ids of shape [..., S].

  Returns:
    int32 array of shape [..., S]: ``target[k] = #{k' <= k : inputs[k'] == inputs[k]} - 1``.
  """
  inputs = np.asarray(inputs)
  if not np.issubdtype(inputs.dtype, np.integer):
    raise ValueError(f"inputs must hold integer class ids, got dtype {inputs.dtype}")
  if inputs.ndim == 0:
    raise ValueError("inputs must have a set axis, got a scalar")
  s = inputs.shape[-1]
  flat = inputs.reshape(-1, s)  # [N, S]
  order = np.argsort(flat, axis=-1, kind="stable")  # [N, S]
  ordered = np.take_along_axis(flat, order, axis=-1)  # [N, S]
  position = np.broadcast_to(np.arange(s), flat.shape)  # [N, S]
  # The first position of each run of equal classes, carried forward over the run.
  is_start = np.ones(flat.shape, dtype=bool)
  is_start[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
  run_start = np.maximum.accumulate(np.where(is_start, position, 0), axis=-1)  # [N, S]
  targets = np.empty(flat.shape, dtype=np.int32)
  np.put_along_axis(targets, order, (position - run_start).astype(np.int32), axis=-1)
  return targets.reshape(inputs.shape)


def make_numbering_dataset(
  *,
  n_samples: int,
  set_size: int = SET_SIZE,
  n_classes: int = 4,
  n_per_sample: int = N_PER_SAMPLE,
  seed: int,
) -> tuple[np.ndarray, np.ndarray]:
  """Draws a class-specific numbering dataset, deterministically from ``seed``.

  Args:
    n_samples: Number of sets N.
    set_size: Elements per set S (64 in the paper).
    n_classes: Classes C to draw from (4 or 8 in the paper).
    n_per_sample: Distinct classes drawn per set (4 in the paper), at most ``n_classes``.
    seed: Seed of the NumPy generator; equal seeds give equal datasets.

  Returns:
    ``(inputs, targets)``, both int32 of shape [N, S]: class ids in [0, C) and running indices
    in [0, S).
  """
  _check_positive(
    n_samples=n_samples, set_size=set_size, n_classes=n_classes, n_per_sample=n_per_sample
  )
  if n_classes < n_per_sample:
    raise ValueError(
      f"n_classes ({n_classes}) must be at least n_per_sample ({n_per_sample}): each set draws "
      f"{n_per_sample} distinct classes"
    )
  rng = np.random.default_rng(seed)
  # A uniformly random subset per set: the first n_per_sample of a random permutation of classes.
  keys = rng.random((n_samples, n_classes))  # [N, C]
  classes = np.argsort(keys, axis=-1)[:, :n_per_sample]  # [N, K]
  picks = rng.integers(0, n_per_sample, size=(n_samples, set_size))  # [N, S]
  inputs = np.take_along_axis(classes, picks, axis=-1).astype(np.int32)  # [N, S]
  return inputs, numbering_targets(inputs)


def make_numbering_splits(
  *,
  train_size: int,
  set_size: int = SET_SIZE,
  n_classes: int = 4,
  n_per_sample: int = N_PER_SAMPLE,
  val_size: int = VAL_SIZE,
  test_size: int = TEST_SIZE,
  seed: int,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """Train, validation and test datasets drawn from independent streams of one seed.

  Args:
    train_size: Training sets (see ``TRAIN_SIZES``).
    set_size: Elements per set S.
    n_classes: Classes C.
    n_per_sample: Distinct classes per set.
    val_size: Validation sets.
    test_size: Test sets.
    seed: One seed for all three; each split gets its own child seed, so changing one split's
      size does not change the others.

  Returns:
    ``{"train": (inputs, targets), "val": ..., "test": ...}``, each array int32 of shape [N, S].
  """
  sizes = {"train": train_size, "val": val_size, "test": test_size}
  children = np.random.SeedSequence(seed).spawn(len(sizes))
  return {
    split: make_numbering_dataset(
      n_samples=n,
      set_size=set_size,
      n_classes=n_classes,
      n_per_sample=n_per_sample,
      seed=int(child.generate_state(1)[0]),
    )
    for (split, n), child in zip(sizes.items(), children, strict=True)
  }


def one_hot_batch(
  inputs: np.ndarray,
  targets: np.ndarray,
  *,
  n_classes: int,
  set_size: int,
  permute_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
  """One-hot encodes a batch, optionally permuting each set ("DA").

  The permutation is applied to inputs and targets together, so every element keeps its target:
  the model must still number each class in the original order, which it can no longer read from
  the element positions.

  Args:
    inputs: Class ids of shape [B, S], in [0, n_classes).
    targets: Running indices of shape [B, S], in [0, set_size).
    n_classes: Width C of the input one-hot.
    set_size: Width of the target one-hot; S must not exceed it.
    permute_rng: If given, draws an independent random permutation per set.

  Returns:
    ``(x, y)``: float32 one-hots of shapes [B, S, C] and [B, S, set_size].
  """
  inputs = np.asarray(inputs)
  targets = np.asarray(targets)
  _check_positive(n_classes=n_classes, set_size=set_size)
  _check_ids(inputs, targets, n_classes=n_classes, set_size=set_size)
  b, s = inputs.shape
  if permute_rng is not None:
    perm = np.argsort(permute_rng.random((b, s)), axis=-1)  # [B, S]
    inputs = np.take_along_axis(inputs, perm, axis=-1)
    targets = np.take_along_axis(targets, perm, axis=-1)
  x = np.eye(n_classes, dtype=np.float32)[inputs]  # [B, S, C]
  y = np.eye(set_size, dtype=np.float32)[targets]  # [B, S, set_size]
  return x, y


class NumberingBatches(batching.Batches):
  """Deterministic, resumable batches of one-hot numbering data (`batching.Batches`).

  Batch ``step`` depends only on ``(seed, step)``: epoch ``e = step // steps_per_epoch`` shuffles
  the sets with a generator seeded by ``(seed, e)``, and DA permutes each set with one seeded by
  ``(seed, e, i)`` for the i-th batch of the epoch. Training resumed at ``start_step`` therefore
  sees exactly the batches an uninterrupted run would have seen.

  Each batch is a dict with ``"inputs"`` float32 [B, S, C] and ``"targets"`` float32
  [B, S, set_size]. With ``drop_remainder=False`` the last batch of an epoch may be smaller.

  Example:
    >>> batches = NumberingBatches(inputs, targets, batch_size=128, n_classes=4, seed=0)
    >>> for step, batch in zip(range(start, total), batches.iterate(start_step=start)): ...
  """

  def __init__(
    self,
    inputs: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    n_classes: int,
    set_size: int | None = None,
    seed: int,
    shuffle: bool = True,
    drop_remainder: bool = True,
    permute: bool = False,
    num_epochs: int | None = None,
    split: str | None = None,
  ):
    """Wraps a dataset.

    Args:
      inputs: Class ids of shape [N, S].
      targets: Running indices of shape [N, S].
      batch_size: Sets per batch B.
      n_classes: Width C of the input one-hot.
      set_size: Width of the target one-hot; defaults to S.
      seed: Seed of the shuffling and DA permutations.
      shuffle: Shuffle the sets anew every epoch.
      drop_remainder: Drop the last, smaller batch of each epoch.
      permute: Randomly permute every set each time it is read ("DA").
      num_epochs: Epochs to iterate; None iterates forever.
      split: The split's name, for messages.
    """
    self.inputs = np.asarray(inputs, dtype=np.int32)
    self.targets = np.asarray(targets, dtype=np.int32)
    if self.inputs.ndim != 2 or self.inputs.shape != self.targets.shape or not self.inputs.size:
      raise ValueError(
        f"inputs and targets must both have shape [N, S] with N, S > 0, got {self.inputs.shape} "
        f"and {self.targets.shape}"
      )
    self.set_size = self.inputs.shape[1] if set_size is None else set_size
    _check_positive(n_classes=n_classes, set_size=self.set_size)
    # Validate ids and widths once, on the whole dataset, rather than batch by batch.
    _check_ids(self.inputs, self.targets, n_classes=n_classes, set_size=self.set_size)
    self.n_classes = n_classes
    self.permute = permute
    super().__init__(
      len(self.inputs), self._one_hots, batch_size=batch_size, seed=seed, shuffle=shuffle,
      drop_remainder=drop_remainder, num_epochs=num_epochs, split=split,
    )

  @property
  def num_sets(self) -> int:
    return self.num_examples

  def _one_hots(self, rows: np.ndarray, epoch: int, index: int) -> dict[str, np.ndarray]:
    """The batch of sets ``rows``, the ``index``-th of epoch ``epoch`` (which seeds DA)."""
    inputs, targets = self.inputs[rows], self.targets[rows]
    if self.permute:
      # The whole batch's permutations, then this process's share of them (the same rows a
      # single process permutes alike).
      full = np.random.default_rng((self.seed, epoch, index)).random(
        (len(rows) * self.process_count, inputs.shape[1]))
      perm = np.argsort(full[self.share(len(full))], axis=-1)  # [B_local, S]
      inputs = np.take_along_axis(inputs, perm, axis=-1)
      targets = np.take_along_axis(targets, perm, axis=-1)
    x, y = one_hot_batch(inputs, targets, n_classes=self.n_classes, set_size=self.set_size)
    return {"inputs": x, "targets": y}
