"""The iDSPN layer: a latent vector in, a set out, by an inner optimisation."""

from __future__ import annotations

import functools
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from idspn_jax._encoders import SetEncoder
from idspn_jax._energies import ENERGIES, mse_energy
from idspn_jax._inner import solve
from idspn_jax._projections import project_rows_to_simplex

PROJECTIONS = {"simplex": project_rows_to_simplex}


class IDSPN(nn.Module):
  """Implicit Deep Set Prediction Network: ``Y* = argmin_Y L(Y; g, z)`` for each ``z``.

  The layer owns the energy's set encoder ``g`` (parameters under ``"g"``) and, with
  ``learn_start``, the start set (``"y0"``, shape [N, D], initialised ``0.1 * N(0, 1)``);
  otherwise each call draws a fresh ``0.1 * N(0, 1)`` start from the ``"start"`` rng stream.
  ``backward="unroll"`` with ``momentum=0`` is DSPN.

  Attributes:
    set_size: N, elements per predicted set.
    set_dim: D, features per element.
    latent: K, width of ``z`` and of the encoder's output.
    hidden: Hidden width of the encoder's element MLP.
    pool: Encoder pool: ``"fs"``, ``"rnfs"``, ``"sum"`` or ``"mean"``.
    encoder: A custom set encoder (any Flax module mapping [N, D'] to [K]); replaces
      ``hidden``/``pool``. It is used functionally (its parameters live under ``"g"``).
    energy: ``"mse"``, ``"mse_regularized"`` (pull toward the start set) or
      ``"mse_concat_input"`` (the encoder sees ``concat(Y, X)``; pass ``x`` when calling).
    learn_start: Learn the start set (else draw it from the ``"start"`` rng).
    steps: Inner steps (override per call with ``steps=``).
    learning_rate, momentum, nesterov, clip_norm, project_start, tol, backward, implicit_at,
      cg_ridge, cg_maxiter: as in `idspn_jax.solve`.
    projection: ``None``, ``"simplex"`` (each row onto the probability simplex) or a callable.
    fspool_method: FSPool implementation (``"auto"``, ``"sort"``, ``"rank"``).
    loop_unroll: Unrolling of the inner loop (``unroll`` of `idspn_jax.solve`).
    backprop_steps: With ``backward="unroll"``, backpropagate through the last this many inner
      steps only (see `idspn_jax.solve`; None: all of them).
  """

  set_size: int
  set_dim: int
  latent: int
  hidden: int = 512
  pool: str = "fs"
  encoder: nn.Module | None = None
  energy: str = "mse"
  learn_start: bool = True
  steps: int = 20
  learning_rate: float = 1.0
  momentum: float = 0.9
  nesterov: bool = True
  clip_norm: float | None = None
  projection: str | Callable | None = None
  project_start: bool = True
  tol: float | None = None
  backward: str = "approx"
  implicit_at: str = "previous"
  cg_ridge: float = 1e-2
  cg_maxiter: int = 20
  fspool_method: str = "auto"
  loop_unroll: int | bool = 1
  backprop_steps: int | None = None

  def _make_encoder(self) -> nn.Module:
    if self.encoder is not None:
      return self.encoder.clone(parent=None)
    return SetEncoder(
      hidden=self.hidden,
      latent=self.latent,
      set_size=self.set_size,
      pool=self.pool,
      fspool_method=self.fspool_method,
      parent=None,
    )

  def _check_input_set(self, x: jax.typing.ArrayLike | None, b: int) -> jax.Array:
    """The concat-input energy's input set as an array of shape [B, N, Dx], or a clear error."""
    if x is None:
      raise ValueError("energy='mse_concat_input' needs the input set x of shape (B, N, Dx)")
    x = jnp.asarray(x)
    if x.ndim != 3 or x.shape[:2] != (b, self.set_size):
      raise ValueError(f"x must have shape ({b}, {self.set_size}, dx), got {tuple(x.shape)}")
    return x

  @nn.compact
  def __call__(
    self,
    z: jax.typing.ArrayLike,
    x: jax.typing.ArrayLike | None = None,
    *,
    y0: jax.typing.ArrayLike | None = None,
    steps: int | None = None,
  ) -> jax.Array:
    """Predicts one set per latent vector.

    Args:
      z: Latent vectors of shape [B, K].
      x: Input sets of shape [B, N, Dx], for ``energy="mse_concat_input"``.
      y0: Start sets of shape [B, N, D], replacing the learned or random start.
      steps: Inner steps for this call (e.g. more at evaluation).

    Returns:
      Predicted sets of shape [B, N, D].
    """
    z = jnp.asarray(z)
    if self.energy not in ENERGIES:
      raise ValueError(f"unknown energy {self.energy!r}; expected one of {tuple(ENERGIES)}")
    if z.ndim != 2 or z.shape[-1] != self.latent:
      raise ValueError(f"z must have shape (batch, {self.latent}), got {tuple(z.shape)}")
    b = z.shape[0]
    n, d = self.set_size, self.set_dim
    concat = self.energy == "mse_concat_input"
    if concat:
      x = self._check_input_set(x, b)
    projection = self.projection
    if isinstance(projection, str):
      if projection not in PROJECTIONS:
        raise ValueError(f"unknown projection {projection!r}; expected one of {tuple(PROJECTIONS)}")
      projection = PROJECTIONS[projection]

    encoder = self._make_encoder()
    enc_dim = d + (x.shape[-1] if concat else 0)
    g_params = self.param(
      "g", lambda key: encoder.init(key, jnp.zeros((n, enc_dim), jnp.float32))["params"]
    )
    apply_fn = lambda params, y: encoder.apply({"params": params}, y)
    energy_fn = functools.partial(ENERGIES[self.energy], apply_fn=apply_fn)

    # The start set: [N, D] shared by the batch, or [B, N, D].
    if y0 is not None:
      start = jnp.asarray(y0)
      if start.shape != (b, n, d):
        raise ValueError(f"y0 must have shape ({b}, {n}, {d}), got {tuple(start.shape)}")
      start_axis = 0
    elif self.learn_start:
      start = self.param("y0", nn.initializers.normal(stddev=0.1), (n, d), jnp.float32)
      start_axis = None
    else:
      start = 0.1 * jax.random.normal(self.make_rng("start"), (b, n, d), z.dtype)
      start_axis = 0
    start = start.astype(z.dtype)

    options = dict(
      steps=self.steps if steps is None else steps,
      learning_rate=self.learning_rate,
      momentum=self.momentum,
      nesterov=self.nesterov,
      clip_norm=self.clip_norm,
      projection=projection,
      project_start=self.project_start,
      tol=self.tol,
      backward=self.backward,
      implicit_at=self.implicit_at,
      cg_ridge=self.cg_ridge,
      cg_maxiter=self.cg_maxiter,
      unroll=self.loop_unroll,
      # A call with fewer steps (an evaluation's) backpropagates through all of them.
      backprop_steps=(None if self.backprop_steps is None
                      else min(self.backprop_steps, self.steps if steps is None else steps)),
    )

    # One batched solve (not a vmap of solves): the implicit backward then forms the
    # encoder's parameter gradient once for the batch instead of once per set.
    if self.energy == "mse":
      return solve(energy_fn, start, g_params, z, in_axes=(start_axis, None, 0), **options)
    if self.energy == "mse_regularized":
      # The start set is also the energy's reference set: it gets gradients through the pull.
      return solve(energy_fn, start, g_params, z, start,
                   in_axes=(start_axis, None, 0, start_axis), **options)
    return solve(energy_fn, start, g_params, z, x, in_axes=(start_axis, None, 0, 0), **options)

  def target_energy(
    self,
    z: jax.typing.ArrayLike,
    target: jax.typing.ArrayLike,
    x: jax.typing.ArrayLike | None = None,
    *,
    train_encoder: bool = True,
  ) -> jax.Array:
    """The energy's representation error at given sets: ``0.5 * mean_k (g(Y)_k - z_k)^2``.

    At the true sets this is DSPN's representation loss (Zhang, Hare, Prugel-Bennett 2019):
    added to the set loss with a small weight, it trains the image encoder to map each input
    to the code of its true set, and ``g`` to keep sets apart, so the inner loop has a minimum
    where the answer is. The pull toward the start set of ``"mse_regularized"`` is left out.
    Call it after the layer has been called once (its parameters exist then), e.g. on the
    same bound module inside a parent's ``@nn.compact`` method.

    Args:
      z: Latent vectors of shape [B, K].
      target: Sets of shape [B, N, D].
      x: Input sets of shape [B, N, Dx], for ``energy="mse_concat_input"``.
      train_encoder: Let gradients reach ``g``. With False only ``z`` is pulled toward the
        sets' codes: as a loss this cannot be lowered by shrinking ``g`` and ``z`` together
        toward a constant code, which an unnormalised representation loss otherwise does.

    Returns:
      Per-set energies of shape [B].
    """
    z, target = jnp.asarray(z), jnp.asarray(target)
    b = z.shape[0]
    if target.shape != (b, self.set_size, self.set_dim):
      raise ValueError(f"target must have shape ({b}, {self.set_size}, {self.set_dim}), got "
                       f"{tuple(target.shape)}")
    if self.energy == "mse_concat_input":
      x = self._check_input_set(x, b)
      target = jnp.concatenate([target, x.astype(target.dtype)], axis=-1)
    if not self.has_variable("params", "g"):
      raise ValueError("call the layer once before target_energy: its encoder has no parameters")
    g_params = self.get_variable("params", "g")
    if not train_encoder:
      g_params = jax.lax.stop_gradient(g_params)
    encoder = self._make_encoder()
    apply_fn = lambda params, y: encoder.apply({"params": params}, y)
    energy = functools.partial(mse_energy, apply_fn=apply_fn)
    return jax.vmap(energy, in_axes=(0, None, 0))(target, g_params, z.astype(target.dtype))
