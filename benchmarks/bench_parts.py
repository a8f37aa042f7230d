"""Where a training step's time goes: its parts timed alone (median ms, jitted, f32).

  python -m benchmarks.bench_parts

Per inner step the iDSPN energy gradient runs the element MLP's two big matmuls (forward and
input gradient), FSPool's ranks and, for numbering, the simplex projection. This times each at
the shapes of the paper's configs, with the alternatives we measured. For CLEVR it times the
image encoders' parameter gradient with XLA's convolutions and with ``conv_patches`` (the
default on CPU).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

import idspn_jax
import idspn_jax._encoders as encoders
from benchmarks import common
from experiments.clevr import encoders as image_encoders


def _ms(fn, *args) -> float:
  return 1e3 * common.median_time(jax.jit(fn), *args, repeats=7)


def _ranks(n: int, broadcast: bool):
  def fn(x):
    saved = encoders.BROADCAST_RANKS_UP_TO
    encoders.BROADCAST_RANKS_UP_TO = n if broadcast else 0
    try:
      return encoders._sort_ranks(x)
    finally:
      encoders.BROADCAST_RANKS_UP_TO = saved

  return fn


def _ranks_compare_or_tie(x):
  """The earlier streamed form: ``(x_j < x_i) | ((x_j == x_i) & (j < i))``, 8 elements j per
  loop step (what `_sort_ranks`' one select per pair replaced)."""
  b, n, k = x.shape
  index = jnp.arange(n)[None, :, None, None]  # [1, N(i), 1, 1]

  def count(block, ranks):
    xj = jax.lax.dynamic_slice_in_dim(x, block * 8, 8, axis=1)[:, None]  # [B, 1, 8, K]
    j = (block * 8 + jnp.arange(8))[None, None, :, None]  # [1, 1, 8, 1]
    before = (xj < x[:, :, None]) | ((xj == x[:, :, None]) & (j < index))  # [B, N, 8, K]
    return ranks + jnp.sum(before, axis=2, dtype=jnp.int16)

  return jax.lax.fori_loop(0, n // 8, count, jnp.zeros(x.shape, jnp.int16)).astype(jnp.int32)


def run() -> dict:
  key = jax.random.key(0)
  out = {}
  shapes = {"random_sets": (128, 16, 512), "numbering": (128, 64, 256)}  # B, N, K
  for name, (b, n, k) in shapes.items():
    x = jax.random.normal(key, (b, n, k), jnp.float32)
    h = jax.random.normal(key, (b * n, k), jnp.float32)
    w = jax.random.normal(key, (k, k), jnp.float32)
    out[name] = {
      "matmul (B*N, K) @ (K, K)": _ms(jnp.dot, h, w),
      "ranks, one broadcast comparison": _ms(_ranks(n, True), x),
      "ranks, loop over elements (one select per pair)": _ms(_ranks(n, False), x),
      "ranks, loop over blocks of 8 (compare or tie)": _ms(_ranks_compare_or_tie, x),
      "argsort (XLA sort)": _ms(lambda x: jnp.argsort(x, axis=-2), x),
    }
    if name == "numbering":
      y = jax.random.normal(key, (b, n, n), jnp.float32)
      for method in ("sort", "count", "pivot"):
        out[name][f"simplex projection, {method}"] = _ms(
          lambda y, m=method: idspn_jax.project_rows_to_simplex(y, method=m), y)
  out.update(encoder_gradients())
  return out


def encoder_gradients() -> dict:
  """Median ms of the image encoders' parameter gradient (BatchNorm in training mode) at the
  CPU CLEVR config's SmallCNN as it was at 64 px (three stride-2 convolutions, batch 32) and for
  ResNet18 (batch 16, 128 px)."""
  encoders = {
    "clevr SmallCNN (32, 64, 64, 3)": (
      dict(name="small_cnn", latent=256, image_size=64, widths=(32, 64, 128), batch_norm=True,
           head="mean", head_layers=2),
      32),
    "clevr ResNet18 (16, 128, 128, 3)": (dict(name="resnet18", latent=512, image_size=128), 16),
  }
  out = {}
  for label, (options, batch) in encoders.items():
    size = options["image_size"]
    images = jax.random.uniform(jax.random.key(0), (batch, size, size, 3))
    out[label] = {}
    for impl in ("xla", "patches"):
      model = image_encoders.create_image_encoder(**options, conv_impl=impl)
      variables = jax.jit(lambda x, m=model: m.init(jax.random.key(1), x, train=False))(images)

      def loss(params, x, m=model, v=variables):
        z, _ = m.apply({**v, "params": params}, x, train=True, mutable=["batch_stats"])
        return jnp.sum(z**2)

      out[label][f"encoder gradient, conv_impl={impl}"] = _ms(
        jax.grad(loss), variables["params"], images)
  return out


def markdown(results: dict) -> str:
  lines = ["| config | part | ms |", "|---|---|---|"]
  for config, parts in results.items():
    for part, ms in parts.items():
      lines.append(f"| {config} | {part} | {ms:.1f} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(markdown(run()))
