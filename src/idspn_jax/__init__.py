"""idspn_jax: set prediction by an inner optimisation, differentiated implicitly (iDSPN).

The inner loop is `solve` (one set, batched with ``in_axes``), the Flax layer `IDSPN`. Set
encoders for the energy: `SetEncoder` (any pool) and its fixed-pool forms `FSEncoder`,
`RelationFSEncoder`, `SumEncoder`, `MeanEncoder`, with `FSPool`. Energies: `mse_energy`,
`mse_regularized_energy`, `mse_concat_input_energy` (the layer's ``energy=`` keys with
``_energy`` appended). The submodules `matching`, `losses` and `metrics` hold batched
assignment, set losses and evaluation metrics.
"""

from idspn_jax import losses, matching, metrics
from idspn_jax._encoders import (
  FSEncoder,
  FSPool,
  MeanEncoder,
  RelationFSEncoder,
  SetEncoder,
  SumEncoder,
)
from idspn_jax._energies import mse_concat_input_energy, mse_energy, mse_regularized_energy
from idspn_jax._idspn import IDSPN
from idspn_jax._inner import (
  BACKWARD_MODES,
  IMPLICIT_POINTS,
  clip_by_set_norm,
  default_optimizer,
  solve,
)
from idspn_jax._projections import project_rows_to_simplex

__version__ = "0.1.0"

__all__ = [
  "BACKWARD_MODES",
  "FSEncoder",
  "FSPool",
  "IDSPN",
  "IMPLICIT_POINTS",
  "MeanEncoder",
  "RelationFSEncoder",
  "SetEncoder",
  "SumEncoder",
  "clip_by_set_norm",
  "default_optimizer",
  "losses",
  "matching",
  "metrics",
  "mse_concat_input_energy",
  "mse_energy",
  "mse_regularized_energy",
  "project_rows_to_simplex",
  "solve",
]
