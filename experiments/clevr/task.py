"""CLEVR object property prediction (experiment 3 of the paper): image -> set of objects.

  python -m experiments.clevr --config=experiments/configs/clevr.py --workdir=workdirs/clevr
  python -m experiments.clevr --config=experiments/configs/clevr.py:paper128 \
      --config.data.data_dir=~/tensorflow_datasets --workdir=workdirs/clevr128

An image encoder (ResNet18 or a small CNN, `experiments.clevr.encoders`) maps each image to
z [B, K]; iDSPN (``config.model.decoder="idspn"``, with the options of ``config.model.idspn``),
DSPN (``"dspn"``, see `experiments.common.models`) or an MLP baseline (``"mlp"``) decodes z into
10 objects of 19 features (coordinates / 3, material, color, shape, size, mask), trained with
the Hungarian smooth-L1 loss and evaluated by the CLEVR average precision at six distance
thresholds (predictions ranked by their mask feature).

Every evaluation also covers the extra validation sets of ``config.eval.extra_val`` (CLEVR v1.0
folders, e.g. the Blender renders of CLEVR's own assets in ``experiments/clevr/blender_val``),
each reported under its name as a split is (``official/ap_inf``, a row of the summary).
``config.data.extra_train`` adds a CLEVR v1.0 folder's train split to the training set
(`experiments.clevr.data.MixedSource`), e.g. a few Blender renders mixed into the rendered
scenes.
"""

from __future__ import annotations

import math
import os
import pathlib
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging

import idspn_jax
from experiments.clevr import data as clevr_data
from experiments.clevr import encoders, render, scenes
from experiments.clevr import plots as clevr_plots
from experiments.common import models, train, validation
from experiments.common.train import AUX_LOSSES
from idspn_jax import losses, matching, metrics

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
DEFAULT_SYNTHETIC_ROOT = REPO_ROOT / "data" / "clevr_synth"
DECODERS = (*models.DECODERS, "mlp")
# An extra validation set's name: a metrics prefix ("official/ap_inf") and a picture's file name.
EXTRA_VAL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*\Z")
# Names the runner already reports under: the training metrics and the main split.
RESERVED_NAMES = ("train", "val")


