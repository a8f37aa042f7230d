"""Tests of idspn_jax.losses against the PyTorch reference and their invariances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

from idspn_jax import losses


def test_numbering_loss_matches_reference(reference_dir):
  ref = np.load(reference_dir / "hungarian_loss_numbering.npz")
  n = ref["pred"].shape[1]
  for method in ("scipy", "auction", "jv_host"):

    def loss_fn(pred, method=method):
      return losses.hungarian_loss_numbering(ref["inputs"], pred, ref["target"], method=method)

    loss, cols = loss_fn(ref["pred"])
    np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
    np.testing.assert_array_equal(np.arange(n) * n + np.asarray(cols), ref["flat_indices"])
    grad = jax.grad(lambda p, f=loss_fn: f(p)[0].sum())(ref["pred"])
    np.testing.assert_allclose(grad, ref["grad_pred_of_sum"], rtol=1e-4, atol=1e-6)


def test_hungarian_loss_smooth_l1_by_hand():
  pred = np.random.default_rng(0).normal(size=(3, 5, 4))
  target = np.random.default_rng(1).normal(size=(3, 5, 4))
  diff = np.abs(pred[:, None, :, :] - target[:, :, None, :])  # [B, N(target), N(pred), D]
  pdist = np.where(diff < 1, 0.5 * diff**2, diff - 0.5).mean(-1)  # [B, N, N]
  expected = [m[scipy.optimize.linear_sum_assignment(m)].mean() for m in pdist]
  for method in ("scipy", "auction", "hungarian", "jv_host"):
    got = losses.hungarian_loss(pred, target, method=method)
    np.testing.assert_allclose(got, expected, rtol=1e-10)


@pytest.mark.parametrize("cost", ["smooth_l1", "squared", "cross_entropy", "callable"])
def test_permutation_invariance_and_gradient(cost):
  rng = np.random.default_rng(2)
  pred = rng.normal(size=(4, 6, 3))
  target = rng.normal(size=(4, 6, 3))
  if cost == "cross_entropy":
    target = np.eye(3)[rng.integers(0, 3, size=(4, 6))]
  if cost == "callable":
    cost = lambda p, t: jnp.sum(jnp.abs(p - t))
  loss_fn = jax.jit(lambda p, t: losses.hungarian_loss(p, t, cost=cost, method="auction"))
  loss = loss_fn(pred, target)
  assert loss.shape == (4,)
  perm_p, perm_t = rng.permutation(6), rng.permutation(6)
  np.testing.assert_allclose(loss_fn(pred[:, perm_p], target), loss, rtol=1e-12)
  np.testing.assert_allclose(loss_fn(pred, target[:, perm_t]), loss, rtol=1e-12)
  # The gradient flows through the matched costs only: it equals the gradient of the fixed
  # matched pairing, and its rows permute with the predictions.
  grad = jax.grad(lambda p: loss_fn(p, target).sum())(pred)
  grad_perm = jax.grad(lambda p: loss_fn(p, target).sum())(pred[:, perm_p])
  np.testing.assert_allclose(grad_perm, grad[:, perm_p], rtol=1e-10, atol=1e-12)
  assert np.all(np.isfinite(grad))


def test_squared_cost_matches_pairing_gradient():
  pred = np.random.default_rng(3).normal(size=(2, 4, 2))
  target = np.random.default_rng(4).normal(size=(2, 4, 2))
  _, cols = losses.hungarian_loss_numbering(
    np.ones((2, 4, 1)), pred, target, loss_type="l2", method="scipy"
  )
  grad = jax.grad(lambda p: losses.hungarian_loss(p, target, cost="squared").sum())(pred)
  pdist = ((pred[:, None] - target[:, :, None]) ** 2).mean(-1)  # [B, N, N]
  rows_cols = [scipy.optimize.linear_sum_assignment(m) for m in pdist]
  matched = np.stack([pred[b, c] for b, (_, c) in enumerate(rows_cols)])  # [B, N, D]
  expected = np.zeros_like(pred)
  for b, (_, c) in enumerate(rows_cols):
    # d/dp of mean_i mean_d (p_c(i) - t_i)^2 = 2 (p - t) / (N D).
    expected[b, c] = 2 * (matched[b] - target[b]) / (4 * 2)
  np.testing.assert_allclose(grad, expected, rtol=1e-10)
  assert cols.shape == (2, 4)


def test_numbering_ce_restricted_to_class():
  rng = np.random.default_rng(5)
  classes = np.array([[0, 1, 0, 1, 1, 0]])
  inputs = np.eye(2)[classes]  # [1, 6, 2]
  target = np.eye(6)[[[0, 0, 1, 1, 2, 2]]]  # [1, 6, 6]
  pred = rng.normal(size=(1, 6, 6))
  loss, cols = losses.hungarian_loss_numbering(inputs, pred, target, loss_type="ce")
  np.testing.assert_array_equal(classes[0, np.asarray(cols[0])], classes[0])
  assert float(loss[0]) < 1e3


def test_numbering_l2_zero_distance_gradient_is_finite():
  inputs = np.ones((1, 3, 1))
  target = np.eye(3)[None]
  grad = jax.grad(lambda p: losses.hungarian_loss_numbering(inputs, p, target)[0].sum())(target)
  np.testing.assert_array_equal(grad, np.zeros_like(target))


def test_chamfer_loss():
  pred = np.array([[[0.0], [1.0]]])
  target = np.array([[[0.0], [3.0]]])
  # pdist (squared): rows target, cols pred: [[0, 1], [9, 4]].
  # min over targets per pred: (0 + 1) / 2; min over preds per target: (0 + 4) / 2.
  np.testing.assert_allclose(losses.chamfer_loss(pred, target), [2.5])
  rng = np.random.default_rng(6)
  a, b = rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
  np.testing.assert_allclose(losses.chamfer_loss(a[:, ::-1], b), losses.chamfer_loss(a, b))


def test_bad_inputs():
  with pytest.raises(ValueError, match="shape"):
    losses.hungarian_loss(np.zeros((2, 3, 4)), np.zeros((2, 4, 4)))
  with pytest.raises(ValueError, match="shape"):
    losses.hungarian_loss(np.zeros((3, 4)), np.zeros((3, 4)))
  with pytest.raises(ValueError, match="cost"):
    losses.hungarian_loss(np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), cost="l7")
  with pytest.raises(ValueError, match="loss_type"):
    losses.hungarian_loss_numbering(
      np.ones((1, 2, 1)), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)), loss_type="kl"
    )
  with pytest.raises(ValueError, match="inputs"):
    losses.hungarian_loss_numbering(np.ones((1, 3, 1)), np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))
  with pytest.raises(ValueError, match="finite"):
    losses.hungarian_loss(np.full((1, 2, 2), np.nan), np.zeros((1, 2, 2)), method="auction")
  with pytest.raises(ValueError, match="shape"):
    losses.chamfer_loss(np.zeros((1, 2, 2)), np.zeros((1, 2, 3)))
