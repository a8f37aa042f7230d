"""Test-wide JAX settings: float64, strict rank promotion, rbg keys."""

import os
import pathlib

import jax
import pytest

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_rank_promotion", "raise")
# rbg keys compile in a fraction of threefry's time on XLA:CPU; no test depends on the stream.
jax.config.update("jax_default_prng_impl", "rbg")

# The reference vectors live in the shared folder beside the checkout.
_HERE = pathlib.Path(__file__).resolve().parent
REFERENCE_DIR = pathlib.Path(
  os.environ.get("IDSPN_REFERENCE_VECTORS", _HERE.parent.parent / "shared" / "reference_vectors")
)


@pytest.fixture(scope="session")
def reference_dir() -> pathlib.Path:
  """The folder of reference vectors produced by the PyTorch implementation."""
  if not REFERENCE_DIR.is_dir():
    pytest.fail(f"reference vectors not found at {REFERENCE_DIR} (set IDSPN_REFERENCE_VECTORS)")
  return REFERENCE_DIR