class ClevrModel(nn.Module):
  """Image -> image encoder -> z -> iDSPN -> predicted object set.

  Attributes:
    encoder: Image encoder name, "resnet18" or "small_cnn".
    image_size: S, the input side.
    latent: K, width of z.
    hidden: Hidden width of iDSPN's set encoder.
    encoder_options: Extra keyword options of the image encoder (e.g. SmallCNN widths).
    decoder: "idspn" or "dspn" (the layer with the ``idspn`` options), or "mlp": a baseline
      that maps z to the whole set with a 3-layer MLP (no inner loop; the set is an unordered
      output only through the Hungarian loss).
    target_energy_weight: Weight of DSPN's representation loss in training: the energy
      ``0.5 * mean_k (g(Y_true)_k - z_k)^2`` at the true set, with ``g`` held fixed, sown into
      ``experiments.common.train.AUX_LOSSES`` (0: off, the paper's iDSPN).
    latent_norm: Layer-normalise z. The SmallCNN has no normalisation of its own unless
      ``batch_norm`` is set, and without one its z grew without bound (|z| ~ 1e16 after 1000
      steps of the CPU config): the inner gradient is clipped once it is large, so the set
      stops depending on z, while the Jacobian-free backward still pushes z the same way.
    restarts: At inference (``train=False``), run iDSPN from this many random start sets and
      keep, per image, the set of lowest energy (the inner loop's own objective, no labels):
      a better minimum of the same energy. Training always uses one start.
    idspn: Keyword options of `idspn_jax.IDSPN` (`idspn_options`: DSPN's settings already
      applied for decoder "dspn").
    set_size: N, objects per image (10).
    set_dim: D, features per object (19).
  """

  encoder: str
  image_size: int
  latent: int
  hidden: int
  encoder_options: dict
  idspn: dict
  latent_norm: bool = False
  decoder: str = "idspn"
  target_energy_weight: float = 0.0
  restarts: int = 1
  set_size: int = scenes.SET_SIZE
  set_dim: int = scenes.OBJECT_DIM

  @nn.compact
  def __call__(self, batch, *, train: bool = False, steps: int | None = None) -> jax.Array:
    """Predicts the objects of a batch of images.

    Args:
      batch: ``{"image": [B, S, S, 3] in [0, 1], ...}``.
      train: BatchNorm mode of the image encoder.
      steps: Inner steps of iDSPN for this call.

    Returns:
      Predicted sets of shape [B, N, D].
    """
    z = encoders.create_image_encoder(
      self.encoder, latent=self.latent, image_size=self.image_size, **self.encoder_options,
    )(batch["image"], train=train)  # [B, K]
    if self.latent_norm:
      z = nn.LayerNorm(name="latent_norm")(z)  # [B, K]
    if self.decoder == "mlp":
      h = nn.relu(nn.Dense(self.hidden, name="mlp_0")(z))
      h = nn.relu(nn.Dense(self.hidden, name="mlp_1")(h))
      out = nn.Dense(self.set_size * self.set_dim, name="mlp_out")(h)  # [B, N * D]
      return out.reshape(z.shape[0], self.set_size, self.set_dim)  # [B, N, D]
    if self.decoder not in DECODERS:
      raise ValueError(f"unknown decoder {self.decoder!r}; expected one of {DECODERS}")
    decoder = idspn_jax.IDSPN(
      set_size=self.set_size, set_dim=self.set_dim, latent=self.latent, hidden=self.hidden,
      name="decoder", **self.idspn,
    )
    if not (isinstance(self.restarts, int) and self.restarts >= 1):
      raise ValueError(f"eval.restarts must be an int >= 1, got {self.restarts!r}")
    if train or self.restarts == 1:
      pred = decoder(z, steps=steps)  # [B, N, D]
    else:
      # Inference from several random start sets: each image keeps the set of lowest energy.
      b, r = z.shape[0], self.restarts
      z_all = jnp.tile(z, (r, 1))  # [R * B, K]
      sets = decoder(z_all, steps=steps)  # [R * B, N, D]
      energy = decoder.target_energy(z_all, sets).reshape(r, b)  # [R, B]
      best = jnp.argmin(energy, axis=0)  # [B]
      pred = sets.reshape(r, b, *sets.shape[1:])[best, jnp.arange(b)]  # [B, N, D]
    if train and self.target_energy_weight and "set" in batch:
      # Only z is pulled toward the true set's code: with g trained too, the two shrank
      # together toward a constant code.
      energy = decoder.target_energy(z, batch["set"], train_encoder=False)  # [B]
      self.sow(AUX_LOSSES, "target_energy", self.target_energy_weight * energy.mean())
    return pred


def idspn_options(config: ml_collections.ConfigDict) -> dict:
  """The decoder's keyword options: ``config.model.idspn`` for ``config.model.decoder`` (the
  MLP baseline has none, but its config's are checked as iDSPN's)."""
  decoder = config.model.decoder
  validation.check_choice(config, "model.decoder", DECODERS)
  return models.idspn_options(config.model.idspn, decoder="idspn" if decoder == "mlp" else decoder)


