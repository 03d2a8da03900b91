"""SAVi: Slot Attention for Video (Kipf et al., ICLR 2022, "Conditional Object-Centric Learning
from Video"), equal to the official JAX/Flax code (google-research/slot-attention-video,
`savi.modules.SAVi` built from `savi/configs/movi/savi_conditional_small.py`).

Read next to the paper (section 2, figure 2). For a video of T frames:

    video [B, T, 3, H, W] in [0, 1]
      -> frame encoder, every frame alike (paper: "encoder")                 [B, T, N, C]
           4 x (conv 5x5 'SAME', ReLU); + Dense(position grid); LayerNorm, MLP; flatten
      -> initial slots (paper: "initializer")                                 [B, K, D]
           boxes/points of the first frame + a background box (0, 0, 0, 0) in front -> MLP
           (K = M + 1), or K learned vectors, or N(0, 1) noise, or the caller's `slots`
           (options, not the paper's: `skip_absent` switches off the slots of empty boxes;
           `box_attention` lowers each box slot's first-frame logits outside its box)
      -> for t = 1..T (paper: the "corrector" then the "predictor"):
           slots_t = SlotAttention(inputs_t, starting slots)     one iteration, no MLP [B, K, D]
           predicted_t = TransformerBlock(slots_t)               post-norm, 4 heads    [B, K, D]
           the next frame starts from predicted_t
      -> decoder of every corrected slot, every frame alike                   [B, T, K, ...]
           broadcast to h x w (H / 8), + Dense(position grid), 3 x transposed conv stride 2 and
           a conv, each with ReLU; per pixel Dense -> 1 alpha logit, Dense -> C readout channels
           masks = softmax over slots of the alpha logits; target = sum_k readout * mask

The official objective (`savi/lib/losses.py`, `recon` with reduction "sum") is `savi_loss`: per
video the SUM over (T, C, H, W) of the squared error of the decoded target, then the mean over the
batch. The target is the optical flow as an RGB image (3 channels, MOVi's backward flow through
`flow_to_rgb`) or the frames themselves.

Continuation: the official evaluation runs long videos in chunks and starts each chunk from the
previous one's last predicted slots: `model(next_chunk, slots=out.predicted_slots[:, -1])`.

Flax conventions reproduced here (and mapped by `slotlab.tf_formats.flax_msgpack`): LayerNorm
epsilon 1e-6; position grids `linspace(-1, 1)` per axis, channel 0 the row (y), 1 the column (x),
stored as parameters (here persistent buffers `grid`); the flax GRUCell has no recurrent bias for
the r and z gates (PyTorch's `bias_hh[:2D]` stays 0 in converted models and only duplicates
`bias_ih`); a flax 'SAME' transposed convolution is a PyTorch one of the spatially flipped kernel,
cropped (`ConvTranspose2dSame`). The attention weights for the weighted mean are `attn + 1e-8`
renormalised (slotlab's `SlotAttention`), where the official code divides by `sum + 1e-8`; the
difference is far below float32 resolution of the outputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from slotlab.models.config import SAViConfig
from slotlab.nn.layers import Conv2dSame, ConvTranspose2dSame
from slotlab.nn.slot_attention import SLOT_OFF, SlotAttention
from slotlab.nn.slot_init import LearnedSlots
from slotlab.schema import from_dict, to_dict

__all__ = ["SAVi", "SAViOutput", "position_grid", "savi_loss"]

FLAX_LAYER_NORM_EPSILON = 1e-6


@dataclass
class SAViOutput:
    """Outputs of `SAVi` for a video of T frames (channels-first images)."""

    slots: torch.Tensor  # [B, T, K, D] after the corrector (these are decoded)
    predicted_slots: torch.Tensor  # [B, T, K, D] predictor output: frame t+1's starting slots
    attention: torch.Tensor  # [B, T, K, N] corrector attention, softmax over slots
    masks: torch.Tensor  # [B, T, K, 1, H, W] decoder alpha masks, softmax over slots
    target: torch.Tensor  # [B, T, C, H, W] decoded target: sum_k readouts * masks
    readouts: torch.Tensor  # [B, T, K, C, H, W] per-slot readout before masking
    mask_logits: torch.Tensor  # [B, T, K, 1, H, W] alpha logits (float32)
    initial_slots: torch.Tensor  # [B, K, D] the starting slots of the first frame
    slot_bias: torch.Tensor | None = None  # [B, K] 0, or SLOT_OFF for a switched-off slot

    @property
    def segmentations(self) -> torch.Tensor:
        """[B, T, H, W] int64: the slot with the largest alpha logit per pixel."""
        return self.mask_logits[:, :, :, 0].argmax(dim=2)


def savi_loss(output: SAViOutput | torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The official objective: per video the SUM of squared errors over (T, C, H, W), then the mean
    over the batch. `output` is a `SAViOutput` (its `target`) or the prediction [B, T, C, H, W];
    `target` [B, T, C, H, W] (flow as RGB, or the frames)."""
    prediction = output.target if isinstance(output, SAViOutput) else output
    if prediction.shape != target.shape:
        raise ValueError(f"prediction {tuple(prediction.shape)} and target "
                         f"{tuple(target.shape)} must have the same shape")
    error = (prediction.float() - target.float()) ** 2
    return error.flatten(1).sum(dim=1).mean()


