"""Image encoders: output shapes, the reference head's widths, BatchNorm state."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import image_encoders as ie


def _variables(model, images: jax.Array, seed: int = 0):
  """Random variables of the model's structure, without compiling its initialisers (slow here)."""
  shapes = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: jnp.asarray(0.05 * rng.normal(size=s.shape), s.dtype), shapes)


def test_resnet18_output_shape_and_batch_stats():
  model = ie.create_image_encoder("resnet18", latent=512, image_size=64)
  images = jnp.asarray(np.random.default_rng(1).uniform(size=(2, 64, 64, 3)), jnp.float32)
  variables = _variables(model, images)
  n_params = sum(p.size for p in jax.tree.leaves(variables["params"]))
  # torchvision resnet18 without fc (11,176,512), head BatchNorm (1,024), 2x2 conv to 512.
  assert n_params == 11_176_512 + 1_024 + 2 * 2 * 512 * 512 + 512
  train = jax.jit(lambda v, x: model.apply(v, x, train=True, mutable=["batch_stats"]))
  latents, updates = train(variables, images)
  assert latents.shape == (2, 512) and latents.dtype == jnp.float32
  assert np.all(np.isfinite(latents))
  before = variables["batch_stats"]["bn1"]["mean"]
  assert not np.allclose(updates["batch_stats"]["bn1"]["mean"], before)
  evaluated = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  assert evaluated.shape == (2, 512)


@pytest.mark.parametrize("image_size,channels", [(128, 128), (256, 32)])
def test_resnet18_head_widths(image_size, channels):
  model = ie.ResNet18(latent=512, image_size=image_size)
  images = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
  variables = jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), images)
  assert variables["params"]["head_conv"]["kernel"].shape == (2, 2, 512, channels)
  out = jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, images)
  assert out.shape == (1, 512)


def test_small_cnn_output_shape():
  model = ie.create_image_encoder("small_cnn", latent=64, image_size=32)
  images = jnp.ones((3, 32, 32, 3), jnp.float32)
  latents = model.apply(_variables(model, images), images, train=True)
  assert latents.shape == (3, 64) and np.all(np.isfinite(latents))


def test_small_cnn_batch_norm_trains_on_batch_statistics():
  model = ie.create_image_encoder("small_cnn", latent=8, image_size=16, widths=(4, 8),
                                  batch_norm=True)
  images = jax.random.uniform(jax.random.key(0), (4, 16, 16, 3))
  variables = model.init(jax.random.key(1), images, train=False)
  assert set(variables["batch_stats"]) == {"BatchNorm_0", "BatchNorm_1"}
  assert "bias" not in variables["params"]["Conv_0"]
  out, updates = model.apply(variables, images, train=True, mutable=["batch_stats"])
  assert out.shape == (4, 8)
  moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), updates["batch_stats"],
                       variables["batch_stats"])
  assert all(m > 0 for m in jax.tree.leaves(moved))
  # Evaluation uses the running statistics: a single image's output does not depend on the
  # others in its batch.
  one = model.apply(variables, images[:1], train=False)
  np.testing.assert_allclose(one, model.apply(variables, images, train=False)[:1], rtol=1e-5,
                             atol=1e-6)


def test_bad_encoder_arguments():
  with pytest.raises(ValueError, match="unknown image encoder 'vgg'"):
    ie.create_image_encoder("vgg", latent=512, image_size=128)
  model = ie.ResNet18(latent=512, image_size=128)
  with pytest.raises(ValueError, match="expected images of 128x128, got 64x64"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  with pytest.raises(ValueError, match="needs image_size >= 64"):
    small = ie.ResNet18(latent=512, image_size=32)
    jax.eval_shape(lambda x: small.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))
