"""The layer reproduces the reference PyTorch implementation on its stored end-to-end vectors.

Each file holds a tiny model's parameters, inputs, start sets, predicted sets, loss and
parameter gradients, all computed in float64 by the reference (see tests/data/README.md).
"""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import idspn_jax
from reference_vectors import TOL, load_end_to_end, torch_encoder_params


def _brute_force_matching(cost):
  """Optimal assignment of each [N, N] cost matrix by trying every permutation (N <= 6)."""
  cost = np.asarray(cost)
  n = cost.shape[-1]
  perms = np.array(list(itertools.permutations(range(n))))  # [N!, N]
  totals = cost[:, np.arange(n)[None, :], perms].sum(-1)  # [B, N!]
  return perms[np.argmin(totals, axis=-1)]  # [B, N]: row i matched to column perm[i]


def _matched_mean(cost):
  perm = _brute_force_matching(jax.lax.stop_gradient(cost))
  matched = jnp.take_along_axis(cost, jnp.asarray(perm)[..., None], axis=-1)[..., 0]  # [B, N]
  return jnp.mean(matched, axis=-1)  # [B]


def _hungarian_smooth_l1(pred, target):
  diff = jnp.abs(pred[:, None, :, :] - target[:, :, None, :])  # [B, N(target), N(pred), D]
  cost = jnp.mean(jnp.where(diff < 1, 0.5 * diff**2, diff - 0.5), axis=-1)  # [B, N, N]
  return _matched_mean(cost)


def _hungarian_numbering_l2(inputs, pred, target):
  mask = 1e3 * (1 - jnp.einsum("bsd,btd->bst", inputs, inputs))  # [B, N, N]
  sq = jnp.sum((target[:, :, None, :] - pred[:, None, :, :]) ** 2, axis=-1)  # [B, N, N]
  cost = jnp.sqrt(jnp.maximum(sq, 1e-30)) + mask
  return _matched_mean(cost)


EXPERIMENTS = {
  # name: (layer options, loss)
  "e2e_exp2_idspn": (
    dict(energy="mse_regularized", learn_start=True, momentum=0.9, backward="approx"),
    "autoencode",
  ),
  "e2e_exp2_dspn": (
    dict(energy="mse_regularized", learn_start=True, momentum=0.0, backward="unroll"),
    "autoencode",
  ),
  "e2e_exp1_idspn": (
    dict(
      energy="mse_concat_input", learn_start=False, momentum=0.9, backward="approx",
      clip_norm=40.0, projection="simplex",
    ),
    "numbering",
  ),
  "e2e_exp1_dspn": (
    # The reference's DSPN neither clips nor projects its start set.
    dict(
      energy="mse_concat_input", learn_start=False, momentum=0.0, backward="unroll",
      projection="simplex", project_start=False,
    ),
    "numbering",
  ),
}


def _run_reference_model(data, params, options, loss_kind, steps):
  """Builds the reference's DSPNBaseModel from our parts; returns (loss_fn, variables)."""
  x = jnp.asarray(data["x"])
  b, n, _ = x.shape
  d = data["out"].shape[-1]
  hidden = params["inner_obj.encoder.mlp.0.weight"].shape[0]
  latent = params["inner_obj.encoder.mlp.2.weight"].shape[0]
  input_encoder = idspn_jax.FSEncoder(hidden, latent, n)
  layer = idspn_jax.IDSPN(
    set_size=n, set_dim=d, latent=latent, hidden=hidden, steps=steps, **options
  )
  variables = {
    "input": torch_encoder_params(params, "input_to_z"),
    "g": torch_encoder_params(params, "inner_obj.encoder"),
  }
  if options["learn_start"]:
    variables["y0"] = jnp.asarray(params["dspn._set_0"][0])

  def predict(variables, n_steps):
    z = input_encoder.apply({"params": variables["input"]}, x)  # [B, K]
    layer_params = {k: v for k, v in variables.items() if k != "input"}
    y0 = None if options["learn_start"] else jnp.asarray(data["set_0"])
    x_in = x if options["energy"] == "mse_concat_input" else None
    return layer.apply({"params": layer_params}, z, x_in, y0=y0, steps=n_steps)

  def loss_of(out):
    if loss_kind == "autoencode":
      return jnp.mean(_hungarian_smooth_l1(out, jnp.asarray(data["y"])))
    return jnp.mean(_hungarian_numbering_l2(x, out, jnp.asarray(data["y"])))

  return jax.jit(predict, static_argnums=1), loss_of, variables


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_forward_and_loss_match_reference(reference_dir, name):
  data, params, _ = load_end_to_end(reference_dir, name)
  options, loss_kind = EXPERIMENTS[name]
  steps = 5
  predict, loss_of, variables = _run_reference_model(data, params, options, loss_kind, steps)
  out = predict(variables, steps)
  np.testing.assert_allclose(out, data["out"], **TOL)
  np.testing.assert_allclose(loss_of(out), data["loss"], **TOL)


