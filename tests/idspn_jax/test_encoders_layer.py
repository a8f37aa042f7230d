"""Set encoders and the IDSPN layer: pooling, masks, equivariance, push_apart, bad input."""

import functools
import math
import re

import flax.linen as nn
import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import idspn_jax


def _with_ties(key, shape):
  x = jax.random.normal(key, shape)
  return jnp.round(x * 2) / 2  # many exact ties


def test_fspool_rank_and_sort_agree_in_value_and_gradient():
  x = _with_ties(jax.random.key(0), (3, 6, 5))
  sort_pool = idspn_jax.FSPool(6, "sort")
  rank_pool = idspn_jax.FSPool(6, "rank")
  params = sort_pool.init(jax.random.key(1), x)
  f = lambda pool, x: jnp.sum(jnp.sin(pool.apply(params, x)))
  np.testing.assert_allclose(rank_pool.apply(params, x), sort_pool.apply(params, x), rtol=1e-12)
  np.testing.assert_allclose(
    jax.grad(f, argnums=1)(rank_pool, x), jax.grad(f, argnums=1)(sort_pool, x), rtol=1e-12
  )


def test_fspool_sorts_ascending():
  x = jnp.array([[3.0], [1.0], [2.0]])  # [N=3, K=1]
  pool = idspn_jax.FSPool(3, "rank")
  w = jnp.array([[1.0], [10.0], [100.0]])
  out = pool.apply({"params": {"weight": w}}, x)
  np.testing.assert_allclose(out, [1 * 1 + 2 * 10 + 3 * 100])


def test_fspool_tie_gradient_goes_whole_to_one_slot():
  x = jnp.array([[1.0], [1.0]])
  w = jnp.array([[2.0], [5.0]])
  for method in ("rank", "sort"):
    pool = idspn_jax.FSPool(2, method)
    grad = jax.grad(lambda x: jnp.sum(pool.apply({"params": {"weight": w}}, x)))(x)
    np.testing.assert_allclose(grad, [[2.0], [5.0]], err_msg=method)


@pytest.mark.parametrize("method", ["rank", "sort"])
def test_fspool_mask_uses_the_first_slots(method):
  x = jax.random.normal(jax.random.key(0), (5, 3))
  mask = jnp.array([1, 0, 1, 1, 0])
  pool = idspn_jax.FSPool(5, method)
  params = pool.init(jax.random.key(1), x)
  w = params["params"]["weight"]
  present = x[mask == 1]  # [3, K]
  expected = jnp.einsum("nk,nk->k", jnp.sort(present, axis=0), w[:3])
  np.testing.assert_allclose(pool.apply(params, x, mask), expected, rtol=1e-12)


@pytest.mark.parametrize("pool", ["sum", "mean", "fs"])
def test_masked_elements_do_not_matter(pool):
  enc = idspn_jax.SetEncoder(hidden=8, latent=4, set_size=4, pool=pool)
  x = jax.random.normal(jax.random.key(0), (2, 4, 3))
  mask = jnp.array([[1, 1, 0, 0], [1, 1, 1, 0]])
  params = enc.init(jax.random.key(1), x, mask)
  other = x.at[:, 3].set(100.0).at[0, 2].set(-7.0)
  np.testing.assert_allclose(enc.apply(params, x, mask), enc.apply(params, other, mask))


@pytest.mark.parametrize("pool", ["fs", "rnfs", "sum", "mean"])
def test_encoders_are_permutation_invariant(pool):
  enc = idspn_jax.SetEncoder(hidden=8, latent=4, set_size=5, pool=pool)
  x = jax.random.normal(jax.random.key(0), (2, 5, 3))
  params = enc.init(jax.random.key(1), x)
  perm = jnp.array([3, 0, 4, 1, 2])
  out = enc.apply(params, x)
  assert out.shape == (2, 4)
  np.testing.assert_allclose(enc.apply(params, x[:, perm]), out, rtol=1e-10)


