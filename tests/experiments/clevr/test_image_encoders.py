"""Image encoders: output shapes, the reference head's widths, BatchNorm state."""

import functools

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.clevr import encoders as ie


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


def test_small_cnn_pooled_heads_share_one_cell_mlp():
  """The mean, sum and FSPool heads are the same cell MLP pooled three ways: with one set of
  parameters, sum = cells * mean (the mean head applies its last layer after pooling), and FSPool
  with all weights 1 is the sum. The pooled heads take any image size; the dense head does not."""
  images = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3))
  make = lambda head: ie.SmallCNN(latent=6, widths=(4, 8), head=head)  # 8x8 cells.
  variables = _variables(make("fs"), images)
  params = variables["params"]
  assert params["FSPool_0"]["weight"].shape[0] == 64
  mlp = {"params": {k: v for k, v in params.items() if k != "FSPool_0"}}
  mean = make("mean").apply(mlp, images)
  total = make("sum").apply(mlp, images)
  assert mean.shape == (2, 6)
  np.testing.assert_allclose(total, 64 * mean, rtol=1e-5, atol=1e-5)
  ones = jax.tree.map(jnp.ones_like, params["FSPool_0"])
  fs = make("fs").apply({"params": {**params, "FSPool_0": ones}}, images)
  np.testing.assert_allclose(fs, total, rtol=1e-5, atol=1e-5)
  # The cell MLP sees each cell's 8 channels and its x and y.
  assert params["Dense_0"]["kernel"].shape == (8 + 2, 6)
  # 48 px gives 6x6 cells, through the same parameters.
  assert make("mean").apply(mlp, jnp.ones((1, 48, 48, 3))).shape == (1, 6)
  dense = ie.SmallCNN(latent=6, widths=(4, 8), head="dense")
  dense_vars = _variables(dense, images)
  with pytest.raises(flax.errors.ScopeParamShapeError):
    dense.apply(dense_vars, jnp.ones((1, 48, 48, 3)))


def test_bad_encoder_arguments():
  with pytest.raises(ValueError, match="unknown image encoder 'vgg'"):
    ie.create_image_encoder("vgg", latent=512, image_size=128)
  with pytest.raises(ValueError, match="unknown SmallCNN head 'max'"):
    ie.SmallCNN(latent=8, head="max").init(jax.random.key(0), jnp.ones((1, 16, 16, 3)))
  model = ie.ResNet18(latent=512, image_size=128)
  with pytest.raises(ValueError, match="expected images of 128x128, got 64x64"):
    jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32))
  with pytest.raises(ValueError, match="needs image_size >= 64"):
    small = ie.ResNet18(latent=512, image_size=32)
    jax.eval_shape(lambda x: small.init(jax.random.key(0), x, train=False),
                   jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32))


@pytest.mark.parametrize("impl,kernel,strides,padding,channels",
                         [("patches", 3, 2, 1, 5), ("patches", 3, 1, 1, 4), ("patches", 7, 2, 3, 3),
                          ("patches", 1, 2, "VALID", 6), ("patches", 2, 2, "VALID", 4),
                          ("xla", 3, 2, 1, 5), ("xla", 2, 2, "VALID", 4)])
def test_conv_equals_flax_conv_in_values_and_gradients(impl, kernel, strides, padding, channels):
  x = jax.random.normal(jax.random.key(0), (2, 11, 11, channels))
  ours = ie.Conv(8, (kernel, kernel), strides, padding=padding, impl=impl)
  flax_padding = padding if padding == "VALID" else [(padding, padding)] * 2
  theirs = nn.Conv(8, (kernel, kernel), strides, padding=flax_padding)
  variables = theirs.init(jax.random.key(1), x)
  # The same parameter names, shapes, dtypes and initial values.
  jax.tree.map(lambda a, b: np.testing.assert_array_equal(a, b),
               ours.init(jax.random.key(1), x), variables)
  variables = jax.tree.map(lambda v: v + 0.1, variables)  # A non-zero bias.
  np.testing.assert_allclose(jax.jit(ours.apply)(variables, x),
                             jax.jit(theirs.apply)(variables, x), rtol=1e-5, atol=1e-5)

  def grads(module):
    loss = lambda v, x: jnp.sum(jnp.sin(module.apply(v, x)))
    return jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)

  for a, b in zip(jax.tree.leaves(grads(ours)), jax.tree.leaves(grads(theirs)), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_conv_bad_arguments():
  x = jnp.ones((1, 4, 4, 3))
  with pytest.raises(ValueError, match="unknown convolution impl 'cudnn'"):
    ie.Conv(2, (3, 3), impl="cudnn").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="padding must be"):
    ie.Conv(2, (3, 3), padding="SAME").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="does not fit a padded 4x4 input"):
    ie.Conv(2, (5, 5), impl="patches").init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="input has 3 channels, the kernel expects 2"):
    ie.conv_patches(x, jnp.ones((3, 3, 2, 4)), 1, 1)


@pytest.mark.parametrize("name,size,options", [("small_cnn", 32, {"batch_norm": True}),
                                               ("resnet18", 64, {})])
