"""`idspn_jax.solve`: forward loop, the three backward modes, composition, bad input."""

import functools

import jax
import jax.numpy as jnp
import jax.test_util
import numpy as np
import optax
import pytest
from jax.experimental import checkify

import idspn_jax

N, D = 3, 2


def _quadratic_problem(seed=0, identity=False):
  """L(y) = 0.5 vec(y)^T Q vec(y) - theta^T vec(y); y* = Q^-1 theta, dy*/dtheta = Q^-1."""
  rng = np.random.default_rng(seed)
  if identity:
    q = np.eye(N * D)
  else:
    u, _ = np.linalg.qr(rng.normal(size=(N * D, N * D)))
    q = u @ np.diag(np.linspace(0.5, 1.5, N * D)) @ u.T
  theta = rng.normal(size=(N * D,))
  w = rng.normal(size=(N, D))
  return jnp.asarray(q), jnp.asarray(theta), jnp.asarray(w)


def quadratic_energy(y, q, theta):
  v = y.reshape(-1)  # [N*D]
  return 0.5 * v @ q @ v - theta @ v


CONVERGED = dict(steps=200, learning_rate=0.5, momentum=0.5)


@functools.partial(jax.jit, static_argnames=("backward",))
def _objective_grad(q, theta, w, backward):
  def objective(theta):
    y = idspn_jax.solve(
      quadratic_energy, jnp.zeros((N, D)), q, theta, backward=backward, cg_ridge=0.0,
      cg_maxiter=50, **CONVERGED,
    )
    return jnp.sum(w * y)

  return jax.value_and_grad(objective)(theta)


def test_forward_converges_to_the_minimiser():
  q, theta, w = _quadratic_problem()
  value, _ = _objective_grad(q, theta, w, "approx")
  y_star = jnp.linalg.solve(q, theta).reshape(N, D)
  np.testing.assert_allclose(value, jnp.sum(w * y_star), rtol=1e-8)


def test_cg_matches_the_closed_form_implicit_gradient():
  q, theta, w = _quadratic_problem()
  _, grad = _objective_grad(q, theta, w, "cg")
  expected = jnp.linalg.solve(q, w.reshape(-1))  # Q^-1 w (Q symmetric)
  np.testing.assert_allclose(grad, expected, atol=1e-4)


def test_approx_is_exact_when_the_hessian_is_the_identity():
  q, theta, w = _quadratic_problem(identity=True)
  _, grad = _objective_grad(q, theta, w, "approx")
  np.testing.assert_allclose(grad, w.reshape(-1), atol=1e-10)


def test_approx_differs_from_exact_when_the_hessian_is_not_the_identity():
  q, theta, w = _quadratic_problem()
  _, approx = _objective_grad(q, theta, w, "approx")
  _, exact = _objective_grad(q, theta, w, "cg")
  assert not np.allclose(approx, exact, atol=1e-3)
  # The Jacobian-free gradient is still a descent direction here (Q is positive definite).
  assert float(approx @ exact) > 0


def _coupled_energy(y, theta):
  """A nonlinear energy whose mixed second derivative depends on y (so the point matters)."""
  return 0.5 * jnp.sum((theta * y - 1.0) ** 2) + 0.05 * jnp.sum(y**4)


UNCONVERGED = dict(steps=4, learning_rate=0.3, momentum=0.9)


def _iterates(theta, steps, **options):
  """Y_0 ... Y_steps of Nesterov SGD (optax's, as the default) on `_coupled_energy`."""
  opt = optax.sgd(options["learning_rate"], momentum=options["momentum"], nesterov=True)
  y = jnp.zeros((N, D))
  state, ys = opt.init(y), [y]
  for _ in range(steps):
    updates, state = opt.update(jax.grad(_coupled_energy)(y, theta), state)
    y = y + updates
    ys.append(y)
  return ys


