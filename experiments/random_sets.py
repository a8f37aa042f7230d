"""Random-set autoencoding (experiment 2 of the paper): DSPN vs iDSPN.

  python -m experiments.random_sets --config=experiments/configs/random_sets.py:small
"""

from __future__ import annotations

import pathlib

import flax.linen as nn
import ml_collections
import numpy as np
from absl import app

import idspn_jax
from experiments import batching, plots, train
from idspn_jax import losses

MODEL_KEYS = ("steps", "learning_rate", "momentum", "backward", "clip_norm", "learn_start",
              "energy", "cg_ridge", "cg_maxiter", "fspool_method", "pool", "loop_unroll",
              "backprop_steps", "implicit_at")


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


def create_model(config: ml_collections.ConfigDict) -> SetAutoencoder:
  return SetAutoencoder(
    set_size=config.data.set_size, set_dim=config.data.set_dim, hidden=config.model.hidden,
    latent=config.model.latent, input_pool=config.model.input_pool,
    idspn={k: config.model[k] for k in MODEL_KEYS},
  )


def make_split(config: ml_collections.ConfigDict, split: str) -> dict[str, np.ndarray]:
  """Sets of N(0, 1) points, a different stream per split."""
  sizes = {"train": config.data.train_size, "val": config.data.val_size,
           "test": config.data.test_size}
  if split not in sizes:
    raise ValueError(f"unknown split {split!r}; expected one of {tuple(sizes)}")
  rng = np.random.default_rng([config.data.seed, ("train", "val", "test").index(split)])
  sets = rng.standard_normal((sizes[split], config.data.set_size, config.data.set_dim))
  return {"set": sets.astype(np.float32)}


def hungarian_loss(pred, batch):
  return losses.hungarian_loss(pred, batch["set"])  # [B]


def plot_sets(pred, batch, path: pathlib.Path) -> None:
  plots.plot_matched_sets(np.asarray(pred), np.asarray(batch["set"]), path)


def create_task(config: ml_collections.ConfigDict) -> train.Task:
  splits = {}

  def split(name):
    if name not in splits:
      splits[name] = make_split(config, name)
    return splits[name]

  def train_batches(start_step):
    return batching.train_batches(
      split("train"), batch_size=config.train.batch_size, seed=config.seed,
      start_step=start_step,
    )

  def eval_batches(name):
    return batching.eval_batches(split(name), batch_size=config.eval.batch_size, name=name)

  return train.Task(
    name=f"random_sets n={config.data.set_size} d={config.data.set_dim} "
         f"{config.model.backward}",
    model=create_model(config),
    loss=hungarian_loss,
    train_batches=train_batches,
    eval_batches=eval_batches,
    eval_metrics=lambda preds, batches: {},
    plot=plot_sets,
    eval_splits=("val", "test"),
  )


if __name__ == "__main__":
  train.define_flags(default_workdir="workdirs/random_sets")
  app.run(train.main_for(create_task))
