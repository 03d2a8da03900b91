"""slotlab: object-centric learning with Slot Attention (Locatello et al., NeurIPS 2020)."""

from __future__ import annotations

__version__ = "0.1.0"

from slotlab.errors import CheckpointError, ConfigError, DataError, SlotlabError  # noqa: E402
from slotlab.models import (  # noqa: E402
    SlotAttentionAutoEncoder,
    SlotAttentionSetPredictor,
    build_model,
)
from slotlab.models.pretrained import load_pretrained, save_pretrained  # noqa: E402
from slotlab.nn.slot_attention import SlotAttention  # noqa: E402

__all__ = [
    "__version__",
    "SlotlabError",
    "DataError",
    "CheckpointError",
    "ConfigError",
    "SlotAttention",
    "SlotAttentionAutoEncoder",
    "SlotAttentionSetPredictor",
    "build_model",
    "load_pretrained",
    "save_pretrained",
]
