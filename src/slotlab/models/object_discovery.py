"""Object discovery: the Slot Attention autoencoder (paper section 3; official `model.py`,
`SlotAttentionAutoEncoder`).

    image [B, 3, H, W] in [-1, 1]
      -> encoder CNN (4 x conv 5x5, ReLU) + soft position embedding     [B, C, H', W']
      -> flatten, LayerNorm, MLP (Dense ReLU, Dense)                    [B, N, C]
      -> Slot Attention                                                 [B, K, D]
      -> spatial broadcast of each slot to the decoder's initial size   [B*K, D, h, w]
         + soft position embedding
      -> decoder CNN (transposed convs, ReLU; last layer 4 channels, no activation)
      -> per slot RGB [B, K, 3, H, W] and mask logits [B, K, 1, H, W]
      -> masks = softmax over slots; recon_combined = sum_k recons * masks

Defaults are the official CLEVR model (128x128, 7 slots, 3 iterations, 64 channels, decoder from
8x8 with four stride-2 layers). The paper's smaller model for Multi-dSprites / Tetrominoes is
`encoder_channels=(32,)*4, decoder_channels=(32,)*3, decoder_strides=(1,)*3,
decoder_initial_size=resolution, slot_size=64` (the `multi-dsprites` preset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slotlab.models.config import ObjectDiscoveryConfig, SlotAttentionConfig
from slotlab.nn.duplicates import DuplicateSlots
from slotlab.nn.grid import grid_from_axes, pixel_coordinates, relative_grid
from slotlab.nn.invariant_slot_attention import InvariantSlotAttention
from slotlab.nn.layers import (
    Conv2dSame,
    ConvTranspose2dSame,
    SoftPositionEmbed,
    dense,
    layer_norm,
    same_padding,
)
from slotlab.nn.locality import LocalityBias
from slotlab.nn.slot_attention import SlotAttention, SlotAttentionOutput, off_bias
from slotlab.nn.slot_init import make_slot_init
from slotlab.schema import from_dict, to_dict


@dataclass
class ObjectDiscoveryOutput:
    """Outputs of `SlotAttentionAutoEncoder` (channels-first)."""

    recon_combined: torch.Tensor  # [B, 3, H, W]
    recons: torch.Tensor  # [B, K, 3, H, W] per-slot RGB (no activation)
    masks: torch.Tensor  # [B, K, 1, H, W] softmax over slots
    slots: torch.Tensor  # [B, K, D]
    attention: torch.Tensor  # [B, K, N] last iteration, softmax over slots
    attention_per_iteration: list[torch.Tensor] | None = None  # T x [B, K, N] if asked
    positions: torch.Tensor | None = None  # [B, K, 2] slot positions (invariant model only)
    scales: torch.Tensor | None = None  # [B, K, 2] slot scales (invariant model only)
    mask_logits: torch.Tensor | None = None  # [B, K, 1, H, W] before the softmax (float32)


def conv_encoder(
    num_channels: int, channels: tuple[int, ...], kernel_size: int, strides: tuple[int, ...]
) -> nn.ModuleList:
    """Encoder CNN: conv layers, each with its ReLU; returns the layers."""
    layers, c_in = [], num_channels
    for c_out, s in zip(channels, strides, strict=True):
        layers.append(Conv2dSame(c_in, c_out, kernel_size, s, relu=True))
        c_in = c_out
    return nn.ModuleList(layers)


def encode(
    image: torch.Tensor,
    encoder_cnn: nn.ModuleList,
    encoder_pos: SoftPositionEmbed | None,
    norm: nn.LayerNorm,
    mlp: nn.Sequential,
) -> torch.Tensor:
    """CNN + position embedding (none: Invariant Slot Attention adds positions per slot) +
    flatten + LayerNorm + MLP: [B, C, H, W] -> [B, N, D]."""
    x = image
    for conv in encoder_cnn:
        x = conv(x)
    if encoder_pos is not None:
        x = encoder_pos(x)  # [B, C, H', W']
    x = x.flatten(2).transpose(1, 2)  # [B, N, C]
    return mlp(norm(x))


def encoder_cell_pixels(
    resolution: tuple[int, int], kernel_size: int, strides: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image axis (rows, columns), the pixel on which each cell of the encoder's feature map
    is centred: the centre of its receptive field through the TF "SAME" convolutions, in pixel
    indices (0 = the first pixel's centre; float64 [h'] and [w']).

    With stride 1 these are the pixels themselves. With strides they are not an even spread: a
    32-pixel axis after one stride-2 layer (kernel 3) has its 16 cells at pixels 1, 3, ..., 31."""
    axes = []
    for size in resolution:
        # cell i of the current map is centred on input pixel a * i + b
        a, b, n = 1.0, 0.0, int(size)
        for s in strides:
            before, _ = same_padding(n, kernel_size, s)
            a, b = a * s, b + a * ((kernel_size - 1) / 2 - before)
            n = -(-n // s)
        axes.append(a * torch.arange(n, dtype=torch.float64) + b)
    return axes[0], axes[1]


def encoder_cell_centres(
    resolution: tuple[int, int], kernel_size: int, strides: tuple[int, ...]
) -> torch.Tensor:
    """`encoder_cell_pixels` in the [-1, 1] coordinates of the image's pixel grid
    (`coordinate_grid(resolution)`): [h' * w', 2].

    Invariant Slot Attention measures slot positions on this grid and the decoder draws them on
    the pixel grid, so the two must agree, or every object is drawn up to a pixel off, more the
    nearer it is to the top-left corner (an evenly spread linspace(-1, 1, h') is not this grid:
    its first cell sits a pixel inside the border)."""
    rows, cols = encoder_cell_pixels(resolution, kernel_size, strides)
    return grid_from_axes(pixel_coordinates(rows, int(resolution[0])),
                          pixel_coordinates(cols, int(resolution[1]))).float()


def config_cell_pixels(config: SlotAttentionConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """`encoder_cell_pixels` of a model's `config` (where its attention's N positions sit)."""
    return encoder_cell_pixels(config.resolution, config.encoder_kernel_size,
                               config.encoder_strides)


def resolve_config(cls: type, config: SlotAttentionConfig | None, overrides: dict) -> Any:
    """`config` (default: the official one) with `overrides`, validated (`ConfigError`)."""
    values = to_dict(config) if config is not None else {}
    return from_dict(cls, {**values, **overrides}, where=f"{cls.__name__}")


def cells_to_pixels(
    maps: torch.Tensor, cell_pixels: tuple[torch.Tensor, torch.Tensor], size: tuple[int, int]
) -> torch.Tensor:
    """Maps on the encoder's cells [..., h', w'] -> [..., H, W] on the pixels, each pixel
    interpolated linearly (per axis) between the two cells centred nearest on either side of it
    (`encoder_cell_pixels`), and equal to the outermost cell beyond the outermost centres. A pixel
    on which a cell is centred gets that cell's value exactly; weights that sum to 1 over slots
    still do."""
    weights = []
    for centres, n in zip(cell_pixels, size, strict=True):
        centres = centres.to(torch.float64)
        w = torch.zeros(int(n), len(centres), dtype=torch.float64)
        pixels = torch.arange(int(n), dtype=torch.float64)
        if len(centres) == 1:
            w[:, 0] = 1.0
        else:
            p = pixels.clamp(float(centres[0]), float(centres[-1]))
            hi = torch.searchsorted(centres, p, right=True).clamp(1, len(centres) - 1)
            t = (p - centres[hi - 1]) / (centres[hi] - centres[hi - 1])
            w[pixels.long(), hi - 1] = 1.0 - t
            w[pixels.long(), hi] += t
        weights.append(w.to(maps.dtype).to(maps.device))
    # out[..., y, x] = sum_ij Wy[y, i] maps[..., i, j] Wx[x, j]
    return weights[0] @ maps @ weights[1].T


def decoder_cell_centres(
    resolution: tuple[int, int], initial_size: tuple[int, int]
) -> torch.Tensor:
    """The decoder's initial (h, w) cells in the image's [-1, 1] pixel coordinates: each cell is
    upsampled to a block of resolution / initial_size pixels, and sits at that block's centre
    (the pixel grid itself when the decoder starts at full resolution): [h * w, 2]."""
    axes = []
    for size, n in zip(resolution, initial_size, strict=True):
        up = int(size) // int(n)
        centres = up * torch.arange(int(n), dtype=torch.float64) + (up - 1) / 2
        axes.append(pixel_coordinates(centres, int(size)))
    return grid_from_axes(*axes).float()


def combine_slots(
    recons: torch.Tensor, mask_logits: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """masks = softmax over slots of the mask logits [B, K, 1, H, W]; recon_combined =
    sum_k recons * masks [B, C, H, W]. In float32 also under bf16 autocast (the loss compares the
    combination with the image); `torch.compile` fuses the softmax and the weighted sum."""
    recons, mask_logits = recons.float(), mask_logits.float()
    masks = mask_logits.softmax(dim=1)  # over slots
    return recons, masks, (recons * masks).sum(dim=1)


class SlotAttentionAutoEncoder(nn.Module):
    """Slot Attention autoencoder for object discovery: `SlotAttentionAutoEncoder(config)` or
    `SlotAttentionAutoEncoder(resolution=(64, 64), ...)` (fields of `ObjectDiscoveryConfig`,
    which documents each option). Beyond the paper (off by default): `invariant` (Invariant Slot
    Attention: no absolute position embedding, each slot has a position and scale and the decoder
    draws it in that frame), `mask_attention` (each slot's mask logits also get its final
    attention logits over the encoder's cells, placed on the pixels by `cells_to_pixels`, so the
    masks follow the input's edges), `attention_locality` (`slotlab.nn.locality`),
    `duplicate_overlap` (`slotlab.nn.duplicates`)."""

    def __init__(self, config: ObjectDiscoveryConfig | None = None, **overrides: Any):
        super().__init__()
        config = resolve_config(ObjectDiscoveryConfig, config, overrides)
        self.config = config
        self.resolution, self.num_channels = config.resolution, config.num_channels
        self.num_slots, self.slot_size = config.num_slots, config.slot_size
        self.feature_size = config.feature_size  # [h', w'] of the encoder
        self.decoder_initial_size = config.initial_size
        self.invariant, self.mask_attention = config.invariant, config.mask_attention
        self.cell_pixels = config_cell_pixels(config)
        cell_centres = encoder_cell_centres(config.resolution, config.encoder_kernel_size,
                                            config.encoder_strides)
        hidden, d = config.encoder_channels[-1], config.slot_size

        # Encoder: CNN + soft position embedding, flatten, LayerNorm, MLP  -> [B, N, D]
        self.encoder_cnn = conv_encoder(config.num_channels, config.encoder_channels,
                                        config.encoder_kernel_size, config.encoder_strides)
        self.encoder_pos = None if config.invariant else SoftPositionEmbed(
            hidden, self.feature_size)
        self.layer_norm = layer_norm(hidden)
        self.mlp = nn.Sequential(dense(hidden, d), nn.ReLU(), dense(d, d))

        # Slot Attention: starting slots [B, K, D], then T iterations
        self.slot_init = make_slot_init(config.slot_init, config.num_slots, d)
        attention = dict(
            num_iterations=config.num_iterations, slot_size=d,
            mlp_hidden_size=config.mlp_hidden_size, input_size=d, epsilon=config.epsilon,
            test_iterations=config.test_iterations,
            implicit_differentiation=config.implicit_differentiation,
            straight_through=self.slot_init.straight_through)
        if config.invariant:
            self.slot_attention = InvariantSlotAttention(
                grid_size=self.feature_size, grid=cell_centres, num_slots=config.num_slots,
                fixed_init_positions=config.slot_init == "learned", **attention)
        else:
            bias = LocalityBias(cell_centres, config.epsilon, config.locality_width,
                                config.locality_area) if config.attention_locality else None
            duplicates = (DuplicateSlots(config.duplicate_overlap, config.duplicate_group or None)
                          if config.duplicate_overlap else None)
            self.slot_attention = SlotAttention(attention_bias=bias, duplicates=duplicates,
                                                **attention)

        # Decoder: spatial broadcast + position code, transposed convs -> RGB + mask logit
        if config.invariant:  # the position code: slot-relative coordinates, projected to D
            self.decoder_pos = dense(2, d)
            self.register_buffer("decoder_grid", decoder_cell_centres(
                config.resolution, self.decoder_initial_size), persistent=False)
        else:
            self.decoder_pos = SoftPositionEmbed(d, self.decoder_initial_size)
        layers, c_in = [], d
        for c_out, s in zip(config.decoder_channels, config.decoder_strides, strict=True):
            layers.append(ConvTranspose2dSame(c_in, c_out, config.decoder_kernel_size, s,
                                              relu=True))
            c_in = c_out
        layers.append(ConvTranspose2dSame(c_in, config.num_channels + 1, 3, 1))
        self.decoder_cnn = nn.ModuleList(layers)

    def pad_last_layer(self, channels: int) -> None:
        """Speed option: compute the narrow last decoder layer (C+1 = 4 outputs) padded to
        `channels` outputs (8 suits GPU tensor cores; 0 = off). Outputs are unchanged."""
        self.decoder_cnn[-1].pad_out_channels = channels

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W] -> Slot Attention inputs [B, N, D]."""
        return encode(image, self.encoder_cnn, self.encoder_pos, self.layer_norm, self.mlp)

    def decode(self, sa: SlotAttentionOutput) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [B, K, D] (in the invariant model's frames) -> recons [B, K, C, H, W], mask
        logits [B, K, 1, H, W]."""
        b, k, d = sa.slots.shape
        h, w = self.decoder_initial_size
        x = sa.slots.reshape(b * k, d, 1, 1).expand(b * k, d, h, w)  # spatial broadcast
        if self.invariant:  # position code in each slot's frame: (grid - S_p) / S_s
            rel = relative_grid(self.decoder_grid, sa.positions, sa.scales)  # [B, K, h*w, 2]
            pos = self.decoder_pos(rel.reshape(b * k, h * w, 2).to(x.dtype))  # [B*K, h*w, D]
            x = x + pos.transpose(1, 2).reshape(b * k, d, h, w)
        else:
            x = self.decoder_pos(x)
        for layer in self.decoder_cnn:  # ReLU after each but the last
            x = layer(x)  # last: [B*K, C+1, H, W]
        x = x.reshape(b, k, *x.shape[1:])
        return x[:, :, : self.num_channels], x[:, :, self.num_channels :]

    def attention_mask_logits(self, inputs: torch.Tensor,
                              sa: SlotAttentionOutput) -> torch.Tensor:
        """`mask_attention`'s term: the final slots' attention logits over the inputs [B, N, D]
        on the image's pixels, [B, K, 1, H, W] (float32)."""
        logits = self.slot_attention.final_logits(inputs, sa)  # [B, K, N]
        logits = logits.reshape(*logits.shape[:2], *self.feature_size)  # [B, K, h', w']
        if tuple(self.feature_size) != tuple(self.resolution):
            logits = cells_to_pixels(logits, self.cell_pixels, self.resolution)
        return logits[:, :, None]

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
    ) -> ObjectDiscoveryOutput:
        """image [B, C, H, W] in [-1, 1]; `noise` [B, K, D] fixes the slot initialisation,
        `slots` [B, K, D] replaces it."""
        inputs = self.encode(image)  # [B, N, D]
        if slots is None:
            slots = self.initial_slots(image.shape[0], num_slots, noise)  # [B, K, D]
        sa = self.slot_attention(inputs, slots, num_iterations, return_all_attention)
        recons, mask_logits = self.decode(sa)
        mask_logits = mask_logits.float()
        if self.mask_attention:  # the final logits hold SLOT_OFF for slots switched off
            mask_logits = mask_logits + self.attention_mask_logits(inputs, sa)
        elif sa.off is not None:  # duplicates switched off draw nothing
            mask_logits = mask_logits + off_bias(sa.off)[..., None, None]
        recons, masks, recon_combined = combine_slots(recons, mask_logits)
        return ObjectDiscoveryOutput(
            recon_combined=recon_combined, recons=recons, masks=masks, slots=sa.slots,
            attention=sa.attention, mask_logits=mask_logits,
            attention_per_iteration=sa.attention_per_iteration, positions=sa.positions,
            scales=sa.scales,
        )
