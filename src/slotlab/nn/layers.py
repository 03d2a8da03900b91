"""Building blocks of the official models: TF-"SAME" convolutions, the soft position embedding,
and Keras-style initialisation.

TF "SAME" padding differs from PyTorch's symmetric padding when the stride is 2: for an even input
and a 5x5 kernel TF pads 1 pixel before and 2 after. The classes here reproduce TF exactly, so the
official checkpoints give the official outputs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial axis of a forward convolution."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TF "SAME" padding (asymmetric where TF pads asymmetrically).

    Input [B, C_in, H, W] -> [B, C_out, ceil(H / s), ceil(W / s)].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels, out_channels, kernel_size, stride,
            padding=(kernel_size - 1) // 2 if symmetric else 0,
        )
        self._symmetric = symmetric
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._symmetric:
            top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
            left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
            x = F.pad(x, (left, right, top, bottom))
        return super().forward(x)


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` with TF "SAME" semantics: output size exactly stride x input size.

    TF's SAME transposed convolution is the full transposed convolution cropped to
    [pad_before, pad_before + s * size) with pad_before = max(k - s, 0) // 2. PyTorch's `padding`
    crops `padding` pixels from both ends; when that leaves one pixel too many at the end (k = 5,
    s = 2), the last row and column are dropped.
    Input [B, C_in, H, W] -> [B, C_out, s * H, s * W].

    `pad_out_channels` (a speed option, not a parameter; 0 = off): compute the layer with its
    output channels zero-padded to this many and drop the extra ones. A very narrow layer (the
    decoder's last, 64 -> 4) runs on slow GPU kernels; padded to 8 it takes tensor-core kernels.
    Same result and same gradients (the padded weights are constants, not parameters).
    """

    pad_out_channels: int = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1):
        before = max(kernel_size - stride, 0) // 2
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=before)
        keras_init_(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2] * self.stride[0], x.shape[-1] * self.stride[1]
        extra = self.pad_out_channels - self.out_channels
        if extra > 0:  # weight [C_in, C_out, k, k]: pad C_out with zeros, crop after
            weight = F.pad(self.weight, (0, 0, 0, 0, 0, extra))
            bias = None if self.bias is None else F.pad(self.bias, (0, extra))
            y = F.conv_transpose2d(x, weight, bias, self.stride, self.padding,
                                   self.output_padding, self.groups, self.dilation)
            y = y[:, : self.out_channels]
        else:
            y = super().forward(x)
        if y.shape[-2] != h or y.shape[-1] != w:
            y = y[..., :h, :w]
        return y


def keras_init_(module: nn.Module) -> nn.Module:
    """Keras defaults: glorot-uniform kernels, zero biases (Dense, Conv2D, Conv2DTranspose).

    PyTorch's `xavier_uniform_` computes the same fans as Keras for these layouts.
    """
    nn.init.xavier_uniform_(module.weight)
    if getattr(module, "bias", None) is not None:
        nn.init.zeros_(module.bias)
    return module


def dense(in_features: int, out_features: int, bias: bool = True) -> nn.Linear:
    """A Keras-initialised `nn.Linear` (Keras `Dense`)."""
    return keras_init_(nn.Linear(in_features, out_features, bias=bias))


def layer_norm(size: int) -> nn.LayerNorm:
    """Keras `LayerNormalization` over the last axis: epsilon 1e-3 (PyTorch's default is 1e-5)."""
    return nn.LayerNorm(size, eps=1e-3)


def build_grid(resolution: tuple[int, int]) -> torch.Tensor:
    """The official position grid [1, H, W, 4] with channels [row, col, 1 - row, 1 - col]."""
    rows = torch.linspace(0.0, 1.0, resolution[0])
    cols = torch.linspace(0.0, 1.0, resolution[1])
    grid = torch.stack(torch.meshgrid(rows, cols, indexing="ij"), dim=-1)  # [H, W, 2]
    return torch.cat([grid, 1.0 - grid], dim=-1)[None]


class SoftPositionEmbed(nn.Module):
    """Adds a learned linear projection of the 4-channel position grid to feature maps.

    forward: [B, C, H, W] -> [B, C, H, W] (channels-first; the grid is projected to C channels).
    """

    def __init__(self, hidden_size: int, resolution: tuple[int, int]):
        super().__init__()
        self.dense = dense(4, hidden_size)
        self.register_buffer("grid", build_grid(tuple(resolution)), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pos = self.dense(self.grid.to(x.dtype)).permute(0, 3, 1, 2)  # [1, C, H, W]
        return x + pos
