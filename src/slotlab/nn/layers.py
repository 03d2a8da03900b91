"""Building blocks of the official models: TF-"SAME" convolutions, the soft position embedding,
and Keras-style initialisation.

TF "SAME" padding differs from PyTorch's symmetric padding when the stride is 2: for an even input
and a 5x5 kernel TF pads 1 pixel before and 2 after. The classes here reproduce TF exactly, so the
official checkpoints give the official outputs.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) for one spatial axis of a forward convolution."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class Conv2dSame(nn.Conv2d):
    """`nn.Conv2d` with TF "SAME" padding (asymmetric where TF pads asymmetrically); `relu=True`
    is Keras' `activation="relu"`: on the CPU fused into the convolution by oneDNN
    (`conv_relu_onednn`), elsewhere in training added with the bias by `bias_relu` and in
    inference in place.

    Where TF pads one pixel more after than before (stride 2, k = 5: 1 and 2), the input is
    padded by `zero_pad`, or, on a CPU with AMX in bf16, the kernel gets one zero tap in front and
    the convolution pads symmetrically by the larger amount (`strided_shift_is_faster`): the same
    windows without the padded copy of the input.

    Input [B, C_in, H, W] -> [B, C_out, ceil(H / s), ceil(W / s)].
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 relu: bool = False):
        symmetric = stride == 1 and kernel_size % 2 == 1
        super().__init__(
            in_channels, out_channels, kernel_size, stride,
            padding=(kernel_size - 1) // 2 if symmetric else 0,
        )
        self._symmetric = symmetric
        self.relu = relu
        keras_init_(self)

    def same_kernel(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...],
                                                    tuple[int, int, int, int] | None]:
        """How the layer meets TF's padding for `x`: (the kernel it convolves with, with zero taps
        in front where it takes them; the convolution's symmetric padding; the (left, right, top,
        bottom) padding of x first, or None)."""
        if self._symmetric:
            return self.weight, self.padding, None
        top, bottom = same_padding(x.shape[-2], self.kernel_size[0], self.stride[0])
        left, right = same_padding(x.shape[-1], self.kernel_size[1], self.stride[1])
        if strided_shift_is_faster(x):  # zero taps in front of the kernel: no padded copy
            return F.pad(self.weight, (right - left, 0, bottom - top, 0)), (bottom, right), None
        return self.weight, self.padding, (left, right, top, bottom)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, padding, pad = self.same_kernel(x)
        if pad is not None:
            x = zero_pad(x, pad)
        if self.relu and onednn_fused_relu(x):  # CPU: oneDNN adds bias and ReLU
            return conv_relu_onednn(x, weight, self.bias, self.stride, padding)
        if not (self.relu and torch.is_grad_enabled()):  # inference: the ReLU in place
            y = F.conv2d(x, weight, self.bias, self.stride, padding)
            return F.relu(y, inplace=True) if self.relu else y
        y = F.conv2d(x, weight, None, self.stride, padding)
        return bias_relu(y, self.bias)