def _implicit_grad_by_hand(y, theta, v, backward):
  """The implicit gradient of <v, y*(theta)> taken at the point y, written out."""
  grad_y = lambda theta: jax.grad(_coupled_energy)(y, theta)  # d/dtheta of grad_y L at y
  if backward == "approx":  # args_bar = (dF/dtheta)^T v with F = -grad_y L
    return -jax.vjp(grad_y, theta)[1](v)[0]
  hessian = jax.hessian(_coupled_energy)(y, theta).reshape(N * D, N * D)
  u = jnp.linalg.solve(hessian, v.reshape(-1)).reshape(N, D)  # H^-1 v
  return -jax.vjp(grad_y, theta)[1](u)[0]


@pytest.mark.parametrize("backward", ["approx", "cg"])
def test_implicit_gradient_is_taken_before_the_last_step(backward):
  """The default takes the implicit gradient at Y_{T-1}, as the reference; "final" at Y_T."""
  theta = jnp.linspace(0.8, 1.6, N * D).reshape(N, D)
  v = jnp.linspace(-1.0, 1.0, N * D).reshape(N, D)
  ys = _iterates(theta, **UNCONVERGED)
  options = dict(backward=backward, cg_ridge=0.0, cg_maxiter=100, **UNCONVERGED)

  def run(theta, at):
    return idspn_jax.solve(_coupled_energy, jnp.zeros((N, D)), theta, implicit_at=at, **options)

  grads = {}
  for at in ("previous", "final"):
    out, vjp = jax.vjp(lambda t: run(t, at), theta)
    np.testing.assert_allclose(out, ys[-1], rtol=1e-12)  # the same forward pass
    grads[at] = vjp(v)[0]
  rtol = 1e-9 if backward == "approx" else 1e-4  # CG stops at a relative residual of 1e-5
  np.testing.assert_allclose(
    grads["previous"], _implicit_grad_by_hand(ys[-2], theta, v, backward), rtol=rtol)
  np.testing.assert_allclose(
    grads["final"], _implicit_grad_by_hand(ys[-1], theta, v, backward), rtol=rtol)
  assert not np.allclose(grads["previous"], grads["final"], rtol=1e-2)  # unconverged


def test_one_step_takes_the_implicit_gradient_at_the_start():
  theta = jnp.linspace(0.8, 1.6, N * D).reshape(N, D)
  v = jnp.ones((N, D))
  start = jnp.full((N, D), 0.3)
  grad = jax.grad(lambda t: jnp.sum(v * idspn_jax.solve(_coupled_energy, start, t, steps=1)))(
    theta)
  expected = -jax.vjp(lambda t: jax.grad(_coupled_energy)(start, t), theta)[1](v)[0]
  np.testing.assert_allclose(grad, expected, rtol=1e-12)


@pytest.mark.parametrize(
  "options",
  [dict(clip_norm=0.05), dict(projection=idspn_jax.project_rows_to_simplex),
   dict(optimizer=optax.adam(0.1))],
  ids=["clip", "simplex", "adam"],
)
def test_the_last_step_keeps_its_clipping_projection_and_optimiser_state(options):
  """Only the backward pass changes with implicit_at: the forward pass is the same steps."""
  theta = jnp.linspace(0.8, 1.6, N * D).reshape(N, D)
  run = lambda at, steps=6: idspn_jax.solve(
    _coupled_energy, jnp.full((N, D), 0.2), theta, steps=steps, implicit_at=at, **options)
  unrolled = idspn_jax.solve(_coupled_energy, jnp.full((N, D), 0.2), theta, steps=6,
                             backward="unroll", **options)
  np.testing.assert_array_equal(run("previous"), run("final"))
  np.testing.assert_allclose(run("previous"), unrolled, rtol=1e-12)
  assert not np.allclose(run("previous", steps=5), unrolled)


