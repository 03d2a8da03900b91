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

import torch
from torch import nn

from slotlab.models.object_discovery import conv_encoder, encode
from slotlab.nn.layers import SoftPositionEmbed, dense, layer_norm
from slotlab.nn.slot_attention import SlotAttention


@dataclass
class SetPredictionOutput:
    """Outputs of `SlotAttentionSetPredictor`."""

    predictions: torch.Tensor  # [B, K, 19], sigmoid outputs
    logits: torch.Tensor  # [B, K, 19], the same before the sigmoid
    slots: torch.Tensor  # [B, K, D]
    attention: torch.Tensor  # [B, K, N] last iteration, softmax over slots
    attention_per_iteration: list[torch.Tensor] | None = None


class SlotAttentionSetPredictor(nn.Module):
    """Slot Attention set-prediction model (official defaults: 128x128, 10 slots, 3 iterations).

    `test_iterations` (not the paper's; None: `num_iterations`): Slot Attention iterations in
    eval mode. More than in training let slots that share objects settle them, and each slot's
    properties then come from one object.
    """

    def __init__(
        self,
        resolution: tuple[int, int] = (128, 128),
        num_slots: int = 10,
        num_iterations: int = 3,
        num_channels: int = 3,
        slot_size: int = 64,
        mlp_hidden_size: int = 128,
        encoder_channels: tuple[int, ...] = (64, 64, 64, 64),
        encoder_strides: tuple[int, ...] = (1, 2, 2, 1),
        encoder_kernel_size: int = 5,
        classifier_hidden_size: int = 64,
        output_size: int = 19,
        epsilon: float = 1e-8,
        implicit_differentiation: bool = False,
        slot_init: str = "gaussian",
        test_iterations: int | None = None,
    ):
        super().__init__()
        resolution = tuple(resolution)
        self.config = dict(
            resolution=list(resolution), num_slots=num_slots, num_iterations=num_iterations,
            num_channels=num_channels, slot_size=slot_size, mlp_hidden_size=mlp_hidden_size,
            encoder_channels=list(encoder_channels), encoder_strides=list(encoder_strides),
            encoder_kernel_size=encoder_kernel_size,
            classifier_hidden_size=classifier_hidden_size, output_size=output_size,
            epsilon=epsilon, implicit_differentiation=implicit_differentiation,
            slot_init=slot_init,
        )
        if test_iterations is not None:
            self.config["test_iterations"] = test_iterations
        self.resolution = resolution
        self.num_slots = num_slots
        scale = 1
        for s in encoder_strides:
            scale *= s
        feature_size = (-(-resolution[0] // scale), -(-resolution[1] // scale))
        hidden = encoder_channels[-1]

        self.encoder_cnn = conv_encoder(
            num_channels, tuple(encoder_channels), encoder_kernel_size, tuple(encoder_strides)
        )
        self.encoder_pos = SoftPositionEmbed(hidden, feature_size)
        self.layer_norm = layer_norm(hidden)
        self.mlp = nn.Sequential(dense(hidden, slot_size), nn.ReLU(), dense(slot_size, slot_size))
        self.slot_attention = SlotAttention(
            num_slots=num_slots, num_iterations=num_iterations, slot_size=slot_size,
            mlp_hidden_size=mlp_hidden_size, epsilon=epsilon, input_size=slot_size,
            implicit_differentiation=implicit_differentiation, slot_init=slot_init,
            test_iterations=test_iterations,
        )
        self.mlp_classifier = nn.Sequential(
            dense(slot_size, classifier_hidden_size), nn.ReLU(),
            dense(classifier_hidden_size, output_size),
        )  # logits; the sigmoid is applied in forward

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W] -> Slot Attention inputs [B, N, D]."""
        return encode(image, self.encoder_cnn, self.encoder_pos, self.layer_norm, self.mlp)

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
        sa = self.slot_attention(
            self.encode(image), slots=slots, noise=noise, num_slots=num_slots,
            return_all_attention=return_all_attention, num_iterations=num_iterations,
        )
        logits = self.mlp_classifier(sa[0])  # [B, K, 19]
        return SetPredictionOutput(
            predictions=torch.sigmoid(logits), logits=logits, slots=sa[0], attention=sa[1],
            attention_per_iteration=sa[2] if return_all_attention else None,
        )
