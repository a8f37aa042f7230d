r"""Renders a synthetic CLEVR-style dataset in the CLEVR v1.0 layout.

  python -m experiments.render_clevr --root=data/clevr_synth --train=5000 --val=500 \
      --image_size=128

Splits that are already complete with the same settings are left as they are.
"""

from absl import app, flags, logging

from experiments import clevr_render

_ROOT = flags.DEFINE_string("root", "data/clevr_synth", "Dataset folder.")
_TRAIN = flags.DEFINE_integer("train", 5000, "Training images.")
_VAL = flags.DEFINE_integer("val", 500, "Validation images.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 128, "Side of the square images in pixels.")
_SEED = flags.DEFINE_integer("seed", 0, "Dataset seed.")
_WORKERS = flags.DEFINE_integer("workers", None, "Render processes (default: every CPU).")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Re-render splits made with other settings.")


def main(argv):
  del argv
  counts = clevr_render.render_dataset(
    _ROOT.value, splits={"train": _TRAIN.value, "val": _VAL.value},
    image_size=_IMAGE_SIZE.value, seed=_SEED.value, num_workers=_WORKERS.value,
    overwrite=_OVERWRITE.value)
  logging.info("Rendered per split (0 = already complete): %s", counts)


if __name__ == "__main__":
  app.run(main)
