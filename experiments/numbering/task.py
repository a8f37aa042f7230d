"""Class-specific numbering (experiment 1 of the paper): iDSPN, DSPN and the baselines.

  python -m experiments.numbering --config=experiments/configs/numbering.py:small \
      --config.model.name=idspn --workdir=workdirs/numbering/idspn

The input is a multiset of S one-hot classes [B, S, C]; the target numbers every element within
its class, one-hot over S positions [B, S, S]. Metrics (val during training, val and test at the
end) are micro accuracy (elements right) and macro accuracy (whole sets right) after a Hungarian
matching restricted to same-class pairs, the matching of the model's own training loss
(Hungarian L2 for (i)DSPN, Hungarian cross-entropy for the baselines), as in the reference.
"""

from __future__ import annotations

import functools
import pathlib

import flax.linen as nn
import jax
import ml_collections
import numpy as np

from experiments.common import models, plots, train, validation
from experiments.numbering import data as numbering_data
from experiments.numbering import models as numbering_models
from idspn_jax import losses, metrics

# The width each model runs with in the reference's exp1 scripts (hidden = latent for (i)DSPN).
REFERENCE_WIDTHS = {
  "idspn": 256,
  "dspn": 256,
  "deepsets": 256,
  "transformer_no_pe": 64,
  "transformer_pe": 64,
  "transformer_random_pe": 64,
  "bilstm": 64,
}
METRICS = ("micro_accuracy", "macro_accuracy")


def check_model_name(name: str) -> None:
  """Raises a ValueError listing the valid names unless ``name`` is a registered model."""
  if name not in numbering_models.NUMBERING_MODELS:
    raise validation.ConfigError(
      f"unknown numbering model {name!r} (config.model.name); valid names: "
      f"{', '.join(sorted(numbering_models.NUMBERING_MODELS))}"
    )


def train_size_of(config: ml_collections.ConfigDict) -> int:
  """The number of training sets: ``"1x"``/``"10x"``/``"100x"`` or a positive count."""
  size = str(config.data.train_size)
  if size in numbering_data.TRAIN_SIZES:
    return numbering_data.TRAIN_SIZES[size]
  if size.isdigit() and int(size) > 0:
    return int(size)
  raise validation.ConfigError(
    f"config.data.train_size must be one of {tuple(numbering_data.TRAIN_SIZES)} or a positive "
    f"number of sets, got {config.data.train_size!r}"
  )