@pytest.mark.parametrize(
  "cls, pool",
  [
    (idspn_jax.FSEncoder, "fs"),
    (idspn_jax.RelationFSEncoder, "rnfs"),
    (idspn_jax.SumEncoder, "sum"),
    (idspn_jax.MeanEncoder, "mean"),
  ],
)
def test_fixed_pool_encoders_are_set_encoders_with_that_pool(cls, pool):
  enc = cls(8, 4, 3, fspool_method="sort", name="g")
  general = idspn_jax.SetEncoder(hidden=8, latent=4, set_size=3, pool=pool, fspool_method="sort")
  assert isinstance(enc, idspn_jax.SetEncoder)
  assert (enc.pool, enc.name, enc.fspool_method) == (pool, "g", "sort")
  x = jax.random.normal(jax.random.key(0), (2, 3, 5))
  params = enc.init(jax.random.key(1), x)
  # The same parameter tree, shapes and values as the general encoder's, and the same output.
  shapes = lambda tree: jax.tree.map(jnp.shape, tree)
  assert shapes(params) == shapes(general.init(jax.random.key(1), x))
  expected_keys = {"mlp", "pool"} if pool in ("fs", "rnfs") else {"mlp"}
  assert set(params["params"]) == expected_keys
  assert set(params["params"]["mlp"]) == {"Dense_0", "Dense_1"}
  np.testing.assert_array_equal(enc.apply(params, x), general.apply(params, x))
  with pytest.raises(TypeError, match="pool"):
    cls(8, 4, 3, pool="sum")


def test_fixed_pool_encoder_inside_a_module_and_in_the_layer():
  class Model(nn.Module):
    @nn.compact
    def __call__(self, x):
      return idspn_jax.FSEncoder(8, 4, 3, name="input_encoder")(x)

  x = jnp.ones((2, 3, 5))
  params = Model().init(jax.random.key(0), x)["params"]
  assert set(params) == {"input_encoder"} and set(params["input_encoder"]) == {"mlp", "pool"}
  layer = _layer(encoder=idspn_jax.SumEncoder(16, 6, 4))
  # Shapes only: tracing the layer's init is enough, no inner loop needs to run.
  variables = jax.eval_shape(lambda: layer.init({"params": jax.random.key(1)}, jnp.ones((2, 6))))
  assert set(variables["params"]["g"]) == {"mlp"}


def test_encoder_shape_errors():
  enc = idspn_jax.FSEncoder(8, 4, 5)
  with pytest.raises(ValueError, match="built for sets of 5"):
    enc.init(jax.random.key(0), jnp.zeros((6, 3)))
  with pytest.raises(ValueError, match="unknown pool"):
    idspn_jax.SetEncoder(hidden=8, latent=4, set_size=5, pool="max").init(
      jax.random.key(0), jnp.zeros((5, 3))
    )


def _layer(**kwargs):
  options = dict(set_size=4, set_dim=2, latent=6, hidden=16, steps=10)
  options.update(kwargs)
  return idspn_jax.IDSPN(**options)


@functools.cache
def _jitted_apply(layer):
  return jax.jit(lambda v, z, y0: layer.apply(v, z, y0=y0))


def test_permuting_the_start_set_permutes_the_output():
  layer = _layer()
  z = jax.random.normal(jax.random.key(0), (2, 6))
  y0 = 0.1 * jax.random.normal(jax.random.key(1), (2, 4, 2))
  variables = jax.jit(layer.init)(jax.random.key(2), z)
  apply = _jitted_apply(layer)
  perm = jnp.array([2, 0, 3, 1])
  np.testing.assert_allclose(
    apply(variables, z, y0[:, perm]), apply(variables, z, y0)[:, perm], rtol=1e-9, atol=1e-12
  )


