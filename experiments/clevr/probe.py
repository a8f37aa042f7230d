"""How readable are the objects' attributes in these pictures? A probe given true positions.

  python -m experiments.clevr.probe --root=data/clevr_synth --image_size=64

Cuts a square patch around each object's recorded pixel position (the scene file's
``pixel_coords``, rescaled to ``image_size`` as the model's input is), trains a small CNN with one
softmax head per attribute on the training split's patches, and reports the accuracy of each
attribute, and of all four together, on the validation split's objects.

The probe is told where each object is; the set model is not. Its all-four accuracy is therefore
an upper bound, from the pixels alone, on the fraction of objects the set model can get right,
which is what AP_inf counts. A low figure says the pictures are too small or too ambiguous; a
high one says the limit lies in the set model's learning. Occlusion is kept: a patch shows
whatever covers the object there.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from absl import app, flags, logging

from experiments.clevr import data as clevr_data
from experiments.clevr import scenes

ATTRIBUTES = {
  "material": scenes.MATERIAL,
  "color": scenes.COLOR,
  "shape": scenes.SHAPE,
  "size": scenes.SIZE,
}

def object_patches(source: clevr_data.ClevrFolderSource, *, image_size: int, crop: int,
                   max_scenes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Patches around every object of a split, and their attribute labels.

  Args:
    source: A CLEVR folder split whose scene file records ``pixel_coords``.
    image_size: Images are resized to this side before cutting, as in training.
    crop: Side of the square patch; the image is padded with its edge pixels, so objects near
      the border get whole patches.
    max_scenes: Only the first scenes of the split.

  Returns:
    Patches of shape [M, crop, crop, 3] in [0, 1] and labels of shape [M, 4] (paper-order
    indices of material, colour, shape and size, the order of ``ATTRIBUTES``).

  Raises:
    ClevrDataError: An object has no finite ``pixel_coords``, or the split has no objects.
    BadImageError: An image cannot be read.
  """
  if crop < 1:
    raise ValueError(f"crop must be a positive number of pixels, got {crop}")
  count = len(source) if max_scenes is None else min(max_scenes, len(source))
  patches, labels = [], []
  half = crop // 2
  for i in range(count):
    image, objects_set = source.load(i, image_size=image_size)  # [S, S, 3], [N, D]
    # The pixel holding each object's centre; row k of the set is object k of the scene.
    centres = np.clip(np.floor(source.pixel_coords(i, image_size=image_size)).astype(int), 0,
                      image_size - 1)  # [K, 2]
    padded = np.pad(image, ((crop, crop), (crop, crop), (0, 0)), mode="edge")
    for k, (x, y) in enumerate(centres):
      top, left = y + crop - half, x + crop - half
      patches.append(padded[top:top + crop, left:left + crop])
      labels.append([int(np.argmax(objects_set[k, s])) for s in ATTRIBUTES.values()])
  if not patches:
    raise scenes.ClevrDataError(f"split {source.split!r} has no objects to probe")
  return np.stack(patches).astype(np.float32) / np.float32(255.0), np.asarray(labels, np.int32)


