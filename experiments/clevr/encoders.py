"""Image encoders for CLEVR object property prediction: images [B, S, S, 3] -> latents [B, L].

``ResNet18`` is torchvision's resnet18 trunk (no average pool, no classifier) followed by the
iDSPN reference head: BatchNorm, then a 2x2 stride-2 convolution to ``L / spatial**2``
channels, flattened, where ``spatial = S // 32 // 2`` (2 at S = 128, 4 at S = 256). Its
BatchNorm statistics live in the ``batch_stats`` collection: call with ``train=True`` and
``mutable=["batch_stats"]`` while training, ``train=False`` to use the running averages.

``SmallCNN`` is a few strided convolutions (optionally with BatchNorm) and a dense layer, for
CPU-sized runs. It takes the same ``train`` argument.

Both compute their convolutions with ``Conv``: XLA's convolution on accelerators and, on CPU,
one matrix product over gathered patches (``conv_patches``), as XLA:CPU's convolution weight
gradient is slow. That makes both encoders' parameter gradient about 1.3x faster on CPU
(``python -m benchmarks.bench_parts``). The parameters are ``nn.Conv``'s either way.

References:
  He, Zhang, Ren, Sun. Deep Residual Learning for Image Recognition. CVPR 2016.
  Zhang, Zhang, Lacoste-Julien, Burghouts, Snoek. Multiset-Equivariant Set Prediction with
  Approximate Implicit Differentiation. ICLR 2022. arXiv:2111.12193.
"""

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from idspn_jax import FSPool

# torchvision's BatchNorm: momentum 0.1 on the new batch (flax keeps 0.9 of the old), eps 1e-5.
_BatchNorm = functools.partial(nn.BatchNorm, momentum=0.9, epsilon=1e-5)

CONV_IMPLS = ("auto", "xla", "patches")


def conv_patches(x: jax.Array, kernel: jax.Array, strides: int, padding: int) -> jax.Array:
  """A 2D convolution (NHWC, HWIO kernel) as one matrix product over gathered patches.

  Pads ``x`` by ``padding`` on each side, stacks the ``kh * kw`` strided views of it along
  the channels ([B, Ho, Wo, kh * kw * C]) and multiplies by the kernel reshaped to
  [kh * kw * C, F]. Equal to ``lax.conv_general_dilated`` with the same strides and symmetric
  padding. Its gradients are matrix products too, which XLA:CPU runs faster than its
  convolution's weight gradient (see the module docstring).
  """
  kh, kw, c, f = kernel.shape
  if x.shape[-1] != c:
    raise ValueError(f"input has {x.shape[-1]} channels, the kernel expects {c}")
  if padding:
    x = jnp.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
  _, h, w, _ = x.shape
  ho, wo = (h - kh) // strides + 1, (w - kw) // strides + 1
  if ho < 1 or wo < 1:
    raise ValueError(f"a {kh}x{kw} kernel does not fit a padded {h}x{w} input")
  views = [x[:, i:i + strides * (ho - 1) + 1:strides, j:j + strides * (wo - 1) + 1:strides]
           for i in range(kh) for j in range(kw)]
  patches = views[0] if len(views) == 1 else jnp.concatenate(views, axis=-1)
  return patches @ kernel.reshape(kh * kw * c, f)  # [B, Ho, Wo, F]


class Conv(nn.Module):
  """A square-strided 2D convolution with ``nn.Conv``'s parameters (``kernel`` [kh, kw, C, F],
  ``bias`` [F]) and initialisers, computed by XLA's convolution or by ``conv_patches``.

  The parameters have ``nn.Conv``'s names and shapes, so checkpoints do not depend on ``impl``.

  Attributes:
    features: F, output channels.
    kernel_size: (kh, kw).
    strides: The stride along both spatial axes.
    padding: Zeros added on each side of both spatial axes, or "VALID" (none).
    use_bias: Add a learned bias.
    impl: "xla" (``lax.conv_general_dilated``), "patches" (``conv_patches``) or "auto"
      (patches on CPU, where XLA's convolution gradients are slow; XLA's convolution on
      accelerators).
  """

  features: int
  kernel_size: Sequence[int]
  strides: int = 1
  padding: int | str = 0
  use_bias: bool = True
  impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.impl not in CONV_IMPLS:
      raise ValueError(f"unknown convolution impl {self.impl!r}; choose one of {CONV_IMPLS}")
    padding = 0 if self.padding == "VALID" else self.padding
    if not isinstance(padding, int) or padding < 0:
      raise ValueError(f"padding must be a non-negative int or 'VALID', got {self.padding!r}")
    kh, kw = self.kernel_size
    kernel = self.param("kernel", nn.initializers.lecun_normal(),
                        (kh, kw, x.shape[-1], self.features), jnp.float32)
    dtype = jnp.result_type(x, kernel)  # As nn.Conv: the input's and parameters' common type.
    x, kernel = jnp.asarray(x, dtype), kernel.astype(dtype)
    impl = self.impl
    if impl == "auto":
      impl = "patches" if jax.default_backend() == "cpu" else "xla"
    if impl == "patches":
      y = conv_patches(x, kernel, self.strides, padding)
    else:
      y = jax.lax.conv_general_dilated(
        x, kernel, (self.strides, self.strides), ((padding, padding), (padding, padding)),
        dimension_numbers=("NHWC", "HWIO", "NHWC"))
    if self.use_bias:
      bias = self.param("bias", nn.initializers.zeros_init(), (self.features,), jnp.float32)
      y = y + bias.reshape(1, 1, 1, self.features).astype(dtype)
    return y