def test_unroll_equals_autodiff_of_a_python_loop():
  q, theta, w = _quadratic_problem()
  y0 = jnp.full((N, D), 0.3)
  steps, lr, mom = 7, 0.4, 0.9

  def python_loop(theta):
    y, buf = y0, jnp.zeros_like(y0)
    for _ in range(steps):
      g = jax.grad(quadratic_energy)(y, q, theta)
      buf = mom * buf + g
      y = y - lr * (g + mom * buf)  # torch's Nesterov SGD
    return jnp.sum(w * y)

  def ours(theta):
    y = idspn_jax.solve(
      quadratic_energy, y0, q, theta, steps=steps, learning_rate=lr, momentum=mom,
      backward="unroll",
    )
    return jnp.sum(w * y)

  np.testing.assert_allclose(ours(theta), python_loop(theta), rtol=1e-12)
  np.testing.assert_allclose(jax.grad(ours)(theta), jax.grad(python_loop)(theta), rtol=1e-10)


def test_truncated_unroll_equals_autodiff_of_a_python_loop_with_a_frozen_start():
  q, theta, w = _quadratic_problem()
  y0 = jnp.full((N, D), 0.3)
  steps, kept, lr, mom = 7, 3, 0.4, 0.9

  def python_loop(theta):
    y, buf = y0, jnp.zeros_like(y0)
    for i in range(steps):
      t = jax.lax.stop_gradient(theta) if i < steps - kept else theta
      g = jax.grad(quadratic_energy)(y, q, t)
      buf = mom * buf + g
      y = y - lr * (g + mom * buf)
    return jnp.sum(w * y)

  def ours(theta, backprop_steps):
    y = idspn_jax.solve(
      quadratic_energy, y0, q, theta, steps=steps, learning_rate=lr, momentum=mom,
      backward="unroll", backprop_steps=backprop_steps,
    )
    return jnp.sum(w * y)

  np.testing.assert_allclose(ours(theta, kept), python_loop(theta), rtol=1e-12)
  np.testing.assert_allclose(jax.grad(ours)(theta, kept), jax.grad(python_loop)(theta),
                             rtol=1e-10)
  # All the steps: the full unrolled gradient; fewer: a different one.
  full = jax.grad(ours)(theta, None)
  np.testing.assert_allclose(jax.grad(ours)(theta, steps), full, rtol=1e-12)
  assert not np.allclose(jax.grad(ours)(theta, kept), full, atol=1e-3)


def test_truncated_unroll_approaches_the_implicit_gradient_with_more_steps():
  # From a converged loop, K unrolled steps of gradient descent with lr a give the first K
  # terms of the Neumann series a * sum_k (I - a Q)^k of Q^-1: the error shrinks with K.
  q, theta, w = _quadratic_problem()
  exact = jnp.linalg.solve(q, w.reshape(-1))

  def grad(kept):
    return jax.grad(lambda t: jnp.sum(w * idspn_jax.solve(
      quadratic_energy, jnp.zeros((N, D)), q, t, steps=150, learning_rate=0.5, momentum=0.0,
      backward="unroll", backprop_steps=kept)))(theta)

  errors = [float(jnp.linalg.norm(grad(k) - exact)) for k in (1, 5, 40)]
  assert errors[0] > errors[1] > errors[2]
  assert errors[2] < 1e-4 * errors[0]
  np.testing.assert_allclose(grad(1), 0.5 * w.reshape(-1), rtol=1e-8)  # One step: a * w.


def test_check_grads_unroll_and_converged_cg():
  q, theta, _ = _quadratic_problem()
  unrolled = lambda theta: idspn_jax.solve(
    quadratic_energy, jnp.zeros((N, D)), q, theta, steps=5, backward="unroll"
  )
  jax.test_util.check_grads(unrolled, (theta,), order=1, modes=["rev"], eps=1e-3)
  implicit = lambda theta: idspn_jax.solve(
    quadratic_energy, jnp.zeros((N, D)), q, theta, backward="cg", cg_ridge=0.0, cg_maxiter=50,
    **CONVERGED,
  )
  jax.test_util.check_grads(implicit, (theta,), order=1, modes=["rev"], eps=1e-3)


def test_gradients_reach_every_leaf_of_args():
  q, theta, w = _quadratic_problem()
  args = {"q": q, "theta": theta}
  energy = lambda y, a: quadratic_energy(y, a["q"], a["theta"])
  for backward in idspn_jax.BACKWARD_MODES:
    grads = jax.grad(
      lambda a: jnp.sum(w * idspn_jax.solve(energy, jnp.zeros((N, D)), a, steps=20,
                                            backward=backward))
    )(args)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads)), backward


