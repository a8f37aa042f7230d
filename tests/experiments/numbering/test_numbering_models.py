"""Tests of the numbering baselines (experiments/numbering/models.py).

Compilation dominates the cost here, so each model's apply is jitted once, on one batch shape,
and the property tests feed it many random multisets of that shape. The parameters are random
normals filled in on the host from the shapes that ``jax.eval_shape(model.init)`` traces: that
checks the init code path without compiling Flax's initialisers (seconds per model on CPU).
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.numbering import data as nd
from experiments.numbering import models as nm

_BATCH, _SET_SIZE, _N_CLASSES, _HIDDEN = 8, 10, 4, 16
_SET_EQUIVARIANT = ["deepsets", "transformer_no_pe"]
_POSITION_AWARE = ["transformer_pe", "transformer_random_pe", "bilstm"]
_BASELINES = _SET_EQUIVARIANT + _POSITION_AWARE


def _key(seed: int) -> jax.Array:
  """A PRNG key; the models take any kind.

  RngBitGenerator keys, unlike threefry keys, compile in well under a second on CPU.
  """
  return jax.random.key(seed, impl="rbg")


def _random_multisets(seed: int) -> tuple[np.ndarray, np.ndarray]:
  """A batch of class ids [B, S] (with repeats: 3 classes over 10 elements) and its one-hots."""
  inputs, targets = nd.make_numbering_dataset(
    n_samples=_BATCH, set_size=_SET_SIZE, n_classes=_N_CLASSES, n_per_sample=3, seed=seed
  )
  x, _ = nd.one_hot_batch(inputs, targets, n_classes=_N_CLASSES, set_size=_SET_SIZE)
  return inputs, x  # [B, S], [B, S, C]


def _random_params(model: nn.Module, x: np.ndarray, *, seed: int = 0):
  """Parameters of the shapes and dtypes ``model.init`` gives, drawn N(0, 0.5^2) on the host."""
  keys = {"params": _key(0), "noise": _key(1)}
  shapes = jax.eval_shape(lambda: model.init(keys, jnp.asarray(x)))
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: (0.5 * rng.normal(size=s.shape)).astype(s.dtype), shapes)


@functools.cache
def _model(name: str):
  """(params, jitted apply(params, x, noise_key)) of one model, built once per session."""
  model = nm.create_numbering_model(name, hidden=_HIDDEN, set_size=_SET_SIZE, n_classes=_N_CLASSES)
  params = _random_params(model, _random_multisets(0)[1])
  apply = jax.jit(lambda params, x, key: model.apply(params, x, rngs={"noise": key}))
  return params, apply


def _run(name: str, x: np.ndarray, noise_seed: int = 2) -> np.ndarray:
  params, apply = _model(name)
  return np.asarray(apply(params, jnp.asarray(x), _key(noise_seed)))


def _equal_pairs(inputs: np.ndarray) -> tuple[np.ndarray, ...]:
  """Indices (b, k, k2) of every pair k < k2 of equal elements in a set."""
  equal = inputs[:, :, None] == inputs[:, None, :]  # [B, S, S]
  return np.nonzero(np.triu(equal, k=1))


@pytest.mark.parametrize("name", _BASELINES)
def test_output_shape_and_dtype(name):
  out = _run(name, _random_multisets(0)[1])
  assert out.shape == (_BATCH, _SET_SIZE, _SET_SIZE)
  assert out.dtype == np.float32
  assert np.isfinite(out).all()


@pytest.mark.parametrize("name", _SET_EQUIVARIANT)
def test_set_equivariant_models_give_equal_elements_equal_outputs(name):
  # The property that makes these models score 0: equal inputs get bitwise equal output rows.
  for seed in range(5):
    inputs, x = _random_multisets(seed)
    out = _run(name, x)
    b, k, k2 = _equal_pairs(inputs)
    assert b.size > 0
    np.testing.assert_array_equal(out[b, k], out[b, k2], err_msg=f"{name}, multisets seed {seed}")


@pytest.mark.parametrize("name", _SET_EQUIVARIANT)
def test_set_equivariant_models_commute_with_permutations(name):
  _, x = _random_multisets(1)
  perm = np.random.default_rng(0).permutation(_SET_SIZE)
  np.testing.assert_allclose(_run(name, x[:, perm]), _run(name, x)[:, perm], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", _POSITION_AWARE)
def test_position_aware_models_separate_equal_elements(name):
  inputs, x = _random_multisets(3)
  out = _run(name, x)
  b, k, k2 = _equal_pairs(inputs)
  assert b.size > 0
  differs = np.any(out[b, k] != out[b, k2], axis=-1)
  assert differs.all(), f"{name} gave {np.sum(~differs)} pairs of equal elements equal outputs"


def test_random_pe_depends_on_the_noise_only_through_its_key():
  _, x = _random_multisets(0)
  name = "transformer_random_pe"
  np.testing.assert_array_equal(_run(name, x, noise_seed=4), _run(name, x, noise_seed=4))
  assert not np.array_equal(_run(name, x, noise_seed=4), _run(name, x, noise_seed=5))


def test_random_positional_encoding_is_embedding_then_scaled_noise():
  _, x = _random_multisets(0)
  module = nm.RandomPositionalEncoding(6)
  rngs = {"params": _key(0), "noise": _key(1)}
  out, params = module.init_with_output(rngs, jnp.asarray(x))
  assert out.shape == (_BATCH, _SET_SIZE, 6) and out.dtype == jnp.float32
  # alpha and beta start at 0: the code is the embedding, then unit-variance noise.
  assert float(params["params"]["alpha"]) == 0.0 and float(params["params"]["beta"]) == 0.0
  embedded = nn.Dense(3).apply({"params": params["params"]["Dense_0"]}, jnp.asarray(x))
  np.testing.assert_allclose(out[..., :3], embedded, rtol=1e-6)
  noise = out[..., 3:]
  # With alpha = 1 and beta = log 2 the same noise is shifted to 1 and scaled by 2.
  params["params"]["alpha"] = jnp.asarray(1.0, jnp.float32)
  params["params"]["beta"] = jnp.asarray(np.log(2.0), jnp.float32)
  shifted = module.apply(params, jnp.asarray(x), rngs={"noise": _key(1)})
  np.testing.assert_allclose(shifted[..., 3:], 1.0 + 2.0 * noise, rtol=1e-5, atol=1e-6)
  # The noise differs between equal elements.
  assert not np.array_equal(noise[0, 0], noise[0, 1])


def test_sinusoidal_encoding():
  pe = nm.sinusoidal_encoding(5, 6)
  assert pe.shape == (5, 6) and pe.dtype == np.float32
  np.testing.assert_array_equal(pe[0], [0, 1, 0, 1, 0, 1])
  p = np.arange(5)
  np.testing.assert_allclose(pe[:, 0], np.sin(p), rtol=1e-6)
  np.testing.assert_allclose(pe[:, 1], np.cos(p), rtol=1e-6)
  np.testing.assert_allclose(pe[:, 4], np.sin(p / 10_000 ** (4 / 6)), rtol=1e-6)


def test_transformer_follows_the_torch_layout():
  params, _ = _model("transformer_no_pe")
  p = params["params"]
  assert sorted(k for k in p if k.startswith(("encoder_", "decoder_"))) == [
    "decoder_0",
    "decoder_1",
    "decoder_norm",
    "encoder_0",
    "encoder_1",
    "encoder_norm",
  ]
  # Feed-forward width 2 * hidden, and three sublayers (two attentions) per decoder layer.
  assert p["encoder_0"]["FeedForward_0"]["Dense_0"]["kernel"].shape == (_HIDDEN, 2 * _HIDDEN)
  assert len([k for k in p["decoder_0"] if k.startswith("LayerNorm")]) == 3


def test_unknown_model_name_lists_the_valid_names():
  with pytest.raises(ValueError, match="unknown numbering model 'mlp'.*bilstm, deepsets"):
    nm.create_numbering_model("mlp", hidden=16, set_size=8, n_classes=4)


def test_create_rejects_bad_sizes():
  with pytest.raises(ValueError, match="hidden must be a positive integer"):
    nm.create_numbering_model("deepsets", hidden=0, set_size=8, n_classes=4)


def test_models_reject_inputs_of_the_wrong_width():
  model = nm.create_numbering_model("deepsets", hidden=4, set_size=6, n_classes=4)
  with pytest.raises(ValueError, match=r"expected an input set of shape \[B, S, 4\]"):
    model.init(jax.random.key(0), jnp.zeros((2, 6, 3), jnp.float32))
  with pytest.raises(ValueError, match="more than the output width set_size=6"):
    model.init(jax.random.key(0), jnp.zeros((2, 7, 4), jnp.float32))


def test_transformer_rejects_a_width_the_heads_do_not_divide():
  model = nm.create_numbering_model("transformer_pe", hidden=12, set_size=6, n_classes=4)
  with pytest.raises(ValueError, match=r"hidden \(12\) must be divisible by num_heads \(8\)"):
    model.init(jax.random.key(0), jnp.zeros((1, 6, 4), jnp.float32))


def test_registry_can_be_extended(monkeypatch):
  monkeypatch.setattr(nm, "NUMBERING_MODELS", dict(nm.NUMBERING_MODELS))
  nm.register_numbering_model("tiny", lambda *, hidden, set_size, n_classes: nm.DeepSets(1, 2, 3))
  assert isinstance(
    nm.create_numbering_model("tiny", hidden=4, set_size=2, n_classes=3), nm.DeepSets
  )
  with pytest.raises(ValueError, match="already registered"):
    nm.register_numbering_model("deepsets", nm.NUMBERING_MODELS["deepsets"])


def test_transformer_rejects_an_unknown_positional_encoding():
  model = nm.NumberingTransformer(16, 6, 4, positional="learned")
  with pytest.raises(ValueError, match="positional must be 'none', 'sinusoidal' or 'random'"):
    jax.eval_shape(lambda: model.init(_key(0), jnp.zeros((1, 6, 4), jnp.float32)))
