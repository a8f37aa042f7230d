"""Test-wide JAX settings (float64, strict rank promotion, rbg keys) and the reference vectors."""

import pathlib

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# rbg keys compile in a fraction of threefry's time on XLA:CPU; no test depends on the stream.
jax.config.update("jax_default_prng_impl", "rbg")

# The reference PyTorch implementation's outputs, stored with the tests (see data/README.md).
REFERENCE_DIR = pathlib.Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """The folder of reference vectors produced by the PyTorch implementation."""
  return REFERENCE_DIR
