"""idspn_jax: set prediction by an inner optimisation, differentiated implicitly (iDSPN)."""

from idspn_jax import losses as losses
from idspn_jax import matching as matching
from idspn_jax import metrics as metrics
from idspn_jax._encoders import FSEncoder as FSEncoder
from idspn_jax._encoders import FSPool as FSPool
from idspn_jax._encoders import MeanEncoder as MeanEncoder
from idspn_jax._encoders import RelationFSEncoder as RelationFSEncoder
from idspn_jax._encoders import SetEncoder as SetEncoder
from idspn_jax._encoders import SumEncoder as SumEncoder
from idspn_jax._encoders import TorchLinear as TorchLinear
from idspn_jax._energies import concat_input_energy as concat_input_energy
from idspn_jax._energies import regularized_energy as regularized_energy
from idspn_jax._energies import squared_error_energy as squared_error_energy
from idspn_jax._idspn import IDSPN as IDSPN
from idspn_jax._inner import BACKWARD_MODES as BACKWARD_MODES
from idspn_jax._inner import SolveState as SolveState
from idspn_jax._inner import clip_by_set_norm as clip_by_set_norm
from idspn_jax._inner import default_optimizer as default_optimizer
from idspn_jax._inner import solve as solve
from idspn_jax._projections import project_rows_to_simplex as project_rows_to_simplex

__version__ = "0.1.0"
