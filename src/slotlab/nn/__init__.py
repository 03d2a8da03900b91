"""Neural-network building blocks: Slot Attention, its variants and the official layers."""

from slotlab.nn.invariant_slot_attention import InvariantSlotAttention
from slotlab.nn.layers import (
    Conv2dSame,
    ConvTranspose2dSame,
    SoftPositionEmbed,
    build_grid,
    same_padding,
)
from slotlab.nn.locality import LocalityBias
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionOutput
from slotlab.nn.slot_init import GaussianSlots, LearnedSlots, make_slot_init

__all__ = [
    "Conv2dSame",
    "ConvTranspose2dSame",
    "GaussianSlots",
    "InvariantSlotAttention",
    "LearnedSlots",
    "LocalityBias",
    "SlotAttention",
    "SlotAttentionOutput",
    "SoftPositionEmbed",
    "build_grid",
    "make_slot_init",
    "same_padding",
]
