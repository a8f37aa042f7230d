"""The inner optimisation `Y* = argmin_Y L(Y, *args)` and its three backward modes.

This is the only module that imports jaxopt (archived upstream): moving to
`jax.lax.custom_root` or optimistix later touches this file alone.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

with warnings.catch_warnings():
  # jaxopt 0.8.5 warns at import that it is no longer maintained; it is pinned and tested.
  warnings.simplefilter("ignore", DeprecationWarning)
  from jaxopt import implicit_diff as _implicit_diff
  from jaxopt import linear_solve as _linear_solve

BACKWARD_MODES = ("approx", "cg", "unroll")
IMPLICIT_POINTS = ("previous", "final")

EnergyFn = Callable[..., jax.Array]
Projection = Callable[[jax.Array], jax.Array]
LinearSolve = Callable[[Callable[[Any], Any], Any], Any]


class SolveState(NamedTuple):
  """State of the inner loop: the current set, the optimiser state and the step count."""

  y: jax.Array
  opt_state: Any
  step: jax.Array
  grad_norm: jax.Array


def clip_by_set_norm(max_norm: float, *, eps: float = 1e-6) -> optax.GradientTransformation:
  """Scales a set's gradient down to an L2 norm of at most ``max_norm``.

  The scale is ``min(1, max_norm / (||g|| + eps))``, the reference's rule (it differs from
  `optax.clip_by_global_norm` by the ``eps``), so clipped iterates match it to float64
  precision. Applied to one set at a time, the norm is the set's own.

  Args:
    max_norm: Largest L2 norm an update may have; must be positive.
    eps: Added to the norm before dividing.

  Returns:
    An optax gradient transformation.
  """
  if not max_norm > 0:
    raise ValueError(f"clip_norm must be positive, got {max_norm!r}")

  def update_fn(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    scale = jnp.minimum(1.0, max_norm / (norm + eps))
    return jax.tree.map(lambda u: u * scale.astype(u.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


def default_optimizer(
  *, learning_rate: float = 1.0, momentum: float = 0.9, nesterov: bool = True
) -> optax.GradientTransformation:
  """The paper's inner optimiser: SGD, lr 1.0, Nesterov momentum 0.9 (torch's convention).

  Momentum 0 gives plain gradient descent (DSPN's setting).
  """
  if momentum == 0:
    return optax.sgd(learning_rate)
  return optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov)


def _approx_solve(matvec, b):
  """Jacobian-free solve of ``A^T u = b``, taking ``A = d optimality / dY ~ -I``.

  The optimality function is the step residual ``P(Y - grad L) - Y`` (``-grad L`` without a
  projection), whose Jacobian is ``-(I - dP (I - H))``, i.e. ``-H`` when ``P`` is the identity.
  Replacing ``H^{-1}`` by the identity gives ``u = -b``.
  """
  del matvec
  return jax.tree.map(jnp.negative, b)


def _make_cg_solve(*, ridge: float, maxiter: int, projected: bool) -> LinearSolve:
  """Returns a conjugate-gradient solve of ``A^T u = b`` for the step residual's Jacobian.

  Without a projection ``A = -H`` (symmetric), so we solve ``(H + ridge I) u = -b`` by CG; the
  ridge keeps CG sane when ``H`` is indefinite. With a projection ``A`` is not symmetric and we
  solve the normal equations with CG instead.
  """
  if projected:
    return functools.partial(_linear_solve.solve_normal_cg, ridge=ridge, maxiter=maxiter)

  def solve(matvec, b):
    neg_matvec = lambda u: jax.tree.map(jnp.negative, matvec(u))
    neg_b = jax.tree.map(jnp.negative, b)
    return _linear_solve.solve_cg(neg_matvec, neg_b, ridge=ridge, maxiter=maxiter)

  return solve


def _per_set_cg(operator, b: jax.Array, *, ridge: float, maxiter: int, tol: float = 1e-5
                ) -> jax.Array:
  """Conjugate gradient on ``(M + ridge I) u = b`` for a batch of independent sets.

  ``operator`` is block-diagonal over the leading (set) axis, so each set runs its own CG: its
  own step sizes and its own stop once ``||r|| <= tol ||b||`` (what `jax.vmap` of a CG over the
  sets computes). jaxopt's CG takes inner products over the whole batch, which couples the
  sets' step sizes and changes the result at a fixed iteration count.
  """
  def dot(u, v):
    return jnp.sum(u * v, axis=tuple(range(1, u.ndim)))  # [B]

  def per_set(s):
    return s.reshape(s.shape + (1,) * (b.ndim - 1))

  apply = lambda u: operator(u) + ridge * u
  limit = (tol**2) * dot(b, b)  # [B]

  def body(carry):
    u, r, p, rr, k = carry
    active = rr > limit  # [B]
    ap = apply(p)
    pap = dot(p, ap)
    alpha = jnp.where(active & (pap != 0), rr / jnp.where(pap != 0, pap, 1), 0)
    u = u + per_set(alpha) * p
    r_new = r - per_set(alpha) * ap
    rr_new = dot(r_new, r_new)
    beta = jnp.where(active & (rr != 0), rr_new / jnp.where(rr != 0, rr, 1), 0)
    p = jnp.where(per_set(active), r_new + per_set(beta) * p, p)
    r = jnp.where(per_set(active), r_new, r)
    rr = jnp.where(active, rr_new, rr)
    return u, r, p, rr, k + 1

  cond = lambda carry: (carry[4] < maxiter) & jnp.any(carry[3] > limit)
  rr = dot(b, b)
  u0 = jnp.zeros_like(b)
  return jax.lax.while_loop(cond, body, (u0, b, b, rr, jnp.zeros((), jnp.int32)))[0]


def _make_per_set_cg_solve(*, ridge: float, maxiter: int, projected: bool) -> LinearSolve:
  """`_make_cg_solve` for a batch of sets: ``matvec`` (``u -> A^T u``) is block-diagonal."""

  def solve(matvec, b):
    if projected:  # Normal equations with M = A^T: (M^T M + ridge) u = M^T b.
      rmatvec = lambda u: jax.linear_transpose(matvec, b)(u)[0]
      return _per_set_cg(lambda u: rmatvec(matvec(u)), rmatvec(b), ridge=ridge,
                         maxiter=maxiter)
    # A^T = -H: solve (H + ridge) u = -b.
    return _per_set_cg(lambda u: -matvec(u), -b, ridge=ridge, maxiter=maxiter)

  return solve


def _batch_size(in_axes: tuple[int | None, ...], y0: jax.Array, args: tuple) -> int:
  sizes = {
    jnp.shape(leaf)[0] if jnp.ndim(leaf) else None
    for axis, arg in zip(in_axes, (y0, *args)) if axis == 0
    for leaf in jax.tree.leaves(arg)
  }
  if None in sizes or len(sizes) != 1:
    raise ValueError(
      "every array of a batched argument (in_axes 0) needs the same leading batch size, got "
      f"sizes {sorted(sizes, key=str)}"
    )
  return sizes.pop()


def _check_in_axes(in_axes, y0: jax.Array, args: tuple) -> tuple[int | None, ...] | None:
  """Normalises ``in_axes`` to one entry (0 or None) per argument ``(y0, *args)``."""
  if in_axes is None:
    return None
  if isinstance(in_axes, int) and not isinstance(in_axes, bool):
    in_axes = (in_axes,) * (1 + len(args))
  in_axes = tuple(in_axes) if isinstance(in_axes, (tuple, list)) else in_axes
  if (not isinstance(in_axes, tuple) or len(in_axes) != 1 + len(args)
      or any(a not in (0, None) or isinstance(a, bool) for a in in_axes)):
    raise ValueError(
      f"in_axes must be 0 or a sequence of 0/None, one per argument (y0, *args) = "
      f"{1 + len(args)} arguments; got {in_axes!r}"
    )
  if all(a is None for a in in_axes):
    raise ValueError("in_axes batches nothing (every entry is None); drop it to solve one set")
  _batch_size(in_axes, y0, args)
  return in_axes


def _check_energy(energy_fn: EnergyFn, y0: jax.Array, args: tuple,
                  in_axes: tuple[int | None, ...] | None = None) -> None:
  """Traces ``energy_fn`` once on abstract values to fail early with a clear message."""
  def one_set(y, *args):
    if in_axes is not None:  # The first set of the batch.
      first = lambda arg, axis: jax.tree.map(lambda x: x[0], arg) if axis == 0 else arg
      y = first(y, in_axes[0])
      args = tuple(first(arg, axis) for arg, axis in zip(args, in_axes[1:]))
    return energy_fn(y, *args)

  try:
    out = jax.eval_shape(one_set, y0, *args)
  except Exception as err:  # Re-raised with the context a user needs.
    raise ValueError(
      f"energy_fn failed on a set y of shape {tuple(y0.shape)} and dtype {y0.dtype} "
      f"(does the set's shape match the encoder's?): {type(err).__name__}: {err}"
    ) from err
  if not isinstance(out, jax.ShapeDtypeStruct) or out.shape != ():
    shape = getattr(out, "shape", type(out).__name__)
    raise ValueError(
      f"energy_fn must return a scalar for one set of shape {tuple(y0.shape)}, got {shape}; "
      "batch with in_axes (or jax.vmap over solve), not inside the energy"
    )
  if not jnp.issubdtype(out.dtype, jnp.floating):
    raise ValueError(f"energy_fn must return a floating-point scalar, got dtype {out.dtype}")


def solve(
  energy_fn: EnergyFn,
  y0: jax.typing.ArrayLike,
  *args: Any,
  steps: int = 20,
  optimizer: optax.GradientTransformation | None = None,
  learning_rate: float = 1.0,
  momentum: float = 0.9,
  nesterov: bool = True,
  clip_norm: float | None = None,
  projection: Projection | None = None,
  project_start: bool = True,
  tol: float | None = None,
  backward: str = "approx",
  implicit_at: str = "previous",
  cg_ridge: float = 1e-2,
  cg_maxiter: int = 20,
  linear_solve: LinearSolve | None = None,
  unroll: int | bool = 1,
  backprop_steps: int | None = None,
  in_axes: int | tuple[int | None, ...] | None = None,
) -> jax.Array:
  """Minimises ``energy_fn(y, *args)`` over one set ``y`` (or a batch) by gradient descent.

  The forward pass runs ``steps`` iterations of an optax optimiser from ``y0`` (default: SGD
  with lr 1.0 and Nesterov momentum 0.9, as in the paper), clipping the set's gradient to
  ``clip_norm`` and applying ``projection`` after every step if given.

  The backward pass treats the result ``y*`` as a root of the optimality condition
  ``F(y*, args) = P(y* - grad_y L(y*, args)) - y* = 0`` (``-grad_y L = 0`` without a
  projection) and differentiates it implicitly: ``dy*/dargs = -(dF/dy)^{-1} dF/dargs``.

  * ``backward="approx"`` (default, the paper's method) replaces ``-(dF/dy)^{-1}`` by the
    identity (Jacobian-free), so a cotangent ``v`` gives ``args_bar = (dF/dargs)^T v``. It costs
    one second-order vector product and keeps no per-step activations.
  * ``backward="cg"`` solves the linear system with ``cg_maxiter`` conjugate-gradient steps on
    ``H + cg_ridge * I`` (``H`` may be indefinite away from a minimum: the ridge keeps CG sane);
    normal-equation CG with a projection. Memory does not grow with ``steps`` either.
  * ``backward="unroll"`` backpropagates through every step (DSPN); memory grows with ``steps``.
    With ``backprop_steps=K`` it backpropagates through the last K steps only (truncated
    backpropagation): the first ``steps - K`` run without a tape, so the backward pass and its
    memory cost K steps. For plain gradient descent from a converged loop the gradient is the
    first K terms of the Neumann series of the implicit one (the Jacobian-free approximation is
    the first term alone).

  Where the implicit gradient is taken (``implicit_at``, both implicit modes): by default
  (``"previous"``, as the reference implementation) at the iterate ``Y_{T-1}`` before the last
  step. The forward pass is unchanged (``steps`` steps; the last one continues from the carried
  optimiser state, with its clipping and projection), but the last step's move is held constant
  in the backward pass: the output's cotangent goes unchanged to ``Y_{T-1}`` and through the
  implicit system there. This matters for training: when the energy sharpens past the inner
  optimiser's stability bound the last step overshoots, the loss gradient at ``Y_T`` then
  points against the step, and the gradient at ``Y_{T-1}`` turns the outer update against
  further sharpening. At ``"final"`` (the output ``Y_T``) nothing holds the sharpening back and
  training can collapse (the inner loop diverges); it is kept for ablations. With ``tol`` the
  loop stops once every set's gradient norm is under ``tol`` or after ``steps - 1`` steps, then
  takes its last step (``"final"``: after ``steps`` steps, with no step after the stop).

  Gradients flow to every array leaf of ``args``; ``y0`` is only the starting point (it gets a
  gradient under ``"unroll"`` alone, and not with ``backprop_steps``; pass it in ``args`` too if
  the energy uses it).

  With ``tol``, the loop stops once the gradient norm falls under ``tol`` (a ``while_loop``).
  Only the implicit modes allow this: reverse-mode autodiff cannot run through a
  ``while_loop``, and the implicit gradient never needs to.

  Batches: pass ``in_axes`` (as `jax.vmap`'s, for ``(y0, *args)``: 0 for an argument batched
  along its leading axis, None for one shared by every set). The result equals
  ``jax.vmap(solve, in_axes)`` -- the energy, the optimiser state, the clipping, the projection
  and the stopping test stay per set -- but the batch is one implicit system, so the gradient of
  a shared argument (the encoder's parameters) is computed once for the batch. Under
  ``jax.vmap``, JAX transposes the implicit backward per set and sums per-set parameter
  gradients (a [B, H, K] array for each weight matrix): several times slower for a training
  step. Everything differentiable must be passed in ``args``: quantities that ``energy_fn``
  closes over get no gradient under the implicit modes.

  For debugging non-finite values, wrap the call in ``jax.experimental.checkify.checkify`` with
  ``errors=checkify.float_checks``: it reports the first operation that produced a NaN/inf.
  Alternatively set ``jax.config.update("jax_debug_nans", True)``.

  Args:
    energy_fn: ``energy_fn(y, *args) -> scalar`` for ONE set ``y`` of shape [N, D].
    y0: Starting set of shape [N, D].
    *args: Pytrees the energy depends on (encoder parameters, target ``z`` of shape [K], ...).
    steps: Number of optimiser steps (the most, with ``tol``).
    optimizer: Any optax optimiser; replaces ``learning_rate``/``momentum``/``nesterov``.
    learning_rate: Inner learning rate of the default SGD.
    momentum: Momentum of the default SGD (0 gives plain gradient descent).
    nesterov: Nesterov momentum for the default SGD.
    clip_norm: If set, each set's gradient is scaled to an L2 norm of at most this.
    projection: ``P(y) -> y`` applied after each step (e.g. rows onto the simplex).
    project_start: Apply ``projection`` to ``y0`` before the first step.
    tol: Stop early once the (unclipped) gradient norm is below this.
    backward: ``"approx"``, ``"cg"`` or ``"unroll"``.
    implicit_at: ``"previous"`` (``Y_{T-1}``, the reference's point) or ``"final"`` (``Y_T``):
      where the implicit modes take their gradient (see above); must stay ``"previous"`` with
      ``"unroll"``.
    cg_ridge: Ridge added to the Hessian in ``"cg"`` mode.
    cg_maxiter: Conjugate-gradient iterations in ``"cg"`` mode.
    linear_solve: Custom ``solve(matvec, b)`` for the implicit system ``A^T u = b``, with
      ``A = dF/dy``; overrides the one ``backward`` chooses.
    unroll: Loop unrolling of the forward ``fori_loop`` (``True``: fully unrolled, which
      also lets XLA's cost analysis count every step); ignored with ``tol``.
    backprop_steps: With ``backward="unroll"``, backpropagate through the last this many
      steps only (1 to ``steps``; None: all of them).
    in_axes: Solve a batch of independent sets (see above): 0 (everything batched) or one
      entry, 0 or None, per argument ``(y0, *args)``. A custom ``linear_solve`` then sees the
      whole batch (its operator is block-diagonal over the sets).

  Returns:
    The final set ``y`` of shape [N, D] ([B, N, D] with ``in_axes``).

  References:
    Zhang, Zhang, Lacoste-Julien, Burghouts, Snoek. Multiset-Equivariant Set Prediction with
    Approximate Implicit Differentiation. ICLR 2022.
    Fung et al. JFB: Jacobian-Free Backpropagation for Implicit Networks. AAAI 2022.
  """
  y0 = jnp.asarray(y0)
  in_axes = _check_in_axes(in_axes, y0, args)
  set_ndim = y0.ndim - (1 if in_axes is not None and in_axes[0] == 0 else 0)
  if set_ndim != 2:
    expected = "(batch, n, d)" if in_axes is not None and in_axes[0] == 0 else "(n, d)"
    raise ValueError(
      f"y0 must have shape {expected}, got shape {tuple(y0.shape)}"
      + ("; for a batch of sets pass in_axes" if in_axes is None else "")
    )
  if not jnp.issubdtype(y0.dtype, jnp.floating):
    raise ValueError(f"y0 must be floating point, got dtype {y0.dtype}")
  if backward not in BACKWARD_MODES:
    raise ValueError(f"unknown backward={backward!r}; expected one of {BACKWARD_MODES}")
  if implicit_at not in IMPLICIT_POINTS:
    raise ValueError(f"unknown implicit_at={implicit_at!r}; expected one of {IMPLICIT_POINTS}")
  if implicit_at != "previous" and backward == "unroll":
    raise ValueError(f"implicit_at={implicit_at!r} places the implicit gradient; "
                     "backward='unroll' has none (use 'approx' or 'cg')")
  if not (isinstance(steps, int) and steps >= 1):
    raise ValueError(f"steps must be a positive int, got {steps!r}")
  if tol is not None:
    if not tol > 0:
      raise ValueError(f"tol must be positive, got {tol!r}")
    if backward == "unroll":
      raise ValueError(
        "tol (early stopping) needs a while_loop, which reverse-mode autodiff cannot unroll: "
        "use backward='approx' or 'cg', or drop tol"
      )
  if backprop_steps is not None:
    if backward != "unroll":
      raise ValueError(f"backprop_steps={backprop_steps!r} truncates backward='unroll' only, "
                       f"got backward={backward!r}")
    if not (isinstance(backprop_steps, int) and 1 <= backprop_steps <= steps):
      raise ValueError(f"backprop_steps must be an int from 1 to steps={steps}, got "
                       f"{backprop_steps!r}")
    if backprop_steps == steps:
      backprop_steps = None
  if cg_maxiter < 1 or not cg_ridge >= 0:
    raise ValueError(f"cg_maxiter must be >= 1 and cg_ridge >= 0, got {cg_maxiter}, {cg_ridge}")
  _check_energy(energy_fn, y0, args, in_axes)

  spec = _Spec(
    steps=steps, optimizer=optimizer, learning_rate=learning_rate, momentum=momentum,
    nesterov=nesterov, clip_norm=clip_norm, projection=projection, project_start=project_start,
    tol=tol, backward=backward, implicit_at=implicit_at, cg_ridge=cg_ridge, cg_maxiter=cg_maxiter,
    linear_solve=linear_solve, unroll=unroll, backprop_steps=backprop_steps, in_axes=in_axes,
  )
  return _solve(y0, args, energy_fn=energy_fn, spec=spec)


class _Spec(NamedTuple):
  """Every static option of `solve` (hashable, so compiled solves are cached by it)."""

  steps: int
  optimizer: optax.GradientTransformation | None
  learning_rate: float
  momentum: float
  nesterov: bool
  clip_norm: float | None
  projection: Projection | None
  project_start: bool
  tol: float | None
  backward: str
  implicit_at: str
  cg_ridge: float
  cg_maxiter: int
  linear_solve: LinearSolve | None
  unroll: int | bool
  backprop_steps: int | None
  in_axes: tuple[int | None, ...] | None


# Compiled as one unit, so that an eager call (outside any jit) costs one compilation, not one
# per operation; inside a user's jit it simply inlines.
@functools.partial(jax.jit, static_argnames=("energy_fn", "spec"))
def _solve(y0: jax.Array, args: tuple, *, energy_fn: EnergyFn, spec: _Spec) -> jax.Array:
  optimizer = spec.optimizer
  if optimizer is None:
    optimizer = default_optimizer(
      learning_rate=spec.learning_rate, momentum=spec.momentum, nesterov=spec.nesterov
    )
  if spec.clip_norm is not None:
    optimizer = optax.chain(clip_by_set_norm(spec.clip_norm), optimizer)
  projection = spec.projection
  project = projection if projection is not None else (lambda y: y)
  track_norm = spec.tol is not None
  opt_init, opt_update, set_norm = optimizer.init, optimizer.update, optax.tree.norm
  batched = spec.in_axes is not None
  if batched:
    # One set's energy, summed over the batch: each set's gradient is still its own, and the
    # derivatives of shared arguments stay single batch-wide products. Everything else (the
    # optimiser state, clipping, projection, stopping test) is vmapped: per set.
    per_set_energy = jax.vmap(energy_fn, in_axes=(0, *spec.in_axes[1:]))
    grad_fn = jax.grad(lambda y, *args: jnp.sum(per_set_energy(y, *args)))
    opt_init, opt_update = jax.vmap(opt_init), jax.vmap(opt_update)
    project = jax.vmap(project)
    set_norm = jax.vmap(set_norm)
    if spec.in_axes[0] is None:  # One start shared by every set.
      batch = _batch_size(spec.in_axes, y0, args)
      y0 = jnp.broadcast_to(y0, (batch, *y0.shape))
  else:
    grad_fn = jax.grad(energy_fn)

  def step_fn(state: SolveState, args: tuple, mask: bool = True) -> SolveState:
    grad = grad_fn(state.y, *args)
    updates, opt_state = opt_update(grad, state.opt_state, state.y)
    y = project(optax.apply_updates(state.y, updates))
    grad_norm = set_norm(grad) if track_norm else state.grad_norm
    new = SolveState(y, opt_state, state.step + 1, grad_norm)
    if track_norm and batched and mask:
      # As under vmap: a set that has stopped keeps its state while the others go on.
      active = state.grad_norm >= spec.tol  # [B]
      keep = lambda a, b: jnp.where(active.reshape(active.shape + (1,) * (a.ndim - 1)), a, b)
      y, opt_state, grad_norm = jax.tree.map(
        keep, (y, opt_state, grad_norm), (state.y, state.opt_state, state.grad_norm))
      new = SolveState(y, opt_state, new.step, grad_norm)
    return new

  def start_state(y_init):
    y_start = project(y_init) if spec.project_start else y_init
    norm_shape = y_start.shape[:1] if batched else ()
    return SolveState(
      y_start, opt_init(y_start), jnp.zeros((), jnp.int32),
      jnp.full(norm_shape, jnp.inf, y_start.dtype),
    )

  def run(state: SolveState, n_steps: int, args: tuple) -> SolveState:
    """``n_steps`` steps from ``state`` (fewer with ``tol``, once every set has stopped)."""
    if spec.tol is not None:
      limit = state.step + n_steps
      keep_going = lambda s: (s.step < limit) & jnp.any(s.grad_norm >= spec.tol)
      return jax.lax.while_loop(keep_going, lambda s: step_fn(s, args), state)
    frozen_steps = 0 if spec.backprop_steps is None else n_steps - spec.backprop_steps
    if frozen_steps:
      # Truncated backpropagation: the first steps see constant arguments (no tangents, so
      # no tape), and the last backprop_steps start from their result as from a constant.
      frozen = jax.lax.stop_gradient(args)
      state = jax.lax.stop_gradient(jax.lax.fori_loop(
        0, frozen_steps, lambda _, s: step_fn(s, frozen), state, unroll=spec.unroll))
    return jax.lax.fori_loop(
      0, n_steps - frozen_steps, lambda _, s: step_fn(s, args), state, unroll=spec.unroll)

  def solver_fun(y_init, *args):
    return run(start_state(y_init), spec.steps, args).y

  def solver_fun_before_last(y_init, *args):
    # Every step but the last; the state is returned as auxiliary output (no gradient), so
    # the last step can continue from it with its momentum.
    state = run(start_state(y_init), spec.steps - 1, args)
    return state.y, state

  if spec.backward == "unroll":
    return solver_fun(y0, *args)

  def optimality_fun(y, *args):
    # The invariant is optimality_fun(y*, *args) == 0: a step of size 1 moves nothing.
    return project(y - grad_fn(y, *args)) - y

  linear_solve = spec.linear_solve
  if linear_solve is None:
    if spec.backward == "approx":
      linear_solve = _approx_solve
    else:
      make = _make_per_set_cg_solve if batched else _make_cg_solve
      linear_solve = make(
        ridge=spec.cg_ridge, maxiter=spec.cg_maxiter, projected=projection is not None
      )
  y0 = jax.lax.stop_gradient(y0)  # Only a starting point: the custom VJP gives it None.
  if spec.implicit_at == "final":
    return _implicit_diff.custom_root(optimality_fun, solve=linear_solve)(solver_fun)(y0, *args)
  # implicit_at="previous", the reference's point: the root is the iterate Y_{T-1} before the
  # last step; the last step runs from the carried state, and its move is held constant in the
  # backward pass (the output's cotangent reaches Y_{T-1} unchanged).
  y_prev, state = _implicit_diff.custom_root(
    optimality_fun, has_aux=True, solve=linear_solve)(solver_fun_before_last)(y0, *args)
  last = step_fn(jax.lax.stop_gradient(state), jax.lax.stop_gradient(args), mask=False)
  return last.y + (y_prev - jax.lax.stop_gradient(y_prev))
