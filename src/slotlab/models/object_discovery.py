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
decoder_initial_size=resolution, slot_size=64` (see `slotlab.models.presets`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from slotlab.nn.layers import (
    Conv2dSame,
    ConvTranspose2dSame,
    SoftPositionEmbed,
    dense,
    layer_norm,
    same_padding,
)
from slotlab.nn.slot_attention import (
    InvariantSlotAttention,
    SlotAttention,
    grid_from_axes,
    pixel_coordinates,
    relative_grid,
)


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
    """Encoder CNN: conv layers (ReLU applied in `encode`); returns the layers."""
    layers, c_in = [], num_channels
    for c_out, s in zip(channels, strides, strict=True):
        layers.append(Conv2dSame(c_in, c_out, kernel_size, s))
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
        x = F.relu(conv(x))
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


def config_cell_pixels(config: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """`encoder_cell_pixels` of a model's `config` (where its attention's N positions sit)."""
    return encoder_cell_pixels(tuple(config["resolution"]), int(config["encoder_kernel_size"]),
                               tuple(config["encoder_strides"]))


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


def fourier_features(rel: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """Slot-relative coordinates [..., 2] -> [..., 2 + 4F]: the coordinates, then sin and cos of
    w_i * coordinates for w_i = pi * 2 ** (i - 1), i < F (periods 4, 2, 1, ... in the slot's
    frame, where an object spans about [-2, 2]). F = 0 gives the coordinates alone."""
    if num_frequencies == 0:
        return rel
    w = torch.pi * 2.0 ** torch.arange(-1, num_frequencies - 1, device=rel.device,
                                       dtype=rel.dtype)  # [F]
    angles = (rel[..., None, :] * w[:, None]).flatten(-2)  # [..., 2F]: (x, y) per frequency
    return torch.cat([rel, torch.sin(angles), torch.cos(angles)], dim=-1)


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
    """Slot Attention autoencoder for object discovery.

    Args:
        resolution: input (H, W).
        num_slots: K.
        num_iterations: T.
        num_channels: image channels (3).
        slot_size: D.
        mlp_hidden_size: hidden width of the slot MLP inside Slot Attention.
        encoder_channels: output channels of each encoder conv (kernel `encoder_kernel_size`).
        encoder_strides: stride of each encoder conv.
        decoder_initial_size: (h, w) each slot is broadcast to; None = resolution / the product
            of the decoder strides (8x8 for the official model).
        decoder_channels: channels of the hidden decoder layers (5x5, ReLU).
        decoder_strides: stride of each hidden decoder layer; a last 3x3 layer outputs RGB + alpha.
        epsilon: Slot Attention's epsilon.
        implicit_differentiation, slot_init: Slot Attention variants (see `SlotAttention`).
        invariant: Invariant Slot Attention (ISA-TS, Biza et al. 2023): no absolute position
            embedding; each slot has a position and scale, the attention sees the inputs and the
            decoder draws the slot in that slot-centric frame (`InvariantSlotAttention`).
        decoder_first_kernel_size: kernel of the first decoder layer (default
            `decoder_kernel_size`). Its input is a broadcast slot plus a position code that is
            linear in the coordinates, so a 1x1 kernel spans nearly the same functions as a 3x3
            or 5x5 one (they differ at the image border) at a fraction of the cost.
        decoder_frequencies: invariant model only: F > 0 adds sin/cos of the slot-relative
            coordinates at F frequencies to the decoder's position code (`fourier_features`),
            so that sharp shapes are easier to draw; 0 = the coordinates alone (ISA).
        decoder_slot_directions: invariant model only: the decoder's position code also gets a
            term that the slot sets, rel @ M(slot) with M a linear map from the slot to a
            [2 + 4F, D] matrix. In the plain (additive) spatial broadcast every first-layer unit
            sees slot + P rel, a half-plane whose orientation P is the same for every slot, so an
            object at another rotation can only be drawn by combining fixed edge directions
            (rotated triangles come out as blobs); with M(slot) the edges turn with the object.
        mask_attention: add to each slot's decoder mask logits the attention logits of the
            final slots over the encoder's cells, k(inputs) . q(slots) / sqrt(D) (in the slot's
            frame for the invariant model), placed on the pixels by `cells_to_pixels`. The masks
            then see the input directly: a pixel goes to the slot whose key it matches, and the
            decoder only has to draw each slot's colours, not its outline. Not the paper's model
            (off by default): the reconstruction can route each pixel to any of the K slots'
            colours, so the slots need encode less of the object's shape.
        test_iterations: Slot Attention iterations in eval mode (None: `num_iterations`); more
            than in training let slots that share an object settle which one holds it.
        attention_locality: the paper's Slot Attention with a locality term in its logits from
            the second iteration on, -|x_n - mu_k|^2 / (2 s^2) (`SlotAttention`'s
            `locality_grid`; positions on the encoder's cell centres). Not the paper's model.
    """

    def __init__(
        self,
        resolution: tuple[int, int] = (128, 128),
        num_slots: int = 7,
        num_iterations: int = 3,
        num_channels: int = 3,
        slot_size: int = 64,
        mlp_hidden_size: int = 128,
        encoder_channels: tuple[int, ...] = (64, 64, 64, 64),
        encoder_strides: tuple[int, ...] = (1, 1, 1, 1),
        encoder_kernel_size: int = 5,
        decoder_initial_size: tuple[int, int] | None = None,
        decoder_channels: tuple[int, ...] = (64, 64, 64, 64, 64),
        decoder_strides: tuple[int, ...] = (2, 2, 2, 2, 1),
        decoder_kernel_size: int = 5,
        epsilon: float = 1e-8,
        implicit_differentiation: bool = False,
        slot_init: str = "gaussian",
        invariant: bool = False,
        decoder_frequencies: int = 0,
        decoder_first_kernel_size: int | None = None,
        decoder_slot_directions: bool = False,
        mask_attention: bool = False,
        test_iterations: int | None = None,
        attention_locality: bool = False,
    ):
        super().__init__()
        resolution = tuple(resolution)
        up = 1
        for s in decoder_strides:
            up *= s
        if decoder_initial_size is None:  # official: 128 / 2**4 = 8
            decoder_initial_size = (resolution[0] // up, resolution[1] // up)
        decoder_initial_size = tuple(decoder_initial_size)
        self.config = dict(
            resolution=list(resolution), num_slots=num_slots, num_iterations=num_iterations,
            num_channels=num_channels, slot_size=slot_size, mlp_hidden_size=mlp_hidden_size,
            encoder_channels=list(encoder_channels), encoder_strides=list(encoder_strides),
            encoder_kernel_size=encoder_kernel_size,
            decoder_initial_size=list(decoder_initial_size),
            decoder_channels=list(decoder_channels), decoder_strides=list(decoder_strides),
            decoder_kernel_size=decoder_kernel_size, epsilon=epsilon,
            implicit_differentiation=implicit_differentiation, slot_init=slot_init,
        )
        if decoder_frequencies and not invariant:
            raise ValueError("decoder_frequencies needs the invariant model (invariant: true)")
        if decoder_slot_directions and not invariant:
            raise ValueError("decoder_slot_directions needs the invariant model (invariant: true)")
        if invariant:
            self.config["invariant"] = True
        if decoder_frequencies:
            self.config["decoder_frequencies"] = decoder_frequencies
        if decoder_first_kernel_size is not None:
            self.config["decoder_first_kernel_size"] = decoder_first_kernel_size
        if decoder_slot_directions:
            self.config["decoder_slot_directions"] = True
        if mask_attention:
            self.config["mask_attention"] = True
        if test_iterations is not None:
            self.config["test_iterations"] = test_iterations
        if attention_locality and invariant:
            raise ValueError("attention_locality is for the paper's Slot Attention: Invariant "
                             "Slot Attention has its own slot positions (invariant: false)")
        if attention_locality:
            self.config["attention_locality"] = True
        self.mask_attention = mask_attention
        self.invariant = invariant
        self.decoder_frequencies = decoder_frequencies
        self.resolution = resolution
        self.num_slots = num_slots
        self.num_channels = num_channels
        self.decoder_initial_size = decoder_initial_size

        scale = 1
        for s in encoder_strides:
            scale *= s
        # TF "SAME": each stride-s convolution gives ceil(size / s)
        feature_size = (-(-resolution[0] // scale), -(-resolution[1] // scale))
        if (decoder_initial_size[0] * up, decoder_initial_size[1] * up) != resolution:
            raise ValueError(
                f"decoder_initial_size {decoder_initial_size} x strides {decoder_strides} "
                f"does not give the resolution {resolution}"
            )
        hidden = encoder_channels[-1]
        self.feature_size = feature_size
        self.cell_pixels = encoder_cell_pixels(
            resolution, encoder_kernel_size, tuple(encoder_strides))

        self.encoder_cnn = conv_encoder(
            num_channels, tuple(encoder_channels), encoder_kernel_size, tuple(encoder_strides)
        )
        self.encoder_pos = None if invariant else SoftPositionEmbed(hidden, feature_size)
        self.layer_norm = layer_norm(hidden)
        self.mlp = nn.Sequential(dense(hidden, slot_size), nn.ReLU(), dense(slot_size, slot_size))
        sa_args = dict(
            num_slots=num_slots, num_iterations=num_iterations, slot_size=slot_size,
            mlp_hidden_size=mlp_hidden_size, epsilon=epsilon, input_size=slot_size,
            implicit_differentiation=implicit_differentiation, slot_init=slot_init,
            test_iterations=test_iterations,
        )
        if invariant:
            grid = encoder_cell_centres(resolution, encoder_kernel_size, tuple(encoder_strides))
            self.slot_attention = InvariantSlotAttention(
                grid_size=feature_size, grid=grid, **sa_args)
            # the decoder's position code: slot-relative coordinates (and their Fourier
            # features), projected to D
            self.decoder_pos = dense(2 + 4 * decoder_frequencies, slot_size)
            # M(slot): the slot's own directions for the position code, [2 + 4F, D] per slot
            self.decoder_directions = (
                dense(slot_size, (2 + 4 * decoder_frequencies) * slot_size)
                if decoder_slot_directions else None)
            self.register_buffer(
                "decoder_grid", decoder_cell_centres(resolution, decoder_initial_size),
                persistent=False)
        else:
            if attention_locality:
                sa_args.update(locality_grid=feature_size, grid=encoder_cell_centres(
                    resolution, encoder_kernel_size, tuple(encoder_strides)))
            self.slot_attention = SlotAttention(**sa_args)
            self.decoder_pos = SoftPositionEmbed(slot_size, decoder_initial_size)
            self.decoder_directions = None
        layers, c_in = [], slot_size
        for i, (c_out, s) in enumerate(zip(decoder_channels, decoder_strides, strict=True)):
            kernel = decoder_kernel_size
            if i == 0 and decoder_first_kernel_size is not None:
                kernel = decoder_first_kernel_size
            layers.append(ConvTranspose2dSame(c_in, c_out, kernel, s))
            c_in = c_out
        layers.append(ConvTranspose2dSame(c_in, num_channels + 1, 3, 1))
        self.decoder_cnn = nn.ModuleList(layers)

    def pad_last_layer(self, channels: int) -> None:
        """Speed option: compute the narrow last decoder layer (C+1 = 4 outputs) padded to
        `channels` outputs (8 suits GPU tensor cores; 0 = off). Outputs are unchanged."""
        self.decoder_cnn[-1].pad_out_channels = channels

    def encode(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, C, H, W] -> Slot Attention inputs [B, N, D]."""
        return encode(image, self.encoder_cnn, self.encoder_pos, self.layer_norm, self.mlp)

    def decode(
        self, slots: torch.Tensor, positions: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [B, K, D] (and for the invariant model their positions and scales [B, K, 2])
        -> recons [B, K, C, H, W], mask logits [B, K, 1, H, W]."""
        b, k, d = slots.shape
        h, w = self.decoder_initial_size
        x = slots.reshape(b * k, d, 1, 1).expand(b * k, d, h, w)  # spatial broadcast
        if self.invariant:  # position code in each slot's frame: (grid - S_p) / S_s
            rel = relative_grid(self.decoder_grid, positions, scales)  # [B, K, h*w, 2]
            rel = fourier_features(rel.reshape(b * k, h * w, 2), self.decoder_frequencies)
            rel = rel.to(x.dtype)
            pos = self.decoder_pos(rel)  # [B*K, h*w, D]
            if self.decoder_directions is not None:  # + rel @ M(slot)
                m = self.decoder_directions(slots.reshape(b * k, d))  # [B*K, (2+4F) * D]
                pos = pos + torch.bmm(rel, m.reshape(b * k, rel.shape[-1], d).to(rel.dtype))
            x = x + pos.transpose(1, 2).reshape(b * k, d, h, w)
        else:
            x = self.decoder_pos(x)
        for layer in self.decoder_cnn[:-1]:
            x = F.relu(layer(x))
        x = self.decoder_cnn[-1](x)  # [B*K, C+1, H, W]
        x = x.reshape(b, k, *x.shape[1:])
        return x[:, :, : self.num_channels], x[:, :, self.num_channels :]

    def attention_mask_logits(
        self, inputs: torch.Tensor, slots: torch.Tensor, positions: torch.Tensor | None,
        scales: torch.Tensor | None, attention: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`mask_attention`'s term: the final slots' attention logits over the inputs [B, N, D]
        on the image's pixels, [B, K, 1, H, W] (float32). `attention` [B, K, N], the last
        iteration's, places the locality term (`attention_locality`)."""
        if self.invariant:
            logits = self.slot_attention.final_logits(inputs, slots, positions, scales)
        else:
            logits = self.slot_attention.final_logits(inputs, slots, attention)
        logits = logits.reshape(*logits.shape[:2], *self.feature_size)  # [B, K, h', w']
        if tuple(self.feature_size) != tuple(self.resolution):
            logits = cells_to_pixels(logits, self.cell_pixels, self.resolution)
        return logits[:, :, None]

    def forward(
        self,
        image: torch.Tensor,
        noise: torch.Tensor | None = None,
        num_slots: int | None = None,
        slots: torch.Tensor | None = None,
        return_all_attention: bool = False,
        num_iterations: int | None = None,
    ) -> ObjectDiscoveryOutput:
        """image [B, C, H, W] in [-1, 1]; `noise` [B, K, D] fixes the slot initialisation."""
        inputs = self.encode(image)
        sa = self.slot_attention(
            inputs, slots=slots, noise=noise, num_slots=num_slots,
            return_all_attention=return_all_attention, num_iterations=num_iterations,
        )
        slots, attention = sa[0], sa[1]
        positions, scales = (sa[3], sa[4]) if self.invariant else (None, None)
        recons, mask_logits = self.decode(slots, positions, scales)
        mask_logits = mask_logits.float()  # kept in the output (the mixture loss reads them)
        if self.mask_attention:
            mask_logits = mask_logits + self.attention_mask_logits(
                inputs, slots, positions, scales, attention)
        recons, masks, recon_combined = combine_slots(recons, mask_logits)
        return ObjectDiscoveryOutput(
            recon_combined=recon_combined, recons=recons, masks=masks, slots=slots,
            attention=attention, attention_per_iteration=sa[2] if return_all_attention else None,
            positions=positions, scales=scales, mask_logits=mask_logits,
        )