class ProbeNet(nn.Module):
  """Four 3x3 convolutions (two of stride 2), a dense layer and one head per attribute."""

  width: int = 64

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    for features, stride in ((self.width // 2, 1), (self.width, 2), (self.width, 1),
                             (self.width, 2)):
      x = nn.relu(nn.Conv(features, (3, 3), stride)(x))
    x = nn.relu(nn.Dense(2 * self.width)(x.reshape(x.shape[0], -1)))
    return [nn.Dense(s.stop - s.start, name=f"head_{name}")(x)
            for name, s in ATTRIBUTES.items()]


def accuracies(predicted: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  """% of objects with each attribute right, and with all four right (``all``)."""
  right = np.asarray(predicted) == np.asarray(labels)  # [M, 4]
  out = {name: float(100 * right[:, j].mean()) for j, name in enumerate(ATTRIBUTES)}
  out["all"] = float(100 * right.all(axis=1).mean())
  return out


def train_probe(train: tuple[np.ndarray, np.ndarray], val: tuple[np.ndarray, np.ndarray], *,
                steps: int, batch_size: int = 256, learning_rate: float = 1e-3,
                eval_every: int = 500, seed: int = 0,
                log: Callable[[dict], None] | None = None) -> list[dict]:
  """Trains the probe on ``train`` patches; returns the validation accuracies per evaluation.

  Each row is ``{"step", "loss", "seconds", <attribute>: %, "all": %}``; the last row is at
  ``steps``.
  """
  train_x, train_y = train
  val_x, val_y = val
  if min(steps, batch_size, eval_every) < 1:
    raise ValueError(f"steps, batch_size and eval_every must be positive, got {steps}, "
                     f"{batch_size} and {eval_every}")
  net = ProbeNet()
  params = net.init(jax.random.key(seed), train_x[:1])
  optimizer = optax.adam(learning_rate)
  opt_state = optimizer.init(params)

  def loss_fn(params, x, y):
    logits = net.apply(params, x)
    return sum(optax.softmax_cross_entropy_with_integer_labels(o, y[:, j]).mean()
               for j, o in enumerate(logits))

  @jax.jit
  def step(params, opt_state, x, y):
    loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
    updates, opt_state = optimizer.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  @jax.jit
  def predict(params, x):
    return jnp.stack([o.argmax(-1) for o in net.apply(params, x)], axis=-1)

  def evaluate(params):
    chunks = [np.asarray(predict(params, val_x[i:i + 1024])) for i in range(0, len(val_x), 1024)]
    return accuracies(np.concatenate(chunks), val_y)

  rng = np.random.default_rng(seed)
  history, start = [], time.perf_counter()
  for i in range(1, steps + 1):
    idx = rng.integers(0, len(train_x), batch_size)
    params, opt_state, loss = step(params, opt_state, train_x[idx], train_y[idx])
    if i % eval_every == 0 or i == steps:
      row = {"step": i, "loss": float(loss), **evaluate(params),
             "seconds": time.perf_counter() - start}
      if not np.isfinite(row["loss"]):
        raise FloatingPointError(f"the probe's loss is {row['loss']} at step {i}")
      history.append(row)
      if log is not None:
        log(row)
  return history


def probe(root: str, *, image_size: int = 64, crop: int = 12, steps: int = 3000,
          batch_size: int = 256, learning_rate: float = 1e-3, eval_every: int = 500,
          max_train_scenes: int | None = None, seed: int = 0,
          log: Callable[[dict], None] | None = None) -> dict:
  """Cuts the patches of a CLEVR folder's train and val splits and trains the probe on them.

  Returns:
    ``{"root", "image_size", "crop", "train_objects", "val_objects", "history"}`` with the
    validation accuracies of `train_probe`.
  """
  sources = {split: clevr_data.ClevrFolderSource(root, split) for split in ("train", "val")}
  start = time.perf_counter()
  train = object_patches(sources["train"], image_size=image_size, crop=crop,
                         max_scenes=max_train_scenes)
  val = object_patches(sources["val"], image_size=image_size, crop=crop)
  logging.info("Probing %s at %d px: %d training and %d validation objects (%.1f s to cut).",
               root, image_size, len(train[0]), len(val[0]), time.perf_counter() - start)
  history = train_probe(train, val, steps=steps, batch_size=batch_size,
                        learning_rate=learning_rate, eval_every=eval_every, seed=seed, log=log)
  return {"root": root, "image_size": image_size, "crop": crop, "train_objects": len(train[0]),
          "val_objects": len(val[0]), "history": history}


def _define_flags() -> None:
  # Defined only when run as a script, so that importing the module (tests) adds no flags that
  # could clash with other scripts' (the renderer's --root, for one).
  flags.DEFINE_string("root", "data/clevr_synth", "A CLEVR folder (images/<split>, scenes/).")
  flags.DEFINE_integer("image_size", 64, "Images are resized to this side, as the model sees "
                       "them.")
  flags.DEFINE_integer("crop", 12, "Side of the patch around each object, in pixels of "
                       "image_size.")
  flags.DEFINE_integer("steps", 3000, "Training steps of the probe.")
  flags.DEFINE_integer("batch_size", 256, "Patches per training step.")
  flags.DEFINE_float("learning_rate", 1e-3, "Adam's learning rate.")
  flags.DEFINE_integer("eval_every", 500, "Validation accuracy every this many steps.")
  flags.DEFINE_integer("max_train_scenes", None, "Use only the first scenes of the training "
                       "split.")
  flags.DEFINE_integer("seed", 0, "Seed of the probe's initialisation and batches.")
  flags.DEFINE_string("output", None, "Write the result as JSON here.")


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  f = flags.FLAGS

  def log(row):
    logging.info("step %d: loss %.3f, %s (%.0f s)", row["step"], row["loss"],
                 ", ".join(f"{k} {row[k]:.1f}%" for k in (*ATTRIBUTES, "all")), row["seconds"])

  result = probe(f.root, image_size=f.image_size, crop=f.crop, steps=f.steps,
                 batch_size=f.batch_size, learning_rate=f.learning_rate,
                 eval_every=f.eval_every, max_train_scenes=f.max_train_scenes, seed=f.seed,
                 log=log)
  last = result["history"][-1]
  print(f"{result['val_objects']} validation objects of {f.root} at {f.image_size} px, given "
        f"their positions, after {last['step']} steps ({last['seconds']:.0f} s):")
  print(" | ".join(f"{k} {last[k]:.1f}%" for k in (*ATTRIBUTES, "all")))
  if f.output:
    with open(f.output, "w") as out:
      json.dump(result, out, indent=1)


if __name__ == "__main__":
  _define_flags()
  app.run(main)
