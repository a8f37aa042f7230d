"""Readers of the reference vectors in tests/data (see tests/data/README.md) for any test.

The tests' root folder is on `sys.path` (pytest puts it there for `tests/conftest.py`), so a
test anywhere under tests/ imports this as ``from reference_vectors import ...``; the folder
itself comes from the ``reference_dir`` fixture.
"""

import pathlib

import jax.numpy as jnp
import numpy as np

#: Tolerances for comparisons with the reference's float64 end-to-end outputs.
TOL = dict(rtol=1e-7, atol=1e-9)


def torch_encoder_params(ref, prefix: str) -> dict:
  """The reference FSEncoder's weights under `prefix` (torch layout) as a `SetEncoder` tree.

  Args:
    ref: Mapping from torch parameter names (e.g. ``"input_to_z.mlp.0.weight"``) to arrays.
    prefix: The encoder's name in the reference model, e.g. ``"input_to_z"``.

  Returns:
    ``{"mlp": {"Dense_0": ..., "Dense_1": ...}, "pool": {"weight": ...}}``, kernels transposed
    from torch's (out, in) to (in, out).
  """
  t = lambda name: jnp.asarray(ref[f"{prefix}.{name}"])
  return {
    "mlp": {
      "Dense_0": {"kernel": t("mlp.0.weight").T, "bias": t("mlp.0.bias")},
      "Dense_1": {"kernel": t("mlp.2.weight").T, "bias": t("mlp.2.bias")},
    },
    "pool": {"weight": t("pool.weight")},
  }


def load_end_to_end(reference_dir: pathlib.Path, name: str) -> tuple:
  """One of the reference's tiny end-to-end models, e.g. ``name="e2e_exp1_idspn"``.

  Returns:
    data: The whole .npz file (inputs, start set, outputs, loss).
    params: Torch parameter name -> value, from the ``param/`` entries.
    grads: Torch parameter name -> gradient of the loss, from the ``grad/`` entries.
  """
  data = np.load(reference_dir / f"{name}.npz")
  params = {k[len("param/"):]: data[k] for k in data.files if k.startswith("param/")}
  grads = {k[len("grad/"):]: data[k] for k in data.files if k.startswith("grad/")}
  return data, params, grads
