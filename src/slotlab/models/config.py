"""The model families' configurations: one frozen dataclass each, saved with every model.

Defaults are the official models (object discovery: CLEVR6 at 128x128; set prediction: CLEVR at
128x128). A preset's `model:` mapping, a run's `config.yaml` and a model directory's
`config.json` are these dataclasses written out; adding an option is one field here plus its use
in the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from slotlab.schema import option

SlotInit = Literal["gaussian", "learned"]


def _positive(config: object, *names: str) -> None:
    for name in names:
        value = getattr(config, name)
        values = value if isinstance(value, tuple) else (value,)
        if any(v < 1 for v in values):
            raise ValueError(f"{name} must be >= 1, got {value}")


@dataclass(frozen=True)
class SlotAttentionConfig:
    """What both model families share: the encoder and Slot Attention."""

    resolution: tuple[int, int] = option((128, 128), "input (H, W)")
    num_slots: int = option(7, "K, the number of slots")
    num_iterations: int = option(3, "T, Slot Attention iterations")
    test_iterations: int | None = option(
        None, "Slot Attention iterations in eval mode (default: num_iterations)")
    num_channels: int = option(3, "image channels")
    slot_size: int = option(64, "D, the slot size")
    mlp_hidden_size: int = option(128, "hidden width of Slot Attention's residual MLP")
    encoder_channels: tuple[int, ...] = option((64, 64, 64, 64), "encoder conv channels")
    encoder_strides: tuple[int, ...] = option((1, 1, 1, 1), "encoder conv strides")
    encoder_kernel_size: int = option(5, "encoder conv kernel size")
    epsilon: float = option(1e-8, "added to the attention before the weighted mean")
    slot_init: SlotInit = option(
        "gaussian", "initial slots: gaussian (official) or learned (BO-QSA queries)")
    implicit_differentiation: bool = option(
        False, "detach the slots before the last iteration (Chang et al. 2022)")

    def __post_init__(self) -> None:
        _positive(self, "resolution", "num_slots", "num_iterations", "num_channels",
                  "slot_size", "mlp_hidden_size", "encoder_channels", "encoder_strides",
                  "encoder_kernel_size")
        if self.test_iterations is not None:
            _positive(self, "test_iterations")
        if len(self.encoder_channels) != len(self.encoder_strides):
            raise ValueError(f"encoder_channels {self.encoder_channels} and encoder_strides "
                             f"{self.encoder_strides} must have the same length")

    @property
    def feature_size(self) -> tuple[int, int]:
        """(h', w') of the encoder's feature map (TF "SAME": ceil(size / stride) per layer)."""
        size = list(self.resolution)
        for s in self.encoder_strides:
            size = [-(-n // s) for n in size]
        return size[0], size[1]


@dataclass(frozen=True)
class ObjectDiscoveryConfig(SlotAttentionConfig):
    """The Slot Attention autoencoder (paper section 3, `SlotAttentionAutoEncoder`)."""

    decoder_initial_size: tuple[int, int] | None = option(
        None, "(h, w) each slot is broadcast to (default: resolution / decoder strides)")
    decoder_channels: tuple[int, ...] = option(
        (64, 64, 64, 64, 64), "decoder transposed-conv channels")
    decoder_strides: tuple[int, ...] = option((2, 2, 2, 2, 1), "decoder strides")
    decoder_kernel_size: int = option(5, "decoder kernel size (the last layer is 3x3)")
    invariant: bool = option(
        False, "Invariant Slot Attention: slot-centric position and scale frames (Biza et al.)")
    mask_attention: bool = option(
        False, "add the final slots' attention logits to the decoder's mask logits")
    attention_locality: bool = option(
        False, "a learned-width locality term in the attention logits from the 2nd iteration")

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.decoder_channels) != len(self.decoder_strides):
            raise ValueError(f"decoder_channels {self.decoder_channels} and decoder_strides "
                             f"{self.decoder_strides} must have the same length")
        _positive(self, "decoder_channels", "decoder_strides", "decoder_kernel_size")
        up = math.prod(self.decoder_strides)
        h, w = self.initial_size
        if (h * up, w * up) != tuple(self.resolution):
            raise ValueError(f"decoder_initial_size {self.decoder_initial_size} x strides "
                             f"{self.decoder_strides} does not give the resolution "
                             f"{self.resolution}")
        if self.attention_locality and self.invariant:
            raise ValueError("attention_locality is for the paper's Slot Attention: Invariant "
                             "Slot Attention has its own slot positions (invariant: false)")

    @property
    def initial_size(self) -> tuple[int, int]:
        """The decoder's broadcast size (official: 128 / 2**4 = 8)."""
        if self.decoder_initial_size is not None:
            return self.decoder_initial_size
        up = math.prod(self.decoder_strides)
        return self.resolution[0] // up, self.resolution[1] // up


@dataclass(frozen=True)
class SetPredictionConfig(SlotAttentionConfig):
    """Slot Attention with a per-slot MLP classifier (paper section 3,
    `SlotAttentionClassifier`)."""

    num_slots: int = option(10, "K, the number of slots")
    encoder_strides: tuple[int, ...] = option((1, 2, 2, 1), "encoder conv strides")
    classifier_hidden_size: int = option(64, "hidden width of the per-slot classifier")
    output_size: int = option(19, "outputs per slot (coords 3, size 2, material 2, shape 3, "
                                  "colour 8, objectness 1)")

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "classifier_hidden_size", "output_size")


ModelConfig = ObjectDiscoveryConfig | SetPredictionConfig