@pytest.mark.parametrize("pool, separates", [("fs", True), ("sum", False), ("mean", False)])
def test_push_apart_equal_start_elements(pool, separates):
  """FSPool lets equal elements part (multiset-equivariance); sum/mean pools cannot."""
  layer = _layer(pool=pool, set_dim=1, set_size=2, steps=20)
  target = jnp.array([[[0.0], [1.0]]])  # push_apart([.5, .5]) should give [0, 1]
  variables = jax.jit(layer.init)(jax.random.key(0), jnp.zeros((1, 6)))
  enc = idspn_jax.SetEncoder(hidden=16, latent=6, set_size=2, pool=pool)
  z = enc.apply({"params": variables["params"]["g"]}, target)  # [1, 6]
  y = _jitted_apply(layer)(variables, z, jnp.full((1, 2, 1), 0.5))
  gap = float(jnp.abs(y[0, 0, 0] - y[0, 1, 0]))
  if separates:
    assert gap > 0.05
  else:
    assert gap == 0.0


def test_random_start_comes_from_the_start_rng():
  layer = _layer(learn_start=False)
  z = jnp.ones((2, 6))
  variables = layer.init({"params": jax.random.key(0), "start": jax.random.key(1)}, z)
  assert "y0" not in variables["params"]
  a = layer.apply(variables, z, rngs={"start": jax.random.key(5)})
  b = layer.apply(variables, z, rngs={"start": jax.random.key(6)})
  assert not np.allclose(a, b)


def test_dspn_gives_the_start_set_a_gradient_through_the_steps():
  z = jax.random.normal(jax.random.key(0), (2, 6))
  for backward, expect_grad in (("unroll", True), ("approx", False)):
    layer = _layer(backward=backward, momentum=0.0, energy="mse")
    variables = jax.jit(layer.init)(jax.random.key(1), z)
    grads = jax.jit(jax.grad(lambda v: jnp.sum(layer.apply(v, z) ** 2)))(variables)
    has_grad = float(jnp.abs(grads["params"]["y0"]).sum()) > 0
    assert has_grad == expect_grad, backward


def test_truncated_backprop_in_the_layer():
  """``backprop_steps`` keeps the outputs; the start set's gradient through all the steps is
  gone (the first steps are frozen); a call with fewer steps than it still runs."""
  z = jax.random.normal(jax.random.key(0), (2, 6))
  full = _layer(backward="unroll")
  cut = _layer(backward="unroll", backprop_steps=3)
  variables = jax.jit(full.init)(jax.random.key(1), z)
  np.testing.assert_allclose(cut.apply(variables, z), full.apply(variables, z), rtol=1e-12)
  grads = {name: jax.grad(lambda v, layer=layer: jnp.sum(layer.apply(v, z) ** 2))(variables)
           for name, layer in (("full", full), ("cut", cut))}
  assert float(jnp.abs(grads["full"]["params"]["y0"]).sum()) > 0
  assert float(jnp.abs(grads["cut"]["params"]["y0"]).sum()) == 0
  g_full, g_cut = (jax.flatten_util.ravel_pytree(g["params"]["g"])[0] for g in grads.values())
  assert float(jnp.abs(g_cut).sum()) > 0 and not np.allclose(g_cut, g_full)
  np.testing.assert_allclose(cut.apply(variables, z, steps=2), full.apply(variables, z, steps=2),
                             rtol=1e-12)


def test_concat_input_energy_and_simplex_projection():
  layer = _layer(energy="mse_concat_input", projection="simplex", clip_norm=40.0, set_dim=4)
  z = jnp.ones((2, 6))
  x = jax.nn.one_hot(jnp.array([[0, 1, 1, 2], [2, 2, 0, 1]]), 3)  # [2, 4, 3]
  variables = layer.init(jax.random.key(0), z, x)
  assert variables["params"]["g"]["mlp"]["Dense_0"]["kernel"].shape == (4 + 3, 16)
  y = layer.apply(variables, z, x)
  np.testing.assert_allclose(jnp.sum(y, -1), 1.0, rtol=1e-6)


