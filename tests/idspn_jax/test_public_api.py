"""The package's public names: `idspn_jax.__all__` and those of its public submodules."""

import types

import pytest

import idspn_jax
from idspn_jax import _energies

PUBLIC = {
  # The inner loop, its options and the layer.
  "solve",
  "default_optimizer",
  "clip_by_set_norm",
  "project_rows_to_simplex",
  "BACKWARD_MODES",
  "IMPLICIT_POINTS",
  "IDSPN",
  # Set encoders.
  "SetEncoder",
  "FSEncoder",
  "RelationFSEncoder",
  "SumEncoder",
  "MeanEncoder",
  "FSPool",
  # Energies, named after the layer's energy= keys.
  "mse_energy",
  "mse_regularized_energy",
  "mse_concat_input_energy",
  # Submodules.
  "losses",
  "matching",
  "metrics",
}


def test_all_lists_exactly_the_public_names():
  assert sorted(idspn_jax.__all__) == sorted(PUBLIC)
  assert len(idspn_jax.__all__) == len(set(idspn_jax.__all__))
  # No other public attribute: everything else is private (a leading underscore) or a dunder.
  others = {name for name in vars(idspn_jax) if not name.startswith("_")}
  assert others == PUBLIC
  namespace: dict = {}
  exec("from idspn_jax import *", namespace)  # noqa: S102
  assert set(namespace) - {"__builtins__"} == PUBLIC


@pytest.mark.parametrize("module", [idspn_jax, idspn_jax.losses, idspn_jax.matching,
                                    idspn_jax.metrics])
def test_every_listed_name_resolves(module):
  assert module.__all__, module.__name__
  assert len(module.__all__) == len(set(module.__all__)), module.__name__
  for name in module.__all__:
    value = getattr(module, name)  # AttributeError for a name listed but not defined.
    if isinstance(value, types.ModuleType):  # The package's own submodules only.
      assert value.__name__ == f"{module.__name__}.{name}"


def test_internals_are_not_exported():
  for name in ("SolveState", "TorchLinear", "ElementMLP", "ENERGIES", "squared_error_energy",
               "regularized_energy", "concat_input_energy"):
    assert not hasattr(idspn_jax, name), name


def test_encoders_are_classes():
  for name in ("SetEncoder", "FSEncoder", "RelationFSEncoder", "SumEncoder", "MeanEncoder"):
    cls = getattr(idspn_jax, name)
    assert isinstance(cls, type) and issubclass(cls, idspn_jax.SetEncoder), name


def test_energy_names_follow_the_layer_keys():
  assert {f"{key}_energy" for key in _energies.ENERGIES} == {
    name for name in idspn_jax.__all__ if name.endswith("_energy")
  }
  for key, energy in _energies.ENERGIES.items():
    assert getattr(idspn_jax, f"{key}_energy") is energy
    assert energy.__name__ == f"{key}_energy"