def test_vmap_jit_grad_compose():
  q, _, w = _quadratic_problem()
  thetas = jax.random.normal(jax.random.key(0), (4, N * D), jnp.float64)
  y0s = 0.1 * jax.random.normal(jax.random.key(1), (4, N, D), jnp.float64)

  def batch_loss(thetas):
    ys = jax.vmap(
      lambda y0, t: idspn_jax.solve(quadratic_energy, y0, q, t, steps=10, clip_norm=1.0)
    )(y0s, thetas)  # [4, N, D]
    return jnp.sum(w[None] * ys)

  eager_value, eager_grad = jax.value_and_grad(batch_loss)(thetas)
  jit_value, jit_grad = jax.jit(jax.value_and_grad(batch_loss))(thetas)
  np.testing.assert_allclose(jit_value, eager_value, rtol=1e-12)
  np.testing.assert_allclose(jit_grad, eager_grad, rtol=1e-10)
  # Per-set results do not depend on the rest of the batch (clipping is per set).
  single = idspn_jax.solve(quadratic_energy, y0s[2], q, thetas[2], steps=10, clip_norm=1.0)
  ys = jax.vmap(
    lambda y0, t: idspn_jax.solve(quadratic_energy, y0, q, t, steps=10, clip_norm=1.0)
  )(y0s, thetas)
  np.testing.assert_allclose(ys[2], single, rtol=1e-12)


def _encoder_problem(batch=4, d=D):
  """A nonlinear energy (FS encoder) with shared parameters and per-set targets and starts."""
  enc = idspn_jax.FSEncoder(8, 4, N)
  params = enc.init(jax.random.key(0), jnp.zeros((N, d)))["params"]
  params = jax.tree.map(lambda x: x.astype(jnp.float64), params)
  energy = functools.partial(
    idspn_jax.mse_energy, apply_fn=lambda p, y: enc.apply({"params": p}, y)
  )
  z = jax.random.normal(jax.random.key(1), (batch, 4), jnp.float64)
  y0 = 0.1 * jax.random.normal(jax.random.key(2), (batch, N, d), jnp.float64)
  return energy, params, z, y0


@functools.partial(jax.jit, static_argnames=("batched", "options"))
def _batched_or_vmapped(params, z, y0, w, *, batched, options):
  """Loss of a batch solved with in_axes or with jax.vmap, and its gradient."""
  options = dict(options)
  energy, *_ = _encoder_problem(d=y0.shape[-1])
  shared_start = options.pop("shared_start", False)
  start, axis = (y0[0], None) if shared_start else (y0, 0)

  def loss(params, z):
    if batched:
      ys = idspn_jax.solve(energy, start, params, z, in_axes=(axis, None, 0), **options)
    else:
      ys = jax.vmap(lambda s, z_i: idspn_jax.solve(energy, s, params, z_i, **options),
                    in_axes=(axis, 0))(start, z)
    return jnp.sum(w * ys), ys

  (value, ys), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, z)
  return value, ys, grads


@pytest.mark.parametrize(
  "options",
  [
    dict(backward="approx", clip_norm=0.05),
    dict(backward="cg", cg_maxiter=3),  # few CG steps: the per-set step sizes matter
    dict(backward="unroll", shared_start=True),
    dict(backward="approx", tol=0.02, steps=50),  # sets stop at different steps
    dict(backward="cg", projection=idspn_jax.project_rows_to_simplex, cg_maxiter=3),
    dict(backward="approx", implicit_at="final", clip_norm=0.05),
    dict(backward="cg", implicit_at="final", tol=0.02, steps=50, cg_maxiter=3),
  ],
  ids=["approx-clip", "cg", "unroll-shared-start", "tol", "cg-simplex", "approx-final",
       "cg-final-tol"],
)
def test_in_axes_equals_vmap(options):
  """A batched solve is vmap's result, values and gradients, with every option per set."""
  _, params, z, y0 = _encoder_problem()
  w = jax.random.normal(jax.random.key(3), y0.shape, jnp.float64)
  frozen = tuple(sorted({"steps": 6, **options}.items()))
  got = _batched_or_vmapped(params, z, y0, w, batched=True, options=frozen)
  want = _batched_or_vmapped(params, z, y0, w, batched=False, options=frozen)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12), got, want)
  assert float(jnp.max(jnp.abs(got[2][1]))) > 0  # the gradient is not trivially zero


