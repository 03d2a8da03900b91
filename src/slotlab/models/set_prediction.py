"""Set prediction: Slot Attention with a per-slot MLP classifier (paper section 3; official
`model.py`, `SlotAttentionClassifier`).

    image [B, 3, 128, 128] in [-1, 1]
      -> encoder CNN (conv 5x5 strides 1, 2, 2, 1; ReLU) + soft position embedding  [B, C, 32, 32]
      -> flatten, LayerNorm, MLP (Dense ReLU, Dense)                                [B, 1024, D]
      -> Slot Attention                                                             [B, K, D]
      -> per-slot MLP (Dense ReLU, Dense 19, sigmoid on all 19 outputs)             [B, K, 19]

The 19 outputs are: coords (3), size (2), material (2), shape (3), colour (8), objectness (1).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slotlab.models.config import SetPredictionConfig
from slotlab.models.object_discovery import conv_encoder, encode, resolve_config
from slotlab.nn.layers import SoftPositionEmbed, dense, layer_norm
from slotlab.nn.slot_attention import SlotAttention
from slotlab.nn.slot_init import make_slot_init


@dataclass
class SetPredictionOutput:
    """Outputs of `SlotAttentionSetPredictor`."""

    predictions: torch.Tensor  # [B, K, 19], sigmoid outputs
    logits: torch.Tensor  # [B, K, 19], the same before the sigmoid
    slots: torch.Tensor  # [B, K, D]
    attention: torch.Tensor  # [B, K, N] last iteration, softmax over slots
    attention_per_iteration: list[torch.Tensor] | None = None


class SlotAttentionSetPredictor(nn.Module):
    """Slot Attention set-prediction model: `SlotAttentionSetPredictor(config)` or keyword
    fields of `SetPredictionConfig` (official defaults: 128x128, 10 slots, 3 iterations).
    `test_iterations` (not the paper's): more iterations in eval mode let slots that share
    objects settle them, and each slot's properties then come from one object."""

    def __init__(self, config: SetPredictionConfig | None = None, **overrides: Any):
        super().__init__()
        config = resolve_config(SetPredictionConfig, config, overrides)
        self.config = config
        self.resolution = config.resolution
        self.num_slots, self.slot_size = config.num_slots, config.slot_size
        hidden, d = config.encoder_channels[-1], config.slot_size

        # Encoder: CNN + soft position embedding, flatten, LayerNorm, MLP  -> [B, N, D]
        self.encoder_cnn = conv_encoder(config.num_channels, config.encoder_channels,
                                        config.encoder_kernel_size, config.encoder_strides)
        self.encoder_pos = SoftPositionEmbed(hidden, config.feature_size)
        self.layer_norm = layer_norm(hidden)
        self.mlp = nn.Sequential(dense(hidden, d), nn.ReLU(), dense(d, d))

        # Slot Attention: starting slots [B, K, D], then T iterations
        self.slot_init = make_slot_init(config.slot_init, config.num_slots, d)
        self.slot_attention = SlotAttention(
            num_iterations=config.num_iterations, slot_size=d,
            mlp_hidden_size=config.mlp_hidden_size, input_size=d, epsilon=config.epsilon,
            test_iterations=config.test_iterations,
            implicit_differentiation=config.implicit_differentiation,
            straight_through=self.slot_init.straight_through)

        # Per-slot classifier: Dense ReLU, Dense (logits; the sigmoid is applied in forward)
        self.mlp_classifier = nn.Sequential(
            dense(d, config.classifier_hidden_size), nn.ReLU(),
            dense(config.classifier_hidden_size, config.output_size))

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W] -> Slot Attention inputs [B, N, D]."""
        return encode(image, self.encoder_cnn, self.encoder_pos, self.layer_norm, self.mlp)

    def initial_slots(self, batch_size: int, num_slots: int | None = None,
                      noise: torch.Tensor | None = None) -> torch.Tensor:
        """The starting slots [B, K, D]; `noise` [B, K, D] fixes the Gaussian draw."""
        if num_slots is None and noise is None and not self.training:
            num_slots = self.config.test_slots  # eval mode: `test_slots` where set
        return self.slot_init(batch_size, num_slots, noise)

    def forward(
        self,
        image: torch.Tensor,
        noise: torch.Tensor | None = None,
        num_slots: int | None = None,
        slots: torch.Tensor | None = None,
        return_all_attention: bool = False,
        num_iterations: int | None = None,
    ) -> SetPredictionOutput:
        """image [B, C, H, W] in [-1, 1] -> predictions [B, K, 19]."""
        inputs = self.encode(image)  # [B, N, D]
        if slots is None:
            slots = self.initial_slots(image.shape[0], num_slots, noise)  # [B, K, D]
        sa = self.slot_attention(inputs, slots, num_iterations, return_all_attention)
        logits = self.mlp_classifier(sa.slots)  # [B, K, 19]
        return SetPredictionOutput(
            predictions=torch.sigmoid(logits), logits=logits, slots=sa.slots,
            attention=sa.attention, attention_per_iteration=sa.attention_per_iteration,
        )