def _torch_grad_tree(grads, learn_start):
  tree = {
    "input": torch_encoder_params(grads, "input_to_z"),
    "g": torch_encoder_params(grads, "inner_obj.encoder"),
  }
  if learn_start:
    tree["y0"] = jnp.asarray(grads["dspn._set_0"][0])
  return tree


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_parameter_gradients_match_reference(reference_dir, name):
  data, params, grads = load_end_to_end(reference_dir, name)
  options, loss_kind = EXPERIMENTS[name]
  steps = 5
  predict, loss_of, variables = _run_reference_model(data, params, options, loss_kind, steps)

  loss_fn = lambda v: loss_of(predict(v, steps))
  # The library's own gradient: iDSPN's Jacobian-free one is taken at the iterate before the
  # last step, as the reference takes it.
  ours = jax.grad(loss_fn)(variables)  # the brute-force matching runs on the host
  expected = _torch_grad_tree(grads, options["learn_start"])
  flat_ours = dict(jax.tree_util.tree_leaves_with_path(ours))
  for path, want in jax.tree_util.tree_leaves_with_path(expected):
    np.testing.assert_allclose(
      flat_ours[path], want, **TOL, err_msg=jax.tree_util.keystr(path)
    )


@pytest.mark.parametrize("method", ["sort", "count", "pivot"])
def test_simplex_projection_matches_reference(reference_dir, method):
  data = np.load(reference_dir / "simplex_projection.npz")
  x = jnp.asarray(data["x"])
  out, vjp = jax.vjp(lambda x: idspn_jax.project_rows_to_simplex(x, method=method), x)
  np.testing.assert_allclose(out, data["out"], rtol=1e-12, atol=1e-12)
  (grad_x,) = vjp(jnp.asarray(data["upstream"]))
  np.testing.assert_allclose(grad_x, data["grad_x"], rtol=1e-10, atol=1e-12)


def test_set_grad_output_is_the_step_residual(reference_dir):
  """The reference's second output is F(y_{T-1}): -grad L, or P(y - grad L) - y."""
  for name in ("e2e_exp2_idspn", "e2e_exp1_idspn"):
    data, params, _ = load_end_to_end(reference_dir, name)
    options, loss_kind = EXPERIMENTS[name]
    predict, _, variables = _run_reference_model(data, params, options, loss_kind, 5)
    y_prev = predict(variables, 4)
    x = jnp.asarray(data["x"])
    n = x.shape[1]
    hidden = params["inner_obj.encoder.mlp.0.weight"].shape[0]
    latent = params["inner_obj.encoder.mlp.2.weight"].shape[0]
    enc = idspn_jax.FSEncoder(hidden, latent, n)
    apply_fn = lambda p, y: enc.apply({"params": p}, y)
    z = idspn_jax.FSEncoder(hidden, latent, n).apply({"params": variables["input"]}, x)
    if name == "e2e_exp2_idspn":
      energy = functools.partial(idspn_jax.mse_regularized_energy, apply_fn=apply_fn)
      y_ref = jnp.broadcast_to(variables["y0"], y_prev.shape)
      grad = jax.vmap(jax.grad(energy), in_axes=(0, None, 0, 0))(
        y_prev, variables["g"], z, y_ref
      )
      residual = -grad
    else:
      energy = functools.partial(idspn_jax.mse_concat_input_energy, apply_fn=apply_fn)
      grad = jax.vmap(jax.grad(energy), in_axes=(0, None, 0, 0))(y_prev, variables["g"], z, x)
      residual = idspn_jax.project_rows_to_simplex(y_prev - grad) - y_prev
    np.testing.assert_allclose(residual, data["set_grad"], **TOL, err_msg=name)