def test_target_energy_is_the_energy_at_the_given_sets():
  """``IDSPN.target_energy`` (DSPN's representation loss) is 0.5 mean_k (g(Y) - z)^2 per set,
  with the concat input for numbering, and gives gradients to both g and z."""
  z = jax.random.normal(jax.random.key(0), (2, 6))
  target = jax.random.normal(jax.random.key(1), (2, 3, 2))
  for energy in ("mse", "mse_regularized"):  # The pull toward the start set is left out.
    layer = _layer(energy=energy, set_size=3)
    variables = layer.init(jax.random.key(2), z)
    got = layer.apply(variables, z, target, method=layer.target_energy)
    encoder = idspn_jax.SetEncoder(hidden=16, latent=6, set_size=3, pool="fs")
    code = jax.vmap(lambda y: encoder.apply({"params": variables["params"]["g"]}, y))(target)
    np.testing.assert_allclose(got, 0.5 * jnp.mean((code - z) ** 2, -1), rtol=1e-5)
    grad_g, grad_z = jax.grad(
      lambda g, z: jnp.sum(layer.apply({"params": {**variables["params"], "g": g}}, z, target,
                                       method=layer.target_energy)), argnums=(0, 1),
    )(variables["params"]["g"], z)
    assert all(float(jnp.abs(x).sum()) > 0 for x in jax.tree.leaves((grad_g, grad_z)))
    grad_g, grad_z = jax.grad(
      lambda g, z: jnp.sum(layer.apply({"params": {**variables["params"], "g": g}}, z, target,
                                       train_encoder=False, method=layer.target_energy)),
      argnums=(0, 1),
    )(variables["params"]["g"], z)
    assert all(float(jnp.abs(x).sum()) == 0 for x in jax.tree.leaves(grad_g))
    assert float(jnp.abs(grad_z).sum()) > 0
  layer = _layer(energy="mse_concat_input", set_dim=4, set_size=3)
  x = jax.nn.one_hot(jnp.array([[0, 1, 2], [2, 2, 0]]), 3)  # [2, 3, 3]
  target4 = jnp.concatenate([target, target], -1)  # [2, 3, 4]
  variables = layer.init(jax.random.key(0), z, x)
  got = layer.apply(variables, z, target4, x, method=layer.target_energy)
  encoder = idspn_jax.SetEncoder(hidden=16, latent=6, set_size=3, pool="fs")
  code = jax.vmap(lambda y: encoder.apply({"params": variables["params"]["g"]}, y))(
    jnp.concatenate([target4, x], -1))
  np.testing.assert_allclose(got, 0.5 * jnp.mean((code - z) ** 2, -1), rtol=1e-5)
  with pytest.raises(ValueError, match="needs the input set"):
    layer.apply(variables, z, target4, method=layer.target_energy)
  with pytest.raises(ValueError, match="x must have shape"):
    layer.apply(variables, z, target4, x[:, :2], method=layer.target_energy)
  with pytest.raises(ValueError, match="target must have shape"):
    layer.apply(variables, z, target, x, method=layer.target_energy)
  with pytest.raises(ValueError, match="call the layer once"):
    layer.apply({"params": {}}, z, target4, x, method=layer.target_energy)


@pytest.mark.parametrize(
  "kwargs, call, message",
  [
    ({}, lambda m, v: m.apply(v, jnp.ones((2, 5))), "z must have shape"),
    ({"energy": "kl"}, lambda m, v: m.init(jax.random.key(0), jnp.ones((2, 6))), "unknown energy"),
    (
      {"energy": "mse_concat_input"},
      lambda m, v: m.init(jax.random.key(0), jnp.ones((2, 6))),
      "needs the input set",
    ),
    (
      {"projection": "box"},
      lambda m, v: m.init(jax.random.key(0), jnp.ones((2, 6))),
      "unknown projection",
    ),
    ({}, lambda m, v: m.apply(v, jnp.ones((2, 6)), y0=jnp.ones((2, 3, 2))), "y0 must have shape"),
    (
      {"backward": "implicit"},
      lambda m, v: m.init(jax.random.key(0), jnp.ones((2, 6))),
      "unknown backward",
    ),
  ],
)
def test_layer_bad_input(kwargs, call, message):
  variables = _layer().init(jax.random.key(0), jnp.ones((2, 6)))
  with pytest.raises(ValueError, match=message):
    call(_layer(**kwargs), variables)



