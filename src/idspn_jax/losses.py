"""Set losses: Hungarian losses (pluggable element cost, class-restricted numbering) and Chamfer."""

from idspn_jax._losses import chamfer_loss as chamfer_loss
from idspn_jax._losses import cross_entropy_cost as cross_entropy_cost
from idspn_jax._losses import hungarian_loss as hungarian_loss
from idspn_jax._losses import hungarian_loss_numbering as hungarian_loss_numbering
from idspn_jax._losses import pairwise_cost as pairwise_cost
from idspn_jax._losses import smooth_l1_cost as smooth_l1_cost
from idspn_jax._losses import squared_cost as squared_cost

__all__ = [
  "chamfer_loss",
  "cross_entropy_cost",
  "hungarian_loss",
  "hungarian_loss_numbering",
  "pairwise_cost",
  "smooth_l1_cost",
  "squared_cost",
]
