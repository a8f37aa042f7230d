"""Random-set autoencoding (experiment 2 of the paper): DSPN vs iDSPN.

  python -m experiments.random_sets --config=experiments/configs/random_sets.py:small \
      --workdir=workdirs/rs_idspn
  python -m experiments.random_sets --config=experiments/configs/random_sets.py:small \
      --config.model.decoder=dspn --workdir=workdirs/rs_dspn

An FS encoder maps each input set to z; iDSPN (``config.model.decoder="idspn"``) or DSPN
(``"dspn"``, see `experiments.common.models`) decodes z back into a set, with the options of
``config.model.idspn``. Trained and evaluated by the Hungarian loss (val during training, val and
test at the end).
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import ml_collections
import numpy as np

import idspn_jax
from experiments.common import batching, models, plots, train, validation
from idspn_jax import losses

SPLITS = ("train", "val", "test")


class SetAutoencoder(nn.Module):
  """Input set -> FS encoder -> z -> iDSPN -> predicted set.

  Attributes:
    set_size: N.
    set_dim: D.
    hidden: Hidden width of both encoders.
    latent: Width K of z.
    input_pool: Pool of the input encoder.
    idspn: Keyword options of `idspn_jax.IDSPN`.
  """

  set_size: int
  set_dim: int
  hidden: int
  latent: int
  input_pool: str
  idspn: dict

  @nn.compact
  def __call__(self, batch, *, train: bool = False, steps: int | None = None):
    del train
    x = batch["set"]  # [B, N, D]
    z = idspn_jax.SetEncoder(
      hidden=self.hidden, latent=self.latent, set_size=self.set_size, pool=self.input_pool,
      name="input_encoder",
    )(x)  # [B, K]
    decoder = idspn_jax.IDSPN(
      set_size=self.set_size, set_dim=self.set_dim, latent=self.latent, hidden=self.hidden,
      name="decoder", **self.idspn,
    )
    return decoder(z, steps=steps)  # [B, N, D]


def idspn_options(config: ml_collections.ConfigDict) -> dict:
  """The decoder's keyword options: ``config.model.idspn`` for ``config.model.decoder``."""
  return models.idspn_options(config.model.idspn, decoder=config.model.decoder)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value of a random-sets config that can be checked before training.

  Raises:
    validation.ConfigError: naming the key.
  """
  validation.check_run(config)
  for key in ("data.set_size", "data.set_dim", "data.train_size", "data.val_size",
              "data.test_size", "model.hidden", "model.latent"):
    validation.check_int(config, key)
  validation.check_int(config, "data.seed", minimum=0)
  validation.check_fits(config, "data.train_size", "train.batch_size")
  validation.check_fits(config, "data.val_size", "eval.batch_size")
  validation.check_fits(config, "data.test_size", "eval.batch_size")
  validation.check_choice(config, "model.input_pool", models.POOLS)
  validation.check_choice(config, "model.decoder", models.DECODERS)
  idspn_options(config)


def create_model(config: ml_collections.ConfigDict) -> SetAutoencoder:
  return SetAutoencoder(
    set_size=config.data.set_size, set_dim=config.data.set_dim, hidden=config.model.hidden,
    latent=config.model.latent, input_pool=config.model.input_pool,
    idspn=idspn_options(config),
  )


def make_split(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """Sets of N(0, 1) points, a different stream per split."""
  sizes = {"train": config.data.train_size, "val": config.data.val_size,
           "test": config.data.test_size}
  if split not in sizes:
    raise ValueError(f"unknown split {split!r}; expected one of {tuple(sizes)}")
  rng = np.random.default_rng([config.data.seed, SPLITS.index(split)])
  sets = rng.standard_normal((sizes[split], config.data.set_size, config.data.set_dim))
  return {"set": sets.astype(np.float32)}


def hungarian_loss(pred, batch):
  return losses.hungarian_loss(pred, batch["set"])  # [B]


def plot_sets(pred, batch, path: pathlib.Path, *, split: str | None = None) -> None:
  del split  # Every split is drawn alike.
  plots.plot_matched_sets(np.asarray(pred), np.asarray(batch["set"]), path)


def create_task(config: ml_collections.ConfigDict) -> train.Task:
  """Checks the config (`validate_config`) and describes the random-sets task."""
  validate_config(config)
  batches = {}

  def split(name: str) -> batching.Batches:
    """The training batches (shuffled; rows in index order, as they were always read) or an
    evaluation split in order."""
    if name not in batches:
      arrays = make_split(config, name)
      training = name == "train"
      batches[name] = batching.Batches(
        len(arrays["set"]), batching.take(arrays, sort=training),
        batch_size=config.train.batch_size if training else config.eval.batch_size,
        seed=config.seed, shuffle=training, num_epochs=None if training else 1, split=name)
    return batches[name]

  options = idspn_options(config)
  return train.Task(
    name=f"random_sets n={config.data.set_size} d={config.data.set_dim} "
         f"{config.model.decoder} ({models.setting(options, 'backward')})",
    model=create_model(config),
    loss=hungarian_loss,
    train_batches=lambda start_step: split("train").iterate(start_step),
    eval_batches=split,
    eval_metrics=lambda preds, batches: {},
    plot=plot_sets,
    eval_splits=("val", "test"),
    metrics=(),
  )
