"""The model families' configurations: one frozen dataclass each, saved with every model.

Defaults are the official models (object discovery: CLEVR6 at 128x128; set prediction: CLEVR at
128x128; video: SAVi-S at 64x64). A preset's `model:` mapping, a run's `config.yaml` and a model
directory's `config.json` are these dataclasses written out; adding an option is one field here
plus its use in the model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from slotlab.schema import option

SlotInit = Literal["gaussian", "learned"]

# Options removed from the models, with the value that gives today's model: a saved config
# holding that value still loads (the key is dropped), any other value is refused by name.
RETIRED_OPTIONS = {"object_discovery": {"bounded_colours": False}}


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
    test_slots: int | None = option(
        None, "slots in eval mode (Gaussian initial slots only; default: num_slots)")
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
        for name in ("test_iterations", "test_slots"):
            if getattr(self, name) is not None:
                _positive(self, name)
        if self.test_slots not in (None, self.num_slots) and self.slot_init == "learned":
            raise ValueError(f"test_slots {self.test_slots} needs Gaussian initial slots: "
                             f"slot_init learned fixes K = {self.num_slots}")
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
    locality_width: float = option(
        0.5, "the locality term's starting width s (image coordinates in [-1, 1]; learned)")
    locality_area: float = option(
        0.0, "each slot's locality width grows with the area A_k its attention covers: "
        "s_k^2 = s^2 + c A_k / (2 pi) (0: one width for all)")
    duplicate_overlap: float = option(
        0.0, "from the 2nd iteration, of two slots whose attention overlaps by more than this "
        "fraction the weaker is switched off (0: off)")
    duplicate_group: float = option(
        0.0, "in the duplicate rule, slots whose attention maps have a cosine similarity above "
        "this count as one group, and s of them sharing an object evenly overlap by 1 instead "
        "of 2/s (0: off; needs duplicate_overlap)")

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
        if not self.locality_width > 0:
            raise ValueError(f"locality_width must be > 0, got {self.locality_width}")
        if self.locality_area < 0:
            raise ValueError(f"locality_area must be >= 0 (0: off), got {self.locality_area}")
        if self.locality_area and not self.attention_locality:
            raise ValueError("locality_area widens the locality term: it needs "
                             "attention_locality: true")
        if not 0.0 <= self.duplicate_overlap <= 1.0:
            raise ValueError(f"duplicate_overlap must be in [0, 1] (0: off), got "
                             f"{self.duplicate_overlap}")
        if not 0.0 <= self.duplicate_group < 1.0:
            raise ValueError(f"duplicate_group must be in [0, 1) (0: off), got "
                             f"{self.duplicate_group}")
        if self.duplicate_group and not self.duplicate_overlap:
            raise ValueError("duplicate_group refines the duplicate rule: it needs "
                             "duplicate_overlap > 0")
        if self.duplicate_overlap and self.invariant:
            raise ValueError("duplicate_overlap is for the paper's Slot Attention, not with "
                             "invariant: true")

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


SAViInitializer = Literal["boxes", "points", "learned", "gaussian"]
SAViTarget = Literal["flow", "frames"]


@dataclass(frozen=True)
class SAViConfig:
    """SAVi (Kipf et al. 2022, "Conditional Object-Centric Learning from Video"): a frame
    encoder, Slot Attention as corrector, a transformer predictor and a spatial-broadcast decoder,
    scanned over the frames (`slotlab.models.savi`).

    Defaults are the official SAVi-S (`savi_conditional_small.py`) at its published resolution:
    MOVi videos resized to 64x64, 24 slots (23 first-frame boxes + the background box), slot size
    128, a 4-layer CNN encoder of 32 channels, one Slot Attention iteration, a 4-head transformer
    predictor and a decoder broadcasting each slot to 8x8, trained to reconstruct optical flow
    (3 channels: the flow as an RGB image). The decoder's stride-2 layers are transposed
    convolutions, its stride-1 layers plain ones (as the official `layer_transpose`).
    """

    resolution: tuple[int, int] = option((64, 64), "input frame (H, W)")
    num_slots: int = option(
        24, "K, the number of slots (boxes/points: one per conditioning object + background)")
    slot_size: int = option(128, "D, the slot size (also the attention's q/k/v size)")
    num_iterations: int = option(1, "Slot Attention iterations per frame (the corrector)")
    num_channels: int = option(3, "video channels")
    encoder_channels: tuple[int, ...] = option((32, 32, 32, 32), "encoder conv channels")
    encoder_kernel_size: int = option(5, "encoder conv kernel size (stride 1, 'SAME')")
    encoder_mlp_hidden_size: int = option(64, "hidden width of the encoder's output MLP")
    initializer: SAViInitializer = option(
        "boxes", "initial slots: boxes or points of the first frame (conditional, official), "
        "learned (one learned vector per slot) or gaussian (N(0, 1) noise)")
    initializer_hidden_size: int = option(256, "hidden width of the boxes/points MLP")
    predictor_heads: int = option(4, "attention heads of the transformer predictor")
    predictor_mlp_size: int = option(256, "hidden width of the predictor's MLP")
    decoder_channels: tuple[int, ...] = option((64, 64, 64, 64), "decoder conv channels")
    decoder_strides: tuple[int, ...] = option(
        (2, 2, 2, 1), "decoder strides (stride > 1: transposed conv)")
    decoder_kernel_size: int = option(5, "decoder kernel size")
    target: SAViTarget = option("flow", "what the decoder reconstructs: flow or frames")
    target_channels: int = option(3, "channels of the target (flow as RGB: 3; frames: 3)")
    epsilon: float = option(1e-8, "added to the attention before the weighted mean")
    mask_attention: bool = option(
        False, "not the paper's: each slot's alpha logits also get its attention logits over "
        "the frame's pixels (the corrected slots against the frame's encoded inputs)")
    skip_absent: bool = option(
        False, "not the paper's (boxes/points only): a slot whose first-frame box or point is "
        "empty (an absent object, not the background) is switched off: no share in the "
        "corrector's softmax over slots, the predictor's attention or the decoder's masks")
    box_attention: float = option(
        0.0, "not the paper's (boxes only): in the first frame, a box slot's attention logits "
        "are lowered by this much at the pixels outside its box, the background slot's at those "
        "inside any box (0: off)")

    def __post_init__(self) -> None:
        if self.skip_absent and self.initializer not in ("boxes", "points"):
            raise ValueError(f"skip_absent needs the boxes or points initializer (absent objects "
                             f"are empty boxes), not {self.initializer!r}")
        if self.box_attention and self.initializer != "boxes":
            raise ValueError(f"box_attention needs the boxes initializer, not "
                             f"{self.initializer!r}")
        if self.box_attention < 0:
            raise ValueError(f"box_attention must be >= 0 (a penalty), got {self.box_attention}")
        _positive(self, "resolution", "num_slots", "slot_size", "num_iterations", "num_channels",
                  "encoder_channels", "encoder_kernel_size", "encoder_mlp_hidden_size",
                  "initializer_hidden_size", "predictor_heads", "predictor_mlp_size",
                  "decoder_channels", "decoder_strides", "decoder_kernel_size",
                  "target_channels")
        if len(self.decoder_channels) != len(self.decoder_strides):
            raise ValueError(f"decoder_channels {self.decoder_channels} and decoder_strides "
                             f"{self.decoder_strides} must have the same length")
        if self.slot_size % self.predictor_heads:
            raise ValueError(f"slot_size {self.slot_size} is not divisible by predictor_heads "
                             f"{self.predictor_heads}")
        up = math.prod(self.decoder_strides)
        if any(n % up for n in self.resolution):
            raise ValueError(f"resolution {self.resolution} is not divisible by the decoder's "
                             f"upsampling {up} (product of decoder_strides)")

    @property
    def decoder_initial_size(self) -> tuple[int, int]:
        """(h, w) each slot is broadcast to: resolution / prod(decoder_strides) (SAVi-S: 8x8)."""
        up = math.prod(self.decoder_strides)
        return self.resolution[0] // up, self.resolution[1] // up


ModelConfig = ObjectDiscoveryConfig | SetPredictionConfig | SAViConfig