@pytest.mark.parametrize("method", ["count", "pivot"])
def test_simplex_projection_without_sort_equals_the_sort(method):
  y = jax.random.normal(jax.random.key(0), (5, 7, 9))
  # Equal elements in every row (a value exactly at the threshold, a kink where either
  # one-sided derivative is right, is avoided by continuous values).
  y = y.at[..., 1].set(y[..., 0]).at[..., 4].set(y[..., 3])
  # Rows the pivoting needs many passes for (a geometric spread drops one element a pass), a
  # constant row (every element in the support) and a single dominant element.
  y = y.at[0, 0].set(2.0 ** -jnp.arange(9)).at[0, 1].set(0.3).at[0, 2].set(jnp.eye(9)[4] * 5)
  g = jax.random.normal(jax.random.key(1), y.shape)
  outs, grads = {}, {}
  for m in ("sort", method):
    out, vjp = jax.vjp(lambda y, m=m: idspn_jax.project_rows_to_simplex(y, method=m), y)
    outs[m], grads[m] = out, vjp(g)[0]
  np.testing.assert_allclose(outs[method], outs["sort"], atol=1e-12)
  np.testing.assert_allclose(jnp.sum(outs[method], -1), 1.0, rtol=1e-12)
  np.testing.assert_allclose(grads[method], grads["sort"], atol=1e-12)
  np.testing.assert_allclose(outs[method][0, 1], jnp.full(9, 1 / 9), rtol=1e-12)
  with pytest.raises(ValueError, match="unknown method"):
    idspn_jax.project_rows_to_simplex(y, method="bisect")


def test_fspool_rank_mask_stays_small_in_a_differentiated_loop():
  """Backpropagating through a loop over FSPool (``backward="unroll"``) must not make JAX hoist
  the rank loop's index mask out as an [N, B, N, K] array, one full-size mask per element j
  (what a plain `jnp.where` on the broadcast mask did: 1.5x slower DSPN numbering steps)."""
  from idspn_jax._encoders import _sort_ranks

  b, n, k = 2, 32, 4

  def loss(y):
    def step(_, y):
      return y + 0.01 * jnp.sin(y) * _sort_ranks(y).astype(y.dtype)

    return jnp.sum(jax.lax.fori_loop(0, 3, step, y))

  text = str(jax.make_jaxpr(jax.grad(loss))(jnp.ones((b, n, k))))
  sizes = [math.prod(int(d) for d in shape.split(",")) for shape in
           re.findall(r"bool\[([0-9,]+)\]", text)]
  assert sizes and max(sizes) < n * b * n * k, sorted(set(sizes))


@pytest.mark.parametrize("n", [5, 40])  # the broadcast and the streamed rank computations
def test_fspool_ranks_are_a_tie_breaking_permutation(n):
  from idspn_jax._encoders import _sort_ranks

  x = jnp.round(jax.random.normal(jax.random.key(0), (3, n, 4)) * 2) / 2  # many ties
  expected = jnp.argsort(jnp.argsort(x, axis=-2, stable=True), axis=-2)
  np.testing.assert_array_equal(_sort_ranks(x), expected)


@pytest.mark.parametrize("method", ["sort", "count", "pivot"])
def test_simplex_projection_keeps_the_input_dtype(method):
  # The tests run with x64 on, where optax's projection would otherwise return float64.
  y = jnp.linspace(-1.0, 2.0, 12, dtype=jnp.float32).reshape(3, 4)
  assert idspn_jax.project_rows_to_simplex(y, method=method).dtype == jnp.float32