class ConvTranspose2dSame(nn.ConvTranspose2d):
    """`nn.ConvTranspose2d` with TF "SAME" semantics: output size exactly stride x input size;
    `relu=True` is Keras' `activation="relu"`.

    TF's SAME transposed convolution is the full transposed convolution cropped to
    [pad_before, pad_before + s * size) with pad_before = max(k - s, 0) // 2. PyTorch's `padding`
    crops the same number of pixels from both ends; where TF crops one more at the end (k - s
    odd: k = 5, s = 2) the kernel gets one zero tap in front of each axis (`shift`) and the
    padding one more: the output is then exactly TF's, with no crop to copy (the zero taps cost
    nothing on the sub-pixel path and oneDNN runs the exact-size output 1.2-2.8x faster, a
    64 -> 128 layer of the official decoder in training and inference, float32 and bf16;
    benchmarks/README.md). The parameter keeps the official [C_in, C_out, k, k].
    Input [B, C_in, H, W] -> [B, C_out, s * H, s * W].

    `pad_out_channels` (a speed option, not a parameter; 0 = off): compute the layer with its
    output channels zero-padded to this many and drop the extra ones. A very narrow layer (the
    decoder's last, 64 -> 4) runs on slow GPU kernels; padded to 8 it takes tensor-core kernels.
    Same result and same gradients (the padded weights are constants, not parameters).
    """

    pad_out_channels: int = 0

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 relu: bool = False):
        if kernel_size < stride:
            raise ValueError(f"a TF-SAME transposed convolution needs kernel_size >= stride, "
                             f"got {kernel_size} < {stride}")
        before, shift = divmod(kernel_size - stride, 2)
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=before + shift)
        self.shift, self.relu = shift, relu
        keras_init_(self)

    def shifted_weight(self) -> torch.Tensor:
        """The kernel with `shift` zero taps in front of each spatial axis:
        [C_in, C_out, k + shift, k + shift]."""
        if not self.shift:
            return self.weight
        return F.pad(self.weight, (self.shift, 0, self.shift, 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.shifted_weight()
        subpixel = max(self.stride) > 1 and subpixel_is_faster(x)
        if self.relu and not (subpixel or self.pad_out_channels) and onednn_fused_relu(x):
            return conv_relu_onednn(x, weight, self.bias, self.stride, self.padding,
                                    transposed=True)  # CPU: oneDNN adds bias and ReLU
        fused = self.relu and torch.is_grad_enabled()  # training: bias + ReLU in `bias_relu`
        bias = None if fused else self.bias
        extra = self.pad_out_channels - self.out_channels
        if extra > 0:  # weight [C_in, C_out, k, k]: pad C_out with zeros, crop after
            weight = F.pad(weight, (0, 0, 0, 0, 0, extra))
            bias = None if bias is None else F.pad(bias, (0, extra))
            y = F.conv_transpose2d(x, weight, bias, self.stride, self.padding)
            y = y[:, : self.out_channels]
        elif subpixel:
            y = conv_transpose2d_subpixel(x, weight, bias, self.stride, self.padding)
        else:
            y = F.conv_transpose2d(x, weight, bias, self.stride, self.padding)
        if fused:
            return bias_relu(y, self.bias)
        if not self.relu:
            return y
        # inference: in place on a tensor of its own; a view (the sub-pixel path's) gets a new
        # one, as does every output under torch.compile (which fuses the ReLU)
        return F.relu(y, inplace=not (torch.compiler.is_compiling() or y._is_view()))


class _ZeroPad(torch.autograd.Function):
    """`F.pad(x, (left, right, top, bottom))` with zeros, for x [B, C, H, W], in one pass over x:
    the output keeps x's memory layout and only its border is zeroed, and the backward is a view
    of the gradient's interior. `F.pad` fills the whole output with zeros before it copies x in,
    and its backward copies the interior out: the official set-prediction model (float32,
    channels_last, batch 32, 2-core Xeon) trained 1.05-1.06x as fast with `zero_pad`."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
        left, right, top, bottom = pad
        b, c, h, w = x.shape
        out = torch.empty((b, c, top + h + bottom, left + w + right), dtype=x.dtype,
                          device=x.device, memory_format=_layout(x))
        out[:, :, :top].zero_()
        out[:, :, top + h:].zero_()
        out[:, :, top:top + h, :left].zero_()
        out[:, :, top:top + h, left + w:].zero_()
        out[:, :, top:top + h, left:left + w].copy_(x)
        ctx.pad = pad
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        left, right, top, bottom = ctx.pad
        h, w = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
        return grad[:, :, top:top + h, left:left + w], None


def zero_pad(x: torch.Tensor, pad: tuple[int, int, int, int]) -> torch.Tensor:
    """`F.pad(x, pad)` (zeros; pad = (left, right, top, bottom)) for x [B, C, H, W], without
    F.pad's full fill and its backward's copy (`_ZeroPad`); under torch.compile F.pad, which
    the compiler fuses (`_ZeroPad` would break its graph)."""
    if torch.compiler.is_compiling():
        return F.pad(x, pad)
    return _ZeroPad.apply(x, tuple(pad))


class _BiasReLU(torch.autograd.Function):
    """relu(y + bias) into a tensor of y's memory layout, and its backward: the ReLU's gradient
    and the bias gradient summed from it. The convolution then runs without its bias: oneDNN's
    convolution backward with a bias gradient took 1.6-2.4x the time of the one without on a
    2-core Xeon (AMX; benchmarks/README.md)."""

    @staticmethod
    def forward(ctx: Any, y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        layout = _layout(y)
        out = torch.empty(y.shape, dtype=y.dtype, device=y.device, memory_format=layout)
        if bias is None:
            torch.clamp_min(y, 0, out=out)
        else:
            torch.add(y, bias.to(y.dtype).view(-1, 1, 1), out=out).clamp_min_(0)
        ctx.save_for_backward(out)
        ctx.layout, ctx.bias_dtype = layout, None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (out,) = ctx.saved_tensors
        grad_y = torch.empty(out.shape, dtype=grad.dtype, device=grad.device,
                             memory_format=ctx.layout)
        torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad_y)
        grad_bias = None
        if ctx.needs_input_grad[1]:
            grad_bias = bias_grad(grad_y).to(ctx.bias_dtype)  # accumulates in float32
        return grad_y, grad_bias


def bias_grad(grad: torch.Tensor) -> torch.Tensor:
    """The gradient of a convolution's bias from its output's, grad [B, C, H, W] -> [C]: the sum
    over B, H and W. On the CPU in channels_last, a row of ones times the [B * H * W, C] view
    (a matmul, accumulating in float32 in bf16 as the sum does), which took 7.8 against 12.3 ms
    (float32) and 8.4 against 21.0 ms (bf16) for the official decoder's [56, 64, 128, 128] on a
    2-core Xeon; elsewhere the sum."""
    c = grad.shape[1]
    if grad.device.type == "cpu" and grad.dim() == 4 and grad.is_contiguous(
            memory_format=torch.channels_last):
        rows = grad.permute(0, 2, 3, 1).reshape(-1, c)  # [B * H * W, C], a view
        return (grad.new_ones(1, rows.shape[0]) @ rows).view(c)
    return grad.sum(dim=(0, 2, 3))


def _layout(y: torch.Tensor) -> torch.memory_format:
    if y.dim() == 4 and not y.is_contiguous() and y.is_contiguous(
            memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def bias_relu(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """relu(y + bias) for a convolution's output y [B, C, H, W] and bias [C] (`_BiasReLU`;
    under torch.compile the plain ops, which the compiler fuses)."""
    if torch.compiler.is_compiling():
        return F.relu(y if bias is None else y + bias.to(y.dtype).view(-1, 1, 1))
    return _BiasReLU.apply(y, bias)


def onednn_fused_relu(x: torch.Tensor) -> bool:
    """Whether a convolution + bias + ReLU of `x` runs as one oneDNN primitive
    (`conv_relu_onednn`): on the CPU, float32 or bf16, also under torch.compile (an operator the
    compiler calls as it is). It saves the bias's and the ReLU's passes over the output
    (benchmarks/README.md)."""
    if x.device.type != "cpu" or not has_onednn_pointwise():
        return False
    return _compute_dtype(x) in (torch.float32, torch.bfloat16)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a CPU convolution of `x` computes in: the autocast dtype where autocast is on."""
    try:
        enabled, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")
    except (TypeError, AttributeError):  # torch < 2.4
        enabled, dtype = torch.is_autocast_cpu_enabled(), torch.get_autocast_cpu_dtype()
    return dtype if enabled else x.dtype


def _pointwise_ops() -> bool:
    """Whether this torch build has oneDNN's convolutions with a fused post-op."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(
            torch.ops.mkldnn, "_convolution_pointwise") and hasattr(
            torch.ops.mkldnn, "_convolution_transpose_pointwise")
    except (AttributeError, RuntimeError):
        return False


_HAS_POINTWISE = _pointwise_ops()  # read once, as `_CPU_HAS_AMX`


def has_onednn_pointwise() -> bool:
    """Whether `conv_relu_onednn` can run in this torch build."""
    return _HAS_POINTWISE


@torch.library.custom_op("slotlab::conv_relu", mutates_args=())
def _conv_relu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               stride: list[int], padding: list[int], transposed: bool) -> torch.Tensor:
    """relu(conv(x, weight) + bias) as one oneDNN primitive (the bias and the ReLU its post-ops).
    An operator of its own, so that torch.compile calls it as it is (the compiler's lowering
    runs the convolution and the ReLU as two passes) and fuses the rest around it."""
    ones, zeros = [1] * len(stride), [0] * len(stride)
    if transposed:
        return torch.ops.mkldnn._convolution_transpose_pointwise(
            x, weight, bias, padding, zeros, stride, ones, 1, "relu", [], "")
    return torch.ops.mkldnn._convolution_pointwise(
        x, weight, bias, padding, stride, ones, 1, "relu", [], "")


@_conv_relu.register_fake
def _conv_relu_shape(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: list[int], padding: list[int], transposed: bool) -> torch.Tensor:
    """The output's shape and layout as oneDNN gives them: channels_last where x or the weight
    is (for the compiler, which plans the kernels after it on these strides)."""
    sizes = []
    for i, (s, p) in enumerate(zip(stride, padding, strict=True)):
        n, k = x.shape[2 + i], weight.shape[2 + i]
        sizes.append((n - 1) * s - 2 * p + k if transposed else (n + 2 * p - k) // s + 1)
    out_channels = weight.shape[1] if transposed else weight.shape[0]
    cl = torch.channels_last
    layout = cl if cl in (_layout(x), _layout(weight)) else torch.contiguous_format
    return x.new_empty((x.shape[0], out_channels, *sizes)).contiguous(memory_format=layout)


def _conv_relu_save(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
    x, weight, _, stride, padding, transposed = inputs
    ctx.save_for_backward(x, weight, output)
    ctx.conv = stride, padding, transposed


def _conv_relu_backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
    """The ReLU's gradient, the bias gradient summed from it, and aten's convolution backward
    without a bias gradient (oneDNN's with one took 1.6-2.4x as long)."""
    x, weight, out = ctx.saved_tensors
    stride, padding, transposed = ctx.conv
    grad_y = torch.ops.aten.threshold_backward(grad, out, 0)
    grad_bias = bias_grad(grad_y) if ctx.needs_input_grad[2] else None
    n = len(stride)
    grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
        grad_y, x, weight, None, stride, padding, [1] * n, transposed, [0] * n, 1,
        [ctx.needs_input_grad[0], ctx.needs_input_grad[1], False])
    return grad_x, grad_w, grad_bias, None, None, None


_conv_relu.register_autograd(_conv_relu_backward, setup_context=_conv_relu_save)


def conv_relu_onednn(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                     stride: tuple[int, ...], padding: tuple[int, ...],
                     transposed: bool = False) -> torch.Tensor:
    """relu(F.conv2d(x, weight, bias, stride, padding)) (`transposed`: F.conv_transpose2d) as one
    oneDNN primitive with the bias and the ReLU as post-ops (`slotlab::conv_relu`), in the dtype
    autocast would compute it in (CPU only: `onednn_fused_relu`)."""
    dtype = _compute_dtype(x)
    x, weight = x.to(dtype), weight.to(dtype)
    bias = None if bias is None else bias.to(dtype)
    return _conv_relu(x, weight, bias, list(stride), list(padding), transposed)


def strided_shift_is_faster(x: torch.Tensor) -> bool:
    """Whether `Conv2dSame` meets TF's asymmetric padding with zero taps in front of its kernel
    (36/25 of the multiply-adds for k = 5) rather than a padded copy of `x`: on a CPU with AMX in
    bf16, where the official set-prediction encoder's 128 -> 64 layer (batch 32) ran its forward
    in 16.9 against 20.6 ms and its backward in 47.4 against 49.1 ms. In float32 the padded copy
    is the faster (84 against 102 ms forward; benchmarks/README.md)."""
    return (x.device.type == "cpu" and cpu_has_amx()
            and _compute_dtype(x) == torch.bfloat16)


def subpixel_is_faster(x: torch.Tensor) -> bool:
    """Whether a strided transposed convolution of `x` takes the sub-pixel path: on the CPU in
    bf16 (a bf16 tensor, or bf16 autocast) without AMX. There oneDNN's strided transposed
    convolution in bf16 is slow and the sub-pixel form trained 2-2.5x faster (AMD,
    AVX512-BF16). With AMX oneDNN's own is the faster, in training (a 64 -> 128 layer of the
    official decoder 2.5x the sub-pixel form) and, on the exact-size output with its ReLU fused,
    in inference (2.3x; 2-core Xeon, benchmarks/README.md). In float32 oneDNN's own is the
    faster everywhere."""
    if x.device.type != "cpu" or cpu_has_amx():
        return False
    return _compute_dtype(x) == torch.bfloat16


def _amx_tiles() -> bool:
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch
        return False


_CPU_HAS_AMX = _amx_tiles()  # read once: torch.compile traces a module constant, not the call


def cpu_has_amx() -> bool:
    """Whether this CPU has AMX tiles (Intel Sapphire Rapids and later)."""
    return _CPU_HAS_AMX


def conv_transpose2d_subpixel(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    stride: tuple[int, int], padding: tuple[int, int],
) -> torch.Tensor:
    """`F.conv_transpose2d(x, weight, bias, stride, padding)` computed as one ordinary convolution
    and a pixel shuffle (sub-pixel convolution); the same numbers up to float rounding, several
    times faster on the CPU, where strided transposed convolutions take a slow path.

    Output pixel o = q s + r (phase r) of the full transposed convolution collects x[q - m] w[r +
    m s] over m: for each phase a correlation of x with the taps r, r + s, ... flipped. All s * s
    phases are one convolution with M = ceil(k / s) taps per axis (taps beyond the kernel are 0)
    and s * s * C_out outputs, interleaved by `pixel_shuffle`, then cropped by `padding`. It does
    (M s / k)^2 times the multiply-adds (16/9 for k = 3, s = 2; 36/25 for k = 5), yet in bf16 on
    the CPU it trains 2-2.5x faster than `F.conv_transpose2d` (32 channels, 16x16 -> 32x32).

    x [B, C_in, H, W], weight [C_in, C_out, kh, kw] (ConvTranspose2d layout) ->
    [B, C_out, (H - 1) s + kh - 2 p, (W - 1) s + kw - 2 p].
    """
    c_in, c_out, kh, kw = weight.shape
    (sh, sw), (ph, pw) = stride, padding
    if sh != sw:
        raise ValueError(f"the sub-pixel path needs equal strides, got {stride}")
    s = sh
    mh, mw = -(-kh // s), -(-kw // s)
    # kernel[(co, r1, r2), ci, a, b] = weight[ci, co, r1 + (mh - 1 - a) s, r2 + (mw - 1 - b) s]
    rows = torch.arange(s)[:, None] + (mh - 1 - torch.arange(mh))[None, :] * s  # [s, mh]
    cols = torch.arange(s)[:, None] + (mw - 1 - torch.arange(mw))[None, :] * s  # [s, mw]
    padded = F.pad(weight, (0, s * mw - kw, 0, s * mh - kh))  # taps beyond the kernel are 0
    kernel = padded[:, :, rows[:, None, :, None], cols[None, :, None, :]]  # [Ci, Co, s, s, mh, mw]
    kernel = kernel.permute(1, 2, 3, 0, 4, 5).reshape(c_out * s * s, c_in, mh, mw)
    bias_all = None if bias is None else bias.repeat_interleave(s * s)
    y = F.conv2d(x, kernel.to(x.dtype), None if bias_all is None else bias_all.to(x.dtype),
                 padding=(mh - 1, mw - 1))  # the convolution pads: no padded copy of x
    y = F.pixel_shuffle(y, s)  # [B, Co, s (H + mh - 1), s (W + mw - 1)]
    height, width = (x.shape[-2] - 1) * s + kh, (x.shape[-1] - 1) * s + kw  # the full output
    return y[..., ph : height - ph, pw : width - pw]


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
