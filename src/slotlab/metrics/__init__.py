"""slotlab.metrics: the paper's metrics with the exact semantics of the official code, in torch.

* :func:`average_precision_clevr` / :func:`average_precision_all`: CLEVR set-prediction AP
  (google-research ``slot_attention/utils.py``).
* :func:`adjusted_rand_index` / :func:`fg_adjusted_rand_index`: ARI and foreground ARI
  (DeepMind ``multi_object_datasets/segmentation_metrics.py``).
* :func:`segmentation_metrics`: ARI, FG-ARI, mBO and mIoU from instance-id maps and slot masks.
* :func:`segmentation_errors`: where object pixels go (their main slot, the background's, another),
  and how many of the errors lie on object borders.
"""

from __future__ import annotations

from slotlab.metrics.ap import (
    AP_THRESHOLDS,
    ap_key,
    average_precision_all,
    average_precision_clevr,
)
from slotlab.metrics.segmentation import (
    adjusted_rand_index,
    fg_adjusted_rand_index,
    segmentation_errors,
    segmentation_metrics,
)

__all__ = [
    "AP_THRESHOLDS",
    "ap_key",
    "average_precision_all",
    "average_precision_clevr",
    "adjusted_rand_index",
    "fg_adjusted_rand_index",
    "segmentation_errors",
    "segmentation_metrics",
]