class BasicBlock(nn.Module):
  """Two 3x3 convolutions with BatchNorm and a (projected) shortcut."""

  features: int
  strides: int = 1
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    norm = functools.partial(_BatchNorm, use_running_average=not train)
    conv = functools.partial(Conv, use_bias=False, impl=self.conv_impl)
    y = conv(self.features, (3, 3), self.strides, padding=1)(x)
    y = nn.relu(norm()(y))
    y = conv(self.features, (3, 3), padding=1)(y)
    # torchvision's zero_init_residual is off: the last BatchNorm starts at scale 1.
    y = norm()(y)
    if self.strides != 1 or x.shape[-1] != self.features:
      x = conv(self.features, (1, 1), self.strides, name="downsample_conv")(x)
      x = norm(name="downsample_norm")(x)
    return nn.relu(x + y)


class ResNet18(nn.Module):
  """ResNet18 trunk plus the iDSPN head.

  Attributes:
    latent: L, the output width; must be divisible by ``spatial**2``.
    image_size: S, the input side (at least 64; 128 or 256 in the paper).
    stage_sizes: BasicBlocks per stage (2, 2, 2, 2 for ResNet18).
    widths: Channels per stage.
    conv_impl: How convolutions are computed (see ``Conv``); the parameters do not depend on it.
  """

  latent: int = 512
  image_size: int = 128
  stage_sizes: Sequence[int] = (2, 2, 2, 2)
  widths: Sequence[int] = (64, 128, 256, 512)
  conv_impl: str = "auto"

  @nn.compact
  def __call__(self, images: jax.typing.ArrayLike, *, train: bool) -> jax.Array:
    """Encodes images.

    Args:
      images: Float images of shape [B, S, S, 3] (values in [0, 1]).
      train: Use batch statistics and update the running ones (needs mutable batch_stats).

    Returns:
      Latents of shape [B, L].
    """
    x = jnp.asarray(images)
    b, h, w, _ = x.shape
    spatial = self.image_size // 32 // 2
    if (h, w) != (self.image_size, self.image_size):
      raise ValueError(f"expected images of {self.image_size}x{self.image_size}, got {h}x{w}")
    if spatial < 1 or self.latent % spatial**2:
      raise ValueError(f"image_size {self.image_size} gives a {spatial}x{spatial} head grid; it "
                       f"needs image_size >= 64 and latent divisible by {max(spatial, 1)**2}")
    norm = functools.partial(_BatchNorm, use_running_average=not train)
    conv = functools.partial(Conv, impl=self.conv_impl)
    x = conv(self.widths[0], (7, 7), 2, padding=3, use_bias=False, name="conv1")(x)
    x = nn.relu(norm(name="bn1")(x))  # [B, S/2, S/2, 64]
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))  # [B, S/4, S/4, 64]
    for i, (blocks, width) in enumerate(zip(self.stage_sizes, self.widths, strict=True)):
      for j in range(blocks):
        x = BasicBlock(width, strides=2 if i > 0 and j == 0 else 1,
                       conv_impl=self.conv_impl)(x, train=train)
    # x: [B, S/32, S/32, 512]. The head halves the grid once more.
    x = norm(name="head_norm")(x)
    x = conv(self.latent // spatial**2, (2, 2), 2, padding="VALID", name="head_conv")(x)
    return x.reshape(b, self.latent)  # [B, spatial, spatial, L / spatial^2] -> [B, L]


class SmallCNN(nn.Module):
  """A few strided 3x3 convolutions (with x/y coordinate channels) and a dense layer.

  Attributes:
    latent: L, the output width.
    widths: Channels of the convolutions.
    strides: Each convolution's stride (None: 2 for every one, each halving the grid). A
      stride-1 convolution after the last stride-2 one widens what each cell of the final grid
      sees (its receptive field) without shrinking the grid.
    residual: A stride-1 convolution whose width is its input's adds its output to its input
      (before the ReLU), as ResNet's blocks do: the features below pass on unchanged.
    coord_channels: Append the pixel's x and y in [-1, 1] to the input (CoordConv), which
      helps the encoder report object positions.
    batch_norm: BatchNorm after each convolution (no conv biases then); the CPU CLEVR config
      uses it.
    conv_impl: How convolutions are computed (see ``Conv``); the parameters do not depend on it.
    head: How the last grid becomes the latent. ``"dense"``: two dense layers on the flattened
      grid, so each cell has weights of its own. ``"mean"``, ``"sum"`` or ``"fs"``: the same
      MLP (``head_layers`` hidden ReLU layers, then a linear one) on every cell (its features
      and the cell's x and y in [-1, 1]), then the cells' mean, sum or FSPool (the set
      encoder's pooling, over the cells). A shared cell MLP learns what an object looks like
      once for every place it can be, and gives a latent of the same form as iDSPN's set code
      (a pool over parts); the pooled heads also take any image size. On the CPU CLEVR config
      ``"mean"`` learns faster than the dense head (docs/experiments/clevr.md).
    head_layers: Hidden ReLU layers of the pooled heads' cell MLP (each of width ``latent``).
  """

  latent: int = 512
  widths: Sequence[int] = (32, 64, 64, 128)
  strides: Sequence[int] | None = None
  residual: bool = False
  coord_channels: bool = True
  batch_norm: bool = False
  conv_impl: str = "auto"
  head: str = "dense"
  head_layers: int = 1

  @nn.compact
  def __call__(self, images: jax.typing.ArrayLike, *, train: bool = False) -> jax.Array:
    """Encodes images of shape [B, S, S, 3] into latents of shape [B, L].

    With ``batch_norm``, ``train=True`` uses batch statistics and updates the running ones
    (call with ``mutable=["batch_stats"]``); otherwise ``train`` is unused.
    """
    if self.head not in SMALL_CNN_HEADS:
      raise ValueError(f"unknown SmallCNN head {self.head!r}; expected one of {SMALL_CNN_HEADS}")
    if self.head_layers < 1:
      raise ValueError(f"head_layers must be >= 1, got {self.head_layers}")
    if self.head == "dense" and self.head_layers != 1:
      raise ValueError(f"head_layers={self.head_layers} needs a pooled head ('mean', 'sum' or "
                       "'fs'); the dense head has no cell MLP")
    strides = conv_strides(self.widths, self.strides)
    x = jnp.asarray(images)
    b = x.shape[0]
    if self.coord_channels:
      x = _append_coordinates(x)  # [B, S, S, 5]
    for width, stride in zip(self.widths, strides):
      y = Conv(width, (3, 3), stride, padding=1, use_bias=not self.batch_norm,
               impl=self.conv_impl)(x)  # Stride 2 halves the grid.
      if self.batch_norm:
        y = _BatchNorm(use_running_average=not train)(y)
      # A residual stride-1 convolution adds to its input what it sees around each cell.
      x = nn.relu(x + y if self.residual and stride == 1 and x.shape[-1] == width else y)
    if self.head == "dense":
      x = x.reshape(b, -1)  # [B, (S / 2^k)^2 * C]
      x = nn.relu(nn.Dense(self.latent)(x))
      return nn.Dense(self.latent)(x)  # [B, L]
    x = _append_coordinates(x)  # [B, G, G, C + 2]
    cells = x.reshape(b, -1, x.shape[-1])  # [B, G * G, C + 2]
    x = cells
    for _ in range(self.head_layers):
      x = nn.relu(nn.Dense(self.latent)(x))  # [B, G * G, L]
    if self.head == "mean":
      # The mean commutes with the affine layer: one product on the mean instead of one per
      # cell, the same function.
      return nn.Dense(self.latent)(x.mean(axis=1))  # [B, L]
    x = nn.Dense(self.latent)(x)  # [B, G * G, L]
    if self.head == "sum":
      return x.sum(axis=1)  # [B, L]
    return FSPool(cells.shape[1])(x)  # [B, L]


def conv_strides(widths: Sequence[int], strides: Sequence[int] | None) -> tuple[int, ...]:
  """SmallCNN's stride for each of its convolutions: ``strides`` (None: 2 for every one).

  Raises:
    ValueError: when ``strides`` does not give 1 or 2 for each width.
  """
  if strides is None:
    return (2,) * len(widths)
  strides = tuple(strides)
  if len(strides) != len(widths) or any(s not in (1, 2) for s in strides):
    raise ValueError(f"strides must give 1 or 2 for each of the {len(widths)} widths "
                     f"{tuple(widths)}, got {strides}")
  return strides


def _append_coordinates(x: jax.Array) -> jax.Array:
  """Appends each pixel's x and y in [-1, 1] to the channels of [B, H, W, C] (CoordConv)."""
  b, h, w, _ = x.shape
  ys, xs = jnp.meshgrid(jnp.linspace(-1, 1, h, dtype=x.dtype),
                        jnp.linspace(-1, 1, w, dtype=x.dtype), indexing="ij")
  grid = jnp.broadcast_to(jnp.stack([xs, ys], axis=-1), (b, h, w, 2))
  return jnp.concatenate([x, grid], axis=-1)  # [B, H, W, C + 2]


SMALL_CNN_HEADS = ("dense", "mean", "sum", "fs")
ENCODERS = ("resnet18", "small_cnn")


def create_image_encoder(name: str, *, latent: int, image_size: int, **kwargs) -> nn.Module:
  """Returns the encoder ``name`` ("resnet18" or "small_cnn") mapping [B, S, S, 3] to [B, L]."""
  if name == "resnet18":
    return ResNet18(latent=latent, image_size=image_size, **kwargs)
  if name == "small_cnn":
    return SmallCNN(latent=latent, **kwargs)
  raise ValueError(f"unknown image encoder {name!r}; choose one of {ENCODERS}")
