"""Evaluation metrics: CLEVR object average precision and numbering micro/macro accuracy."""

from idspn_jax._metrics import CLEVR_THRESHOLDS as CLEVR_THRESHOLDS
from idspn_jax._metrics import average_precision as average_precision
from idspn_jax._metrics import numbering_accuracy as numbering_accuracy

__all__ = ["CLEVR_THRESHOLDS", "average_precision", "numbering_accuracy"]
