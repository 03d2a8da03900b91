"""Neural-network building blocks: Slot Attention and the official layers."""

from slotlab.nn.layers import (
    Conv2dSame,
    ConvTranspose2dSame,
    SoftPositionEmbed,
    build_grid,
    same_padding,
)
from slotlab.nn.slot_attention import InvariantSlotAttention, SlotAttention

__all__ = [
    "Conv2dSame",
    "ConvTranspose2dSame",
    "InvariantSlotAttention",
    "SlotAttention",
    "SoftPositionEmbed",
    "build_grid",
    "same_padding",
]