def position_grid(size: tuple[int, int]) -> torch.Tensor:
    """The official position grid [1, h, w, 2]: linspace(-1, 1) per axis, channels (row, col)."""
    rows = torch.linspace(-1.0, 1.0, size[0])
    cols = torch.linspace(-1.0, 1.0, size[1])
    return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)[None]


# ------------------------------------------------------------------------------------------------
# Official (Flax) initialisation: lecun-normal kernels, zero biases, orthogonal GRU recurrence
# ------------------------------------------------------------------------------------------------
def _lecun_normal_(weight: torch.Tensor, fan_in: int) -> None:
    """Flax `lecun_normal`: truncated normal in +-2 std, std sqrt(1 / fan_in) / 0.8796."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        nn.init.trunc_normal_(weight, std=std, a=-2.0 * std, b=2.0 * std)


def _official_init_(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            _lecun_normal_(m.weight, m.in_features)
        elif isinstance(m, nn.ConvTranspose2d):  # weight [C_in, C_out, kh, kw]
            _lecun_normal_(m.weight, m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3])
        elif isinstance(m, nn.Conv2d):  # weight [C_out, C_in, kh, kw]
            _lecun_normal_(m.weight, m.weight[0].numel())
        elif isinstance(m, nn.GRUCell):
            d = m.hidden_size
            for gate in range(3):
                _lecun_normal_(m.weight_ih[gate * d:(gate + 1) * d], m.input_size)
                with torch.no_grad():
                    nn.init.orthogonal_(m.weight_hh[gate * d:(gate + 1) * d])
        else:
            continue
        for name in ("bias", "bias_ih", "bias_hh"):
            bias = getattr(m, name, None)
            if isinstance(bias, torch.Tensor):
                nn.init.zeros_(bias)


def _dense(in_features: int, out_features: int) -> nn.Linear:
    return nn.Linear(in_features, out_features)


def _layer_norm(size: int) -> nn.LayerNorm:
    return nn.LayerNorm(size, eps=FLAX_LAYER_NORM_EPSILON)


# ------------------------------------------------------------------------------------------------
# Encoder
# ------------------------------------------------------------------------------------------------
class FrameEncoder(nn.Module):
    """Official `FrameEncoder` (CNN backbone, `PositionEmbedding` "linear" / "project_add" with
    a pre-LayerNorm MLP as output transform, "spatial_flatten"): frames [B', 3, H, W] ->
    tokens [B', H*W, C] (row-major h * W + w)."""

    def __init__(self, config: SAViConfig):
        super().__init__()
        layers, c_in = [], config.num_channels
        for c_out in config.encoder_channels:
            layers.append(Conv2dSame(c_in, c_out, config.encoder_kernel_size, 1, relu=True))
            c_in = c_out
        self.cnn = nn.ModuleList(layers)
        self.register_buffer("grid", position_grid(config.resolution))  # [1, H, W, 2]
        self.position = _dense(2, c_in)
        self.norm = _layer_norm(c_in)
        self.mlp = nn.Sequential(_dense(c_in, config.encoder_mlp_hidden_size), nn.ReLU(),
                                 _dense(config.encoder_mlp_hidden_size, c_in))

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        """The CNN: [B', 3, H, W] -> [B', C, H, W] (after the last ReLU)."""
        x = frames
        for conv in self.cnn:
            x = conv(x)
        return x

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = self.features(frames).permute(0, 2, 3, 1)  # [B', H, W, C]
        x = x + self.position(self.grid.to(x.dtype))  # + Dense(grid) [1, H, W, C]
        x = self.mlp(self.norm(x))  # LayerNorm -> Dense -> ReLU -> Dense (no residual)
        return x.flatten(1, 2)  # [B', H*W, C]


# ------------------------------------------------------------------------------------------------
# Initialisers: the first frame's starting slots [B, K, D]
# ------------------------------------------------------------------------------------------------
class CoordinateInitializer(nn.Module):
    """Official `CoordinateEncoderStateInit` (prepend_background=True): coordinates of the first
    frame [B, M, c] (boxes c = 4: ymin, xmin, ymax, xmax; points c = 2: y, x; in [0, 1]) ->
    a zero background entry in front -> MLP (Dense, ReLU, Dense) -> slots [B, M + 1, D].
    (Official points are the boxes' centres computed after prepending, so the background point
    is (0, 0) like the background box.)"""

    def __init__(self, coordinates: int, hidden_size: int, slot_size: int):
        super().__init__()
        self.coordinates = coordinates
        self.mlp = nn.Sequential(_dense(coordinates, hidden_size), nn.ReLU(),
                                 _dense(hidden_size, slot_size))

    def forward(self, coordinates: torch.Tensor) -> torch.Tensor:
        background = coordinates.new_zeros(coordinates.shape[0], 1, coordinates.shape[2])
        return self.mlp(torch.cat([background, coordinates], dim=1))  # [B, M + 1, D]


class GaussianInitializer(nn.Module):
    """Official `GaussianStateInit`: N(0, 1) noise [B, K, D], no parameters."""

    def __init__(self, num_slots: int, slot_size: int):
        super().__init__()
        self.num_slots, self.slot_size = num_slots, slot_size

    def forward(self, batch_size: int, device: torch.device | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(batch_size, self.num_slots, self.slot_size, device=device,
                           generator=generator)


def box_logits(boxes: torch.Tensor, resolution: tuple[int, int], penalty: float) -> torch.Tensor:
    """`box_attention`: first-frame boxes [B, M, 4] (ymin, xmin, ymax, xmax) in [0, 1] -> a term
    [B, M + 1, H * W] for the corrector's logits: for a box slot -penalty at the pixels whose
    centre lies outside its box, for the background slot (first) -penalty at those inside any
    box; 0 elsewhere. (An empty box (0, 0, 0, 0) holds no pixel centre.)"""
    h, w = resolution
    y = (torch.arange(h, device=boxes.device, dtype=torch.float32) + 0.5) / h  # pixel centres
    x = (torch.arange(w, device=boxes.device, dtype=torch.float32) + 0.5) / w
    b = boxes.float()[..., None, None]  # [B, M, 4, 1, 1]
    inside = ((y[:, None] >= b[:, :, 0]) & (y[:, None] <= b[:, :, 2]) &
              (x[None, :] >= b[:, :, 1]) & (x[None, :] <= b[:, :, 3]))  # [B, M, H, W]
    inside = inside.flatten(2).float()  # [B, M, N]
    background = -inside.amax(dim=1, keepdim=True)  # [B, 1, N]
    return torch.cat([background, inside - 1.0], dim=1) * penalty  # [B, M + 1, N]


# ------------------------------------------------------------------------------------------------
# Predictor
# ------------------------------------------------------------------------------------------------
class TransformerBlock(nn.Module):
    """Official `TransformerBlock` without cross-attention, post-norm: slots [B, K, D] ->
    x = LayerNorm(MHSA(s) + s); LayerNorm(MLP(x) + x). MHSA is flax's
    `MultiHeadDotProductAttention` (q, k, v with biases, H heads of D / H; q / sqrt(D / H);
    softmax over keys; output projection with bias)."""

    def __init__(self, size: int, num_heads: int, mlp_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.query, self.key, self.value = _dense(size, size), _dense(size, size), _dense(size,
                                                                                           size)
        self.out = _dense(size, size)
        self.norm_attention = _layer_norm(size)
        self.mlp = nn.Sequential(_dense(size, mlp_size), nn.ReLU(), _dense(mlp_size, size))
        self.norm_mlp = _layer_norm(size)

    def attend(self, x: torch.Tensor, key_bias: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Self-attention of x [B, K, D] (`key_bias` [B, K] added to the logits of every query
        for key k) -> (output [B, K, D], weights [B, heads, K, K])."""
        b, k, d = x.shape
        h = self.num_heads
        head = d // h

        def split(y: torch.Tensor) -> torch.Tensor:  # [B, K, D] -> [B, heads, K, D / heads]
            return y.reshape(b, k, h, head).transpose(1, 2)

        q = split(self.query(x)) / math.sqrt(head)
        logits = q @ split(self.key(x)).transpose(-1, -2)  # [B, heads, K, K]
        if key_bias is not None:
            logits = logits + key_bias[:, None, None, :]
        weights = logits.softmax(dim=-1)  # over keys
        y = (weights @ split(self.value(x))).transpose(1, 2).reshape(b, k, d)
        return self.out(y), weights

    def forward(self, slots: torch.Tensor, key_bias: torch.Tensor | None = None) -> torch.Tensor:
        x = self.norm_attention(self.attend(slots, key_bias)[0] + slots)
        return self.norm_mlp(self.mlp(x) + x)


# ------------------------------------------------------------------------------------------------
# Decoder
# ------------------------------------------------------------------------------------------------
class SpatialBroadcastDecoder(nn.Module):
    """Official `SpatialBroadcastDecoder`: slots [B', K, D] -> readouts [B', K, C, H, W] and
    alpha logits [B', K, 1, H, W]. Each slot is broadcast to h x w, + Dense(position grid),
    then the CNN (stride > 1: transposed conv; every layer ReLU), then per pixel Dense -> 1
    (`alpha_logits`) and Dense -> C (the target's `Readout`)."""

    def __init__(self, config: SAViConfig):
        super().__init__()
        d = config.slot_size
        self.register_buffer("grid", position_grid(config.decoder_initial_size))  # [1, h, w, 2]
        self.position = _dense(2, d)
        layers, c_in = [], d
        for c_out, stride in zip(config.decoder_channels, config.decoder_strides, strict=True):
            cls = ConvTranspose2dSame if stride > 1 else Conv2dSame
            layers.append(cls(c_in, c_out, config.decoder_kernel_size, stride, relu=True))
            c_in = c_out
        self.cnn = nn.ModuleList(layers)
        self.alpha = _dense(c_in, 1)
        self.readout = _dense(c_in, config.target_channels)

    def forward(self, slots: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, k, d = slots.shape
        x = slots.reshape(b * k, 1, 1, d) + self.position(self.grid.to(slots.dtype))  # [BK,h,w,D]
        x = x.permute(0, 3, 1, 2)  # channels-first for the convolutions
        for layer in self.cnn:
            x = layer(x)
        x = x.permute(0, 2, 3, 1)  # [B'K, H, W, C_dec]
        logits = self.alpha(x).permute(0, 3, 1, 2)  # [B'K, 1, H, W]
        readouts = self.readout(x).permute(0, 3, 1, 2)  # [B'K, C, H, W]
        return (readouts.reshape(b, k, *readouts.shape[1:]),
                logits.reshape(b, k, *logits.shape[1:]))


# ------------------------------------------------------------------------------------------------
# SAVi
# ------------------------------------------------------------------------------------------------
class SAVi(nn.Module):
    """SAVi: `SAVi(config)` or `SAVi(resolution=(32, 32), ...)` (fields of `SAViConfig`; defaults
    the official SAVi-S at 64x64).

    `model(video, boxes=None, points=None, slots=None)`:
        video [B, T, C, H, W] in [0, 1];
        boxes [B, T or 1, M, 4] (ymin, xmin, ymax, xmax) in [0, 1], only frame 0 is used;
            absent objects are (0, 0, 0, 0), like the background box (initializer "boxes");
        points [B, T or 1, M, 2] (y, x) in [0, 1], frame 0 (initializer "points");
        slots [B, K, D] overrides the initial slots (e.g. the previous chunk's
            `predicted_slots[:, -1]`, or fixed noise for the "gaussian" initializer).
    With `skip_absent`, the slots of empty first-frame boxes (points) are switched off; a
    continuation chunk passes the first chunk's boxes (points) beside `slots` to keep them off.
    Returns a `SAViOutput`.
    """

    def __init__(self, config: SAViConfig | None = None, **overrides: Any):
        super().__init__()
        values = to_dict(config) if config is not None else {}
        config = from_dict(SAViConfig, {**values, **overrides}, where="SAViConfig")
        self.config = config
        d = config.slot_size
        self.encoder = FrameEncoder(config)
        if config.initializer in ("boxes", "points"):
            coordinates = 4 if config.initializer == "boxes" else 2
            self.initializer = CoordinateInitializer(coordinates, config.initializer_hidden_size,
                                                     d)
        elif config.initializer == "learned":
            self.initializer = LearnedSlots(config.num_slots, d)
        else:
            self.initializer = GaussianInitializer(config.num_slots, d)
        self.corrector = SlotAttention(
            num_iterations=config.num_iterations, slot_size=d, mlp_hidden_size=None,
            input_size=config.encoder_channels[-1], epsilon=config.epsilon,
            norm_epsilon=FLAX_LAYER_NORM_EPSILON)
        self.predictor = TransformerBlock(d, config.predictor_heads, config.predictor_mlp_size)
        self.decoder = SpatialBroadcastDecoder(config)
        _official_init_(self)
        if isinstance(self.initializer, LearnedSlots):  # official ParamStateInit: N(0, 1)
            nn.init.normal_(self.initializer.slots_queries)

    @property
    def num_slots(self) -> int:
        """K for the learned and Gaussian initialisers; boxes/points: the configured K (one slot
        per conditioning object + the background)."""
        return self.config.num_slots

    @property
    def slot_size(self) -> int:
        return self.config.slot_size

    @property
    def resolution(self) -> tuple[int, int]:
        return tuple(self.config.resolution)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, T, C, H, W] -> corrector inputs [B, T, N, C_enc]."""
        b, t = video.shape[:2]
        return self.encoder(video.flatten(0, 1)).unflatten(0, (b, t))

    def initial_slots(self, batch_size: int, boxes: torch.Tensor | None = None,
                      points: torch.Tensor | None = None,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """The first frame's starting slots [B, K, D] from the initializer."""
        kind = self.config.initializer
        if kind in ("boxes", "points"):
            given = boxes if kind == "boxes" else points
            if given is None:
                raise ValueError(f"this SAVi model starts from the first frame's {kind}: pass "
                                 f"{kind}=[B, T, M, {self.initializer.coordinates}] (or slots=)")
            if given.ndim != 4 or given.shape[0] != batch_size or \
                    given.shape[-1] != self.initializer.coordinates:
                raise ValueError(f"{kind} must be [B={batch_size}, T or 1, M, "
                                 f"{self.initializer.coordinates}], got {tuple(given.shape)}")
            return self.initializer(given[:, 0].to(self.encoder.grid.dtype))
        if kind == "learned":
            return self.initializer(batch_size)
        return self.initializer(batch_size, self.encoder.grid.device, generator)

    def slot_bias(self, boxes: torch.Tensor | None = None,
                  points: torch.Tensor | None = None) -> torch.Tensor | None:
        """`skip_absent`: [B, K] 0 for the background slot (first) and each object with a
        first-frame box (point), SLOT_OFF for an empty one (an absent object); None when the
        option is off or no boxes (points) are given."""
        given = boxes if self.config.initializer == "boxes" else points
        if not self.config.skip_absent or given is None:
            return None
        present = (given[:, 0] != 0).any(dim=-1)  # [B, M]
        present = torch.cat([present.new_ones(present.shape[0], 1), present], dim=1)  # [B, K]
        return torch.where(present, 0.0, SLOT_OFF).float()

    def decode(self, slots: torch.Tensor, extra_logits: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """slots [B, T, K, D] -> (target [B, T, C, H, W], readouts [B, T, K, C, H, W], masks and
        mask logits [B, T, K, 1, H, W]); `extra_logits` [B, T, K, 1, H, W] are added to the
        alpha logits (`mask_attention`)."""
        b, t = slots.shape[:2]
        readouts, logits = self.decoder(slots.flatten(0, 1))
        readouts = readouts.float().unflatten(0, (b, t))
        logits = logits.float().unflatten(0, (b, t))
        if extra_logits is not None:
            logits = logits + extra_logits.float()
        masks = logits.softmax(dim=2)  # over slots
        return (readouts * masks).sum(dim=2), readouts, masks, logits

    def forward(self, video: torch.Tensor, boxes: torch.Tensor | None = None,
                points: torch.Tensor | None = None,
                slots: torch.Tensor | None = None) -> SAViOutput:
        c, (h, w) = self.config.num_channels, self.config.resolution
        if video.ndim != 5 or tuple(video.shape[2:]) != (c, h, w):
            raise ValueError(f"video must be [B, T, {c}, {h}, {w}], got {tuple(video.shape)}")
        b, t = video.shape[:2]
        inputs = self.encode(video)  # [B, T, N, C_enc]
        from_boxes = slots is None and boxes is not None  # not a continuation chunk
        if slots is None:
            slots = self.initial_slots(b, boxes, points)  # [B, K, D]
        elif slots.ndim != 3 or slots.shape[0] != b or slots.shape[2] != self.config.slot_size:
            raise ValueError(f"slots must be [B={b}, K, {self.config.slot_size}], got "
                             f"{tuple(slots.shape)}")
        initial = slots
        bias = self.slot_bias(boxes, points)  # None, or [B, K] (`skip_absent`)
        later = None if bias is None else bias[:, :, None]  # corrector logit term [B, K, 1]
        first = later  # the first frame's, with `box_attention` [B, K, N]
        if self.config.box_attention and from_boxes:
            term = box_logits(boxes[:, 0], (h, w), self.config.box_attention)
            first = term if first is None else first + term
        corrected, predicted, attention, attention_logits = [], [], [], []
        for frame in range(t):  # the official nn.scan over time
            logit_bias = first if frame == 0 else later
            sa = self.corrector(inputs[:, frame], slots, logit_bias=logit_bias)  # [B, K, D]
            slots = self.predictor(sa.slots, bias)  # predictor: next frame's starting slots
            corrected.append(sa.slots)
            predicted.append(slots)
            attention.append(sa.attention)
            if self.config.mask_attention:  # [B, K, N]: the corrected slots' logits
                attention_logits.append(
                    self.corrector.final_logits(inputs[:, frame], sa, logit_bias))
        corrected_slots = torch.stack(corrected, dim=1)  # [B, T, K, D]
        extra = None
        if attention_logits:  # [B, T, K, 1, H, W] added to the alpha logits
            extra = torch.stack(attention_logits, dim=1).unflatten(-1, (h, w))[:, :, :, None]
        if bias is not None:  # switched-off slots get no mask
            off = bias[:, None, :, None, None, None].expand(b, t, -1, 1, h, w)
            extra = off if extra is None else extra + off
        target, readouts, masks, logits = self.decode(corrected_slots, extra)
        return SAViOutput(
            slots=corrected_slots, predicted_slots=torch.stack(predicted, dim=1),
            attention=torch.stack(attention, dim=1), masks=masks, target=target,
            readouts=readouts, mask_logits=logits, initial_slots=initial, slot_bias=bias)