def validate_config(config: ml_collections.ConfigDict) -> None:
  """Checks every value of a CLEVR config that can be checked before the data is opened.

  Raises:
    validation.ConfigError: naming the key.
  """
  validation.check_run(config)
  validation.check_choice(config, "data.source", clevr_data.SOURCES)
  for key in ("data.image_size", "data.train_size", "data.val_size", "data.prefetch",
              "model.hidden", "model.latent", "eval.restarts", "eval.picture_images"):
    validation.check_int(config, key)
  validation.check_int(config, "data.seed", minimum=0)
  validation.check_int(config, "data.num_threads", minimum=0)
  validation.check_int(config, "data.render_workers", minimum=0, optional=True)
  validation.check_bool(config, "data.cache")
  validation.check_choice(config, "data.on_bad_image", scenes.ERROR_OR_SKIP)
  validation.check_choice(config, "data.on_too_many_objects", scenes.ERROR_OR_SKIP)
  validation.check_choice(config, "model.encoder", encoders.ENCODERS)
  options = dict(config.model.encoder_options)
  try:
    encoders.create_image_encoder(config.model.encoder, latent=config.model.latent,
                                  image_size=config.data.image_size, **options)
  except TypeError as err:
    raise validation.ConfigError(
      f"config.model.encoder_options ({', '.join(sorted(options))}) do not fit the "
      f"{config.model.encoder!r} encoder: {err}") from None
  if "conv_impl" in options:
    validation.check_choice(config, "model.encoder_options.conv_impl", encoders.CONV_IMPLS)
  if "head" in options:
    validation.check_choice(config, "model.encoder_options.head", encoders.SMALL_CNN_HEADS)
  if "strides" in options:
    try:
      encoders.conv_strides(options.get("widths", encoders.SmallCNN.widths), options["strides"])
    except ValueError as err:
      raise validation.ConfigError(f"config.model.encoder_options.{err}") from None
  validation.check_bool(config, "model.latent_norm")
  validation.check_number(config, "model.target_energy_weight")
  if config.model.target_energy_weight and config.model.decoder == "mlp":
    raise validation.ConfigError("config.model.target_energy_weight needs the inner loop's "
                                 "energy: the 'mlp' decoder has none")
  idspn_options(config)
  extra_val_sets(config)
  extra_train_folder(config)
  validation.check_int(config, "data.extra_train_repeat", minimum=1)


def _unset(value) -> bool:
  """A config string left unset: None, or from the command line empty or "None"."""
  return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none"))


def extra_val_sets(config: ml_collections.ConfigDict) -> dict[str, str]:
  """The extra validation sets of ``config.eval.extra_val``: ``{name: folder}``, in its order.

  The value is ``"name=folder[,name=folder...]"`` (None, empty or "None": none), e.g.
  ``"official=experiments/clevr/blender_val"``; a relative folder is taken from the repository
  root, whatever the working directory, and ``~`` is expanded.

  Raises:
    validation.ConfigError: naming the key, for a value that does not parse or a name that is
      malformed, repeated, or one the runner reports under already ("train", "val").
  """
  value = config.eval.get("extra_val")
  # The command line gives a string: --config.eval.extra_val= or =None mean none too.
  if _unset(value):
    return {}
  form = "'name=folder[,name=folder...]', e.g. 'official=experiments/clevr/blender_val'"
  if not isinstance(value, str):
    raise validation.ConfigError(f"config.eval.extra_val must be a string {form}, got {value!r}")
  out = {}
  for item in value.split(","):
    name, equals, folder = (part.strip() for part in item.partition("="))
    if not (equals and name and folder):
      raise validation.ConfigError(
        f"config.eval.extra_val={value!r}: {item.strip()!r} is not name=folder (expected {form})")
    if not EXTRA_VAL_NAME.match(name):
      raise validation.ConfigError(
        f"config.eval.extra_val={value!r}: the name {name!r} must be a letter followed by "
        "letters, digits, '_' or '-' (it prefixes metric names and names picture files)")
    if name in RESERVED_NAMES or name in out:
      what = "is used more than once" if name in out else "is taken by the runner's own metrics"
      raise validation.ConfigError(f"config.eval.extra_val={value!r}: the name {name!r} {what}")
    out[name] = repo_path(folder)
  return out


def repo_path(folder: str) -> str:
  """A folder given in a config: ``~`` expanded, a relative one taken from the repository root
  (whatever the working directory)."""
  path = pathlib.Path(os.path.expanduser(folder))
  return str(path if path.is_absolute() else REPO_ROOT / path)


def extra_train_folder(config: ml_collections.ConfigDict) -> str | None:
  """The folder of ``config.data.extra_train`` (None, empty or "None": none), see `repo_path`.

  Raises:
    validation.ConfigError: naming the key, for a value that is not a string.
  """
  value = config.data.get("extra_train")
  if _unset(value):
    return None
  if not isinstance(value, str):
    raise validation.ConfigError(
      f"config.data.extra_train must be a CLEVR v1.0 folder (a string), got {value!r}")
  return repo_path(value.strip())