def resolve_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Fills the derived fields (width, epochs, steps, evaluation cadence) of a numbering config.

  Args:
    config: A config of ``experiments/configs/numbering.py``, locked or not.

  Returns:
    A locked copy in which ``model.hidden``, ``model.latent``, ``train.epochs``,
    ``train.steps``, ``train.eval_every`` and ``train.checkpoint_every`` are concrete.
  """
  check_model_name(config.model.name)
  config = ml_collections.ConfigDict(config.to_dict())  # an unlocked copy
  n_train = train_size_of(config)
  validation.check_int(config, "train.batch_size")
  batch = config.train.batch_size
  if n_train < batch:
    raise validation.ConfigError(
      f"the {n_train} training sets (config.data.train_size) do not fill one batch of "
      f"config.train.batch_size={batch}")
  for key in ("data.set_size", "data.n_classes"):
    validation.check_int(config, key)
  validation.check_number(config, "model.width_scale", strict=True)
  if not config.model.hidden:
    width = REFERENCE_WIDTHS.get(config.model.name, 256) * config.model.width_scale
    config.model.hidden = max(1, round(width))
  if not config.model.latent:
    config.model.latent = config.model.hidden
  if not config.train.epochs:
    config.train.epochs = numbering_data.TRAIN_EPOCHS.get(str(config.data.train_size), 100)
  if not config.train.steps:
    config.train.steps = config.train.epochs * (n_train // batch)
  evals = max(1, config.train.num_evals)
  if config.train.eval_every < 0:
    config.train.eval_every = max(1, config.train.steps // evals)
  if config.train.checkpoint_every < 0:
    config.train.checkpoint_every = max(1, config.train.steps // evals)
  if config.data.seed is None:
    config.data.seed = config.seed
  config.lock()
  return config


class NumberingNet(nn.Module):
  """The shared loop's view of a numbering model: a batch dict in, [B, S, set_size] out.

  Attributes:
    net: A model of ``NUMBERING_MODELS``, mapping a [B, S, C] one-hot set to [B, S, set_size].
  """

  net: nn.Module

  @nn.compact
  def __call__(self, batch, *, train: bool = False, steps: int | None = None) -> jax.Array:
    """Numbers ``batch["inputs"]`` of shape [B, S, C]; returns shape [B, S, set_size]."""
    del train  # No model here has dropout or BatchNorm.
    x = batch["inputs"]  # [B, S, C]
    if getattr(self.net, "takes_inner_steps", False):
      return self.net(x, steps=steps)
    return self.net(x)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value of a resolved numbering config that can be checked before training.

  Raises:
    validation.ConfigError: naming the key.
  """
  check_model_name(config.model.name)
  if not config.train.steps or config.train.eval_every < 0:
    raise ValueError("the config is not resolved: call resolve_config(config) first")
  validation.check_run(config)
  train_size_of(config)
  for key in ("data.set_size", "data.n_classes", "data.n_per_sample", "data.val_size",
              "data.test_size", "model.hidden", "model.latent"):
    validation.check_int(config, key)
  validation.check_int(config, "data.seed", minimum=0)
  if config.data.n_per_sample > config.data.n_classes:
    raise validation.ConfigError(
      f"config.data.n_per_sample={config.data.n_per_sample} exceeds config.data.n_classes="
      f"{config.data.n_classes}: each set draws n_per_sample distinct classes")
  validation.check_bool(config, "data.permute")
  validation.check_fits(config, "data.val_size", "eval.batch_size")
  validation.check_fits(config, "data.test_size", "eval.batch_size")
  if config.model.name in numbering_models.DSPN_OPTIONS:
    create_model(config)  # Checks model.idspn against the model's (see idspn_options).
  else:
    models.check_idspn(config.model.idspn)


def create_model(config: ml_collections.ConfigDict) -> NumberingNet:
  """The model ``config.model.name``; (i)DSPN with ``config.model.idspn``'s options over the
  reference's (``numbering_models.DSPN_OPTIONS``), DSPN's defining ones on top."""
  name = config.model.name
  check_model_name(name)
  kwargs = dict(
    hidden=config.model.hidden, set_size=config.data.set_size, n_classes=config.data.n_classes
  )
  if name in numbering_models.DSPN_OPTIONS:
    factory = numbering_models.NUMBERING_MODELS[name]
    return NumberingNet(factory(**kwargs, latent=config.model.latent,
                                **config.model.idspn.to_dict()))
  return NumberingNet(numbering_models.create_numbering_model(name, **kwargs))


def numbering_loss(pred: jax.Array, batch, *, loss_type: str) -> jax.Array:
  """Class-restricted Hungarian loss of each set, of shape [B]."""
  loss, _ = losses.hungarian_loss_numbering(
    batch["inputs"], pred, batch["targets"], loss_type=loss_type
  )
  return loss


@functools.partial(jax.jit, static_argnames=("loss_type",))
def _accuracies(inputs, pred, targets, *, loss_type: str):
  """Micro and macro accuracy of each set, [B] each, under the loss's matching."""
  _, cols = losses.hungarian_loss_numbering(inputs, pred, targets, loss_type=loss_type)
  return metrics.numbering_accuracy(pred, targets, cols)


def numbering_metrics(preds, batches, *, loss_type: str) -> dict[str, float]:
  """Mean micro and macro accuracy over a split (lists of [B, S, D] predictions and batches)."""
  micro, macro = [], []
  for pred, batch in zip(preds, batches, strict=True):
    mi, ma = _accuracies(batch["inputs"], pred, batch["targets"], loss_type=loss_type)
    micro.append(np.asarray(mi))
    macro.append(np.asarray(ma))
  return {
    "micro_accuracy": float(np.mean(np.concatenate(micro))),
    "macro_accuracy": float(np.mean(np.concatenate(macro))),
  }