def test_in_axes_tol_stops_each_set_on_its_own():
  q, theta, _ = _quadratic_problem()
  thetas = jnp.stack([100.0 * theta, theta])  # the first set starts much further away
  run = lambda steps, tol=None: idspn_jax.solve(
    quadratic_energy, jnp.zeros((N, D)), q, thetas, in_axes=(None, None, 0), steps=steps,
    tol=tol, learning_rate=0.5, momentum=0.5,
  )
  early = run(10_000, tol=1e-6)
  np.testing.assert_allclose(early.reshape(2, -1), jnp.linalg.solve(q, thetas.T).T, atol=1e-5)
  # Each set stopped after its own number of steps (its state then stayed as it was).
  fixed = [run(k) for k in range(20, 45)]
  stopped = [next(k for k, y_k in enumerate(fixed, 20) if bool(jnp.all(early[i] == y_k[i])))
             for i in range(2)]
  assert stopped[0] > stopped[1]


@pytest.mark.parametrize(
  "in_axes, message",
  [
    ((0, None), "one per argument"),
    ((1, None, 0), "0/None"),
    ((None, None, None), "batches nothing"),
    ((0, None, 0, 0), "one per argument"),
  ],
)
def test_in_axes_bad_input_is_a_clear_error(in_axes, message):
  energy, params, z, y0 = _encoder_problem()
  with pytest.raises(ValueError, match=message):
    idspn_jax.solve(energy, y0, params, z, in_axes=in_axes)


def test_in_axes_mismatched_batch_sizes_are_a_clear_error():
  energy, params, z, y0 = _encoder_problem()
  with pytest.raises(ValueError, match="same leading batch size"):
    idspn_jax.solve(energy, y0, params, z[:3], in_axes=(0, None, 0))
  with pytest.raises(ValueError, match=r"shape \(batch, n, d\)"):
    idspn_jax.solve(energy, y0[:, 0], params, z, in_axes=(0, None, 0))


def test_clipping_bounds_each_step():
  energy = lambda y, s: s * jnp.sum(y)  # constant gradient of norm s * sqrt(N * D)
  y = idspn_jax.solve(energy, jnp.zeros((N, D)), 100.0, steps=1, momentum=0.0, clip_norm=2.0)
  np.testing.assert_allclose(jnp.linalg.norm(y), 2.0 * 100 * np.sqrt(N * D) / (
    100 * np.sqrt(N * D) + 1e-6), rtol=1e-12)


def test_any_optax_optimizer_can_replace_the_default():
  q, theta, _ = _quadratic_problem()
  y = idspn_jax.solve(
    quadratic_energy, jnp.zeros((N, D)), q, theta, steps=300, optimizer=optax.adam(0.05)
  )
  np.testing.assert_allclose(y.reshape(-1), jnp.linalg.solve(q, theta), atol=1e-3)