def test_encoders_agree_across_conv_impls(name, size, options):
  images = jax.random.uniform(jax.random.key(2), (2, size, size, 3))
  models = [ie.create_image_encoder(name, latent=32 if name == "small_cnn" else 512,
                                    image_size=size, conv_impl=impl, **options)
            for impl in ("xla", "patches")]
  variables = _variables(models[0], images)
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(
    jnp.shape, _variables(models[1], images))
  # Every convolution takes the impl asked for: XLA's convolution op, or none at all; "auto"
  # (the configs' default) takes patches on CPU.
  n_convs = 21 if name == "resnet18" else 4  # ResNet18: 20 in the trunk, 1 in the head.
  auto = ie.create_image_encoder(name, latent=32 if name == "small_cnn" else 512,
                                 image_size=size, **options)
  auto_convs = 0 if jax.default_backend() == "cpu" else n_convs
  for model, expected in zip([*models, auto], (n_convs, 0, auto_convs), strict=True):
    jaxpr = str(jax.make_jaxpr(lambda v, x, m=model: m.apply(v, x, train=False))(variables, images))
    assert jaxpr.count("conv_general_dilated") == expected
  outs = [jax.jit(functools.partial(m.apply, train=True, mutable=["batch_stats"]))(
    variables, images) for m in models]
  for a, b in zip(jax.tree.leaves(outs[0]), jax.tree.leaves(outs[1]), strict=True):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_small_cnn_head_layers_deepen_the_cell_mlp():
  """``head_layers=2`` adds one hidden layer to the pooled heads' cell MLP: with that layer set
  to the identity (ReLU of a ReLU is the ReLU), it is the one-layer head with the same weights."""
  images = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3))
  make = lambda layers: ie.SmallCNN(latent=6, widths=(4, 8), head="mean", head_layers=layers)
  params = _variables(make(2), images)["params"]
  assert params["Dense_0"]["kernel"].shape == (8 + 2, 6)
  assert params["Dense_1"]["kernel"].shape == (6, 6)
  assert params["Dense_2"]["kernel"].shape == (6, 6)
  identity = {"kernel": jnp.eye(6), "bias": jnp.zeros(6)}
  deep = make(2).apply({"params": {**params, "Dense_1": identity}}, images)
  shallow_params = {k: v for k, v in params.items() if k not in ("Dense_1", "Dense_2")}
  shallow = make(1).apply({"params": {**shallow_params, "Dense_1": params["Dense_2"]}}, images)
  np.testing.assert_allclose(deep, shallow, rtol=1e-5, atol=1e-6)
  # A genuine second layer changes the function.
  assert not np.allclose(make(2).apply({"params": params}, images), shallow, atol=1e-4)
  with pytest.raises(ValueError, match="head_layers must be >= 1, got 0"):
    make(0).init(jax.random.key(0), images)
  with pytest.raises(ValueError, match="head_layers=2 needs a pooled head"):
    ie.SmallCNN(latent=6, widths=(4, 8), head="dense", head_layers=2).init(
      jax.random.key(0), images)


def test_small_cnn_stride_one_convolution_keeps_the_grid():
  """A stride-1 convolution after the stride-2 ones keeps the grid (8x8 cells at 32 px): set to
  the identity (a centred one-hot kernel, no bias; ReLU of a ReLU is the ReLU) it gives the
  encoder without it, with the same other weights."""
  images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))
  deep = ie.SmallCNN(latent=6, widths=(4, 8, 8), strides=(2, 2, 1), head="mean")
  shallow = ie.SmallCNN(latent=6, widths=(4, 8), head="mean")
  params = _variables(deep, images)["params"]
  assert params["Conv_2"]["kernel"].shape == (3, 3, 8, 8)
  assert params["Dense_0"]["kernel"].shape == (8 + 2, 6)  # The 8 channels and x, y of a cell.
  identity = {"kernel": jnp.zeros((3, 3, 8, 8)).at[1, 1].set(jnp.eye(8)), "bias": jnp.zeros(8)}
  out = deep.apply({"params": {**params, "Conv_2": identity}}, images)
  expected = shallow.apply(
    {"params": {k: v for k, v in params.items() if k != "Conv_2"}}, images)
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
  assert not np.allclose(deep.apply({"params": params}, images), expected, atol=1e-4)
  for strides, message in [((2, 2), "strides must give 1 or 2 for each of the 3 widths"),
                           ((2, 3, 1), r"got \(2, 3, 1\)")]:
    with pytest.raises(ValueError, match=message):
      ie.SmallCNN(latent=6, widths=(4, 8, 8), strides=strides).init(jax.random.key(0), images)


def test_small_cnn_residual_convolution_adds_to_its_input():
  """``residual=True``: a stride-1 convolution of its input's width adds to its input, so with a
  zero kernel and bias it passes the features below on unchanged (ReLU of a ReLU is the ReLU);
  without ``residual`` the same zero convolution wipes them out. The stride-2 ones are as before."""
  images = jax.random.uniform(jax.random.key(3), (2, 32, 32, 3))
  make = lambda residual: ie.SmallCNN(latent=6, widths=(4, 8, 8), strides=(2, 2, 1),
                                      residual=residual, head="mean")
  params = _variables(make(True), images)["params"]
  zero = {"kernel": jnp.zeros((3, 3, 8, 8)), "bias": jnp.zeros(8)}
  shallow = ie.SmallCNN(latent=6, widths=(4, 8), head="mean").apply(
    {"params": {k: v for k, v in params.items() if k != "Conv_2"}}, images)
  passed = make(True).apply({"params": {**params, "Conv_2": zero}}, images)
  np.testing.assert_allclose(passed, shallow, rtol=1e-5, atol=1e-6)
  wiped = make(False).apply({"params": {**params, "Conv_2": zero}}, images)
  assert not np.allclose(wiped, shallow, atol=1e-4)
  # A genuine residual convolution changes the function.
  assert not np.allclose(make(True).apply({"params": params}, images), shallow, atol=1e-4)