def plot_numbering(pred, batch, path: pathlib.Path, *, loss_type: str,
                   split: str | None = None) -> None:
  """Heatmaps of the target numbering of the first set and the predictions matched to it.

  Row i of the right panel is the prediction that the class-restricted matching of the loss
  pairs with target element i, so equal panels mean a set numbered right. Rows are grouped by
  class, then ordered by target.

  Args:
    pred: Predictions of shape [B, S, D] (probabilities for "l2", logits for "ce").
    batch: The batch, with "inputs" [B, S, C] and "targets" [B, S, D].
    path: Where to write the PNG.
    loss_type: "l2" or "ce" (logits are shown after a softmax).
    split: The split the batch comes from (every split is drawn alike).
  """
  del split
  plt = plots._pyplot()
  inputs, target = np.asarray(batch["inputs"][:1]), np.asarray(batch["targets"][:1])
  _, cols = losses.hungarian_loss_numbering(inputs, pred[:1], target, loss_type=loss_type)
  matched = np.asarray(pred[0], np.float64)[np.asarray(cols[0])]  # [S, D]
  if loss_type == "ce":
    matched = np.exp(matched - matched.max(-1, keepdims=True))
    matched = matched / matched.sum(-1, keepdims=True)
  classes = np.argmax(inputs[0], -1)  # [S]
  order = np.lexsort((np.argmax(target[0], -1), classes))  # by class, then by target
  fig, axes = plt.subplots(1, 2, figsize=(8, 4.4))
  for ax, image, title in (
    (axes[0], target[0], "target"),
    (axes[1], matched, "matched prediction"),
  ):
    ax.imshow(image[order], vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_title(title)
    ax.set_xlabel("running index")
    ax.set_xticks(range(image.shape[1]))
    ax.set_yticks(range(len(order)))
    ax.set_yticklabels([f"c{c}" for c in classes[order]], fontsize=5)
  fig.tight_layout()
  plots._save(fig, path)
  plt.close(fig)


def create_task(config: ml_collections.ConfigDict) -> train.Task:
  """Checks a resolved config (see `resolve_config`, `validate_config`) and describes the
  numbering task."""
  validate_config(config)
  loss_type = numbering_models.numbering_loss_type(config.model.name)
  data = config.data
  splits = numbering_data.make_numbering_splits(
    train_size=train_size_of(config),
    set_size=data.set_size,
    n_classes=data.n_classes,
    n_per_sample=data.n_per_sample,
    val_size=data.val_size,
    test_size=data.test_size,
    seed=data.seed,
  )

  def batches(split, *, batch_size, permute, shuffle):
    inputs, targets = splits[split]
    return numbering_data.NumberingBatches(
      inputs,
      targets,
      batch_size=batch_size,
      n_classes=data.n_classes,
      set_size=data.set_size,
      seed=config.seed,
      shuffle=shuffle,
      permute=permute,
      num_epochs=None if shuffle else 1,
      split=split,
    )

  train_data = batches("train", batch_size=config.train.batch_size, permute=data.permute,
                       shuffle=True)

  def eval_batches(split):
    """The split in order, in full batches (a remainder is logged and skipped)."""
    if split not in splits:
      raise ValueError(f"unknown split {split!r}; expected one of {tuple(splits)}")
    return batches(split, batch_size=config.eval.batch_size, permute=False, shuffle=False)

  da = " DA" if data.permute else ""
  return train.Task(
    name=f"numbering {config.model.name}{da} C={data.n_classes} S={data.set_size} "
    f"train={data.train_size}",
    model=create_model(config),
    loss=functools.partial(numbering_loss, loss_type=loss_type),
    train_batches=train_data.iterate,
    eval_batches=eval_batches,
    eval_metrics=functools.partial(numbering_metrics, loss_type=loss_type),
    plot=functools.partial(plot_numbering, loss_type=loss_type),
    eval_splits=("val", "test"),
    metrics=METRICS,
  )