def create_model(config: ml_collections.ConfigDict) -> ClevrModel:
  """The model that ``config.model`` and ``config.data.image_size`` describe."""
  return ClevrModel(
    encoder=config.model.encoder, image_size=config.data.image_size,
    latent=config.model.latent, hidden=config.model.hidden,
    encoder_options=dict(config.model.encoder_options),
    latent_norm=config.model.latent_norm, decoder=config.model.decoder,
    target_energy_weight=config.model.target_energy_weight,
    restarts=config.eval.restarts,
    idspn=idspn_options(config),
  )


# ---------------------------------------------------------------------------------------------
# Metrics.


def threshold_name(threshold: float) -> str:
  """``ap_inf``, ``ap_1``, ``ap_0_5``, ...: metric names without dots."""
  if math.isinf(threshold):
    return "ap_inf"
  return "ap_" + f"{threshold:g}".replace(".", "_")


AP_NAMES = tuple(threshold_name(t) for t in metrics.CLEVR_THRESHOLDS)
ATTRIBUTE_METRICS = ("acc_material", "acc_color", "acc_shape", "acc_size", "acc_all",
                     "acc_mask", "coord_dist")


def average_precisions(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
  """The CLEVR AP at the six thresholds, in percent.

  Args:
    pred: Predicted sets of shape [M, N, 19].
    target: True sets of shape [M, N, 19].

  Returns:
    ``{"ap_inf": ..., "ap_1": ..., ..., "ap_0_0625": ...}``.
  """
  ap = metrics.average_precision(pred, target, metrics.CLEVR_THRESHOLDS)  # [T]
  return {name: 100.0 * float(v) for name, v in zip(AP_NAMES, ap, strict=True)}


def attribute_accuracies(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
  """Per-attribute diagnostics after Hungarian matching (smooth-L1 cost, as the loss).

  ``acc_<attribute>``: % of true objects whose matched prediction has that attribute right
  (argmax); ``acc_all``: % with all four right; ``acc_mask``: % of true rows (objects and
  padding) whose matched prediction is on the right side of mask 0.5; ``coord_dist``: mean
  distance (scene units) from a true object to its match. They say which part of the AP is
  missing.

  Args:
    pred: Predicted sets of shape [M, N, 19].
    target: True sets of shape [M, N, 19].
  """
  pdist = losses.pairwise_cost(pred, target, "smooth_l1")  # [M, N(true), N(pred)]
  _, cols = matching.linear_sum_assignment(pdist, method="scipy")  # [M, N]
  matched = np.take_along_axis(pred, np.asarray(cols)[..., None], axis=1)  # [M, N, D]
  present = target[..., scenes.MASK] > 0.5  # [M, N]
  out = {}
  right = np.ones(present.shape, bool)
  for name, part in (("material", scenes.MATERIAL), ("color", scenes.COLOR),
                     ("shape", scenes.SHAPE), ("size", scenes.SIZE)):
    ok = matched[..., part].argmax(-1) == target[..., part].argmax(-1)  # [M, N]
    right &= ok
    out[f"acc_{name}"] = 100.0 * float(ok[present].mean())
  out["acc_all"] = 100.0 * float(right[present].mean())
  out["acc_mask"] = 100.0 * float(((matched[..., scenes.MASK] > 0.5) == present).mean())
  offset = matched[..., scenes.COORDS] - target[..., scenes.COORDS]  # [M, N, 3]
  dist = scenes.COORD_SCALE * np.linalg.norm(offset, axis=-1)  # [M, N]
  out["coord_dist"] = float(dist[present].mean())
  return out


def eval_metrics(preds: list, batches: list) -> dict[str, float]:
  """The AP table of a split, and the per-attribute diagnostics, from its predictions
  [B, N, D] and batches ({"set": [B, N, D]})."""
  pred = np.concatenate([np.asarray(p) for p in preds])  # [M, N, D]
  target = np.concatenate([b["set"] for b in batches])  # [M, N, D]
  return {**average_precisions(pred, target), **attribute_accuracies(pred, target)}


def hungarian_loss(pred: jax.Array, batch: dict) -> jax.Array:
  """Smooth-L1 Hungarian loss of predictions [B, N, D] against ``batch["set"]``; -> [B]."""
  return losses.hungarian_loss(pred, batch["set"], cost="smooth_l1")  # [B]


# ---------------------------------------------------------------------------------------------
# Data.


def data_root(config: ml_collections.ConfigDict) -> str:
  """The CLEVR folder of the "synthetic" and "folder" sources."""
  if config.data.root:
    return os.path.expanduser(config.data.root)
  if config.data.source == "synthetic":
    return str(DEFAULT_SYNTHETIC_ROOT)
  raise ValueError(
    f"data.source={config.data.source!r} needs --config.data.root=<the CLEVR v1.0 folder with "
    "images/ and scenes/>")


def prepare_synthetic(config: ml_collections.ConfigDict, root: str) -> None:
  """Renders the synthetic splits into ``root`` unless they are already there."""
  splits = {"train": config.data.train_size, "val": config.data.val_size}
  logging.info("CLEVR data: the synthetic source in %s (%s; rendered if absent).", root,
               ", ".join(f"{k} {v}" for k, v in splits.items()))
  try:
    counts = render.render_dataset(
      root, splits=splits, image_size=config.data.image_size, seed=config.data.seed,
      num_workers=config.data.render_workers,
    )
  except FileExistsError as err:
    raise scenes.ClevrDataError(
      f"{err}. Pass another folder with --config.data.root=... to render these settings "
      "there") from err
  for split, count in counts.items():
    if count:
      logging.info("Rendered %d synthetic %s images into %s.", count, split, root)


def prepare_data(config: ml_collections.ConfigDict) -> None:
  """Says which source is in use, and renders the synthetic splits if they are absent."""
  source = config.data.source
  if source == "synthetic":
    # One process renders (into a folder they share); the others wait for it.
    if jax.process_index() == 0:
      prepare_synthetic(config, data_root(config))
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils

      multihost_utils.sync_global_devices("clevr synthetic data rendered")
  elif source == "folder":
    logging.info("CLEVR data: the CLEVR v1.0 folder %s.", data_root(config))
  else:
    logging.info("CLEVR data: TFDS (%s) in data_dir %s.", source,
                 config.data.data_dir or "TFDS's default")


def open_split(config: ml_collections.ConfigDict, split: str) -> clevr_data.ClevrSource:
  """Opens one split of the configured source (see `prepare_data` for the synthetic one)."""
  source = config.data.source
  root = data_root(config) if source in ("synthetic", "folder") else None
  return clevr_data.create_clevr_source(
    source, split=split, root=root,
    data_dir=os.path.expanduser(config.data.data_dir) if config.data.data_dir else None,
    image_size=config.data.image_size, on_too_many_objects=config.data.on_too_many_objects,
  )


def create_batches(config: ml_collections.ConfigDict, source: clevr_data.ClevrSource, *,
                   training: bool, split: str | None = None) -> clevr_data.ClevrBatches:
  """Shuffled, resumable training batches (full ones, a remainder differs each epoch), or an
  evaluation set in order, every example once: the last batch is padded up to
  ``eval.batch_size`` and its padding rows marked, so that the compiled step keeps one shape,
  the processes equal shares, and the metrics see the real rows only.

  Args:
    config: The config.
    source: The split's source.
    training: Training batches, else an evaluation pass.
    split: The split or extra set's name, for messages ("train" or "val" if None).
  """
  batch_size = config.train.batch_size if training else config.eval.batch_size
  return clevr_data.ClevrBatches(
    source, batch_size=batch_size, image_size=config.data.image_size, shuffle=training,
    seed=config.seed, drop_remainder=training, pad_remainder=not training,
    cache=config.data.cache, num_threads=config.data.num_threads, prefetch=config.data.prefetch,
    on_bad_image=config.data.on_bad_image,
    on_too_many_objects=config.data.on_too_many_objects,
    split=split or ("train" if training else "val"),
  )


def open_extra_folder(config: ml_collections.ConfigDict, root: str, split: str, *, key: str,
                      label: str) -> clevr_data.ClevrFolderSource:
  """Opens a split of a further CLEVR v1.0 folder named by the config (``config.eval.extra_val``
  or ``config.data.extra_train``).

  Args:
    config: The config.
    root: The folder.
    split: "val" or "train".
    key: What names the folder in errors, e.g. "config.eval.extra_val: the set 'official'".
    label: What it is in the log, e.g. "extra validation set 'official'".

  Raises:
    scenes.ClevrDataError: naming ``key`` and the folder, when the folder or its split is
      missing or unusable.
  """
  try:
    source = clevr_data.create_clevr_source(
      "folder", split=split, root=root, image_size=config.data.image_size,
      on_too_many_objects=config.data.on_too_many_objects,
    )
  except scenes.ClevrDataError as err:
    raise type(err)(
      f"{key} at {root}: {err} (it needs images/{split}/*.png and "
      f"scenes/CLEVR_{split}_scenes.json)") from err
  logging.info("CLEVR %s: %d scenes in %s.", label, len(source), root)
  return source


def true_pixel_coords(source: clevr_data.ClevrSource, batch: dict, image_size: int,
                      count: int) -> list[np.ndarray | None] | None:
  """The true objects' pixel positions in the first ``count`` images of an evaluation batch.

  Only CLEVR folders record them (``pixel_coords`` in the scene file, in the pixels of the
  stored image, rescaled here to ``image_size``). The first evaluation batch holds the split's
  first scenes in order; an image whose set differs from its scene's (a skipped example shifted
  the order) gets None.

  Returns:
    Per image, an array of shape [K, 2], or None; None for sources without scene files.
  """
  if not isinstance(source, clevr_data.ClevrFolderSource):
    return None
  out = []
  for i in range(min(count, len(batch["set"]), len(source))):
    if not np.allclose(source.sets[i], batch["set"][i]):
      out.append(None)
      continue
    try:
      pixels = source.pixel_coords(i, image_size=image_size)  # [K, 2]
    except scenes.ClevrDataError:
      out.append(None)
      continue
    # Continuous pixel positions to the centres imshow uses (pixel j spans j - 0.5 .. j + 0.5).
    out.append(pixels - 0.5)
  return out


def create_task(config: ml_collections.ConfigDict) -> train.Task:
  """Checks the config (`validate_config`), opens (renders, if synthetic and absent) the data
  and describes the CLEVR task.

  The sources are opened here, so a missing folder or split, an unknown attribute or an
  oversized scene fails before any training. The extra validation sets
  (``config.eval.extra_val``) are opened first, before the synthetic data is rendered.
  """
  validate_config(config)
  eval_sources = {
    name: open_extra_folder(config, root, "val", key=f"config.eval.extra_val: the set {name!r}",
                            label=f"extra validation set {name!r}")
    for name, root in extra_val_sets(config).items()}
  extra_root = extra_train_folder(config)
  extra_train = (open_extra_folder(config, extra_root, "train", key="config.data.extra_train",
                                   label="extra training set") if extra_root else None)
  prepare_data(config)
  train_source = open_split(config, "train")
  if extra_train is not None:
    train_source = clevr_data.MixedSource([train_source, extra_train],
                                          [1, config.data.extra_train_repeat])
  eval_sources = {"val": open_split(config, "val"), **eval_sources}
  train_data = create_batches(config, train_source, training=True)
  # Every evaluation set goes through the same batching (per-process shares, padded end).
  eval_data = {name: create_batches(config, source, training=False, split=name)
               for name, source in eval_sources.items()}

  def plot(pred, batch, path: pathlib.Path, *, split: str = "val") -> None:
    count = config.eval.picture_images
    clevr_plots.plot_predictions(
      np.asarray(pred), batch, path, max_images=count,
      pixel_coords=true_pixel_coords(eval_sources[split], batch, config.data.image_size, count))

  return train.Task(
    name=f"clevr {config.data.source} {config.data.image_size}px {config.model.encoder}",
    model=create_model(config),
    loss=hungarian_loss,
    train_batches=lambda start_step: train_data.iterate(start_step),
    eval_batches=lambda split: eval_data[split].epoch(0),
    eval_metrics=eval_metrics,
    plot=plot,
    eval_splits=("val",),
    extra_eval_splits=tuple(name for name in eval_sources if name != "val"),
    metrics=(*AP_NAMES, *ATTRIBUTE_METRICS),
  )