def test_tol_stops_early_and_still_differentiates():
  q, theta, w = _quadratic_problem()
  options = dict(learning_rate=0.5, momentum=0.5)

  def run(theta, tol, steps=10_000):
    return idspn_jax.solve(quadratic_energy, jnp.zeros((N, D)), q, theta, steps=steps, tol=tol,
                           **options)

  y = run(theta, 1e-6)
  np.testing.assert_allclose(y.reshape(-1), jnp.linalg.solve(q, theta), atol=1e-5)
  # A loose tolerance stops after a few steps: the result is exactly a short fixed-step run's.
  loose = run(theta, 0.5)
  fixed = [idspn_jax.solve(quadratic_energy, jnp.zeros((N, D)), q, theta, steps=k, **options)
           for k in range(1, 30)]
  assert any(bool(jnp.all(loose == y_k)) for y_k in fixed)
  assert not np.allclose(loose, y, atol=1e-3)
  grad = jax.grad(lambda t: jnp.sum(w * run(t, 1e-6)))(theta)
  assert np.all(np.isfinite(grad))
  # The early stop's gradient is the fixed-step run's: taken before the last step it took.
  k = next(k for k, y_k in enumerate(fixed, 1) if bool(jnp.all(loose == y_k)))
  for at in ("previous", "final"):
    stopped = jax.grad(lambda t: jnp.sum(w * idspn_jax.solve(
      quadratic_energy, jnp.zeros((N, D)), q, t, steps=10_000, tol=0.5, implicit_at=at,
      **options)))(theta)
    fixed_grad = jax.grad(lambda t: jnp.sum(w * idspn_jax.solve(
      quadratic_energy, jnp.zeros((N, D)), q, t, steps=k, implicit_at=at, **options)))(theta)
    np.testing.assert_allclose(stopped, fixed_grad, rtol=1e-12)


def test_simplex_projection_keeps_rows_on_the_simplex():
  energy = lambda y, t: jnp.sum((y - t) ** 2)
  t = jax.random.normal(jax.random.key(0), (N, 4))
  y = idspn_jax.solve(
    energy, jnp.zeros((N, 4)), t, steps=5, projection=idspn_jax.project_rows_to_simplex
  )
  np.testing.assert_allclose(jnp.sum(y, axis=-1), 1.0, rtol=1e-12)
  assert float(jnp.min(y)) >= 0.0


@pytest.mark.parametrize(
  "call, message",
  [
    (lambda e: idspn_jax.solve(e, jnp.zeros((2, N, D))), "shape \\(n, d\\)"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), backward="adjoint"), "unknown backward"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), steps=0), "steps"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), tol=1e-3, backward="unroll"), "tol"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), clip_norm=-1.0), "clip_norm"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), backprop_steps=2), "truncates"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), implicit_at="last"), "unknown implicit_at"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), backward="unroll", implicit_at="final"),
     "has none"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), steps=3, backward="unroll",
                               backprop_steps=4), "backprop_steps must be"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D)), backward="unroll", backprop_steps=0),
     "backprop_steps must be"),
    (lambda e: idspn_jax.solve(lambda y: y, jnp.zeros((N, D))), "scalar"),
    (lambda e: idspn_jax.solve(e, jnp.zeros((N, D), jnp.int32)), "floating"),
  ],
)
def test_bad_input_is_a_clear_error(call, message):
  energy = lambda y: jnp.sum(y**2)
  with pytest.raises(ValueError, match=message):
    call(energy)


def test_mismatched_encoder_shape_is_a_clear_error():
  enc = idspn_jax.FSEncoder(8, 4, N)
  params = enc.init(jax.random.key(0), jnp.zeros((N, D)))["params"]
  energy = functools.partial(
    idspn_jax.mse_energy, apply_fn=lambda p, y: enc.apply({"params": p}, y)
  )
  with pytest.raises(ValueError, match="energy_fn failed on a set y of shape \\(5, 2\\)"):
    idspn_jax.solve(energy, jnp.zeros((5, D)), params, jnp.zeros(4))
  with pytest.raises(ValueError, match="target z has shape \\(3,\\)"):
    idspn_jax.solve(energy, jnp.zeros((N, D)), params, jnp.zeros(3))


def test_checkify_reports_where_a_nan_appears():
  energy = lambda y, s: jnp.sum((y - 1.0) ** 2) + jnp.log(s) * jnp.sum(y**2)  # log(s < 0) = nan
  run = lambda s: idspn_jax.solve(energy, jnp.zeros((N, D)), s, steps=3)
  err, _ = jax.jit(checkify.checkify(run, errors=checkify.float_checks))(-1.0)
  assert err.get() is not None and "nan" in err.get().lower()
  err, _ = jax.jit(checkify.checkify(run, errors=checkify.float_checks))(1.0)
  assert err.get() is None
