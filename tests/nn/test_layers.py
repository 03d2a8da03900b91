"""The TF-SAME transposed convolution and its sub-pixel fast path on the CPU in bf16."""

import pytest
import torch
import torch.nn.functional as F

from slotlab.nn import ConvTranspose2dSame
from slotlab.nn.layers import conv_transpose2d_subpixel


@pytest.mark.parametrize("kernel, stride, padding, size", [
    (3, 2, 0, (5, 7)), (3, 2, 1, (4, 4)), (5, 2, 1, (6, 5)), (5, 2, 2, (3, 3)), (4, 2, 1, (4, 6)),
    (3, 3, 0, (4, 4)), (5, 3, 1, (3, 5)), (1, 2, 0, (3, 3)), (2, 2, 0, (3, 4)),
])
def test_subpixel_equals_conv_transpose2d_with_gradients(kernel, stride, padding, size):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    w = torch.randn(3, 4, kernel, kernel, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    want = F.conv_transpose2d(x, w, b, stride, padding)
    got = conv_transpose2d_subpixel(x, w, b, (stride, stride), (padding, padding))
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads_want = torch.autograd.grad(want, (x, w, b), g)
    grads_got = torch.autograd.grad(got, (x, w, b), g)
    for a, e in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, e)


@pytest.mark.parametrize("kernel", [3, 5])
def test_strided_layer_in_cpu_bf16_takes_the_subpixel_path_and_matches(kernel, monkeypatch):
    """Under CPU bf16 autocast a stride-2 layer goes through the sub-pixel convolution (spied);
    its output matches the float32 layer to bf16 precision and keeps the TF-SAME size."""
    import slotlab.nn.layers as layers

    torch.manual_seed(0)
    layer = ConvTranspose2dSame(8, 6, kernel, 2)
    x = torch.randn(2, 8, 5, 7)
    want = layer(x)  # float32: PyTorch's own transposed convolution
    calls = []
    real = layers.conv_transpose2d_subpixel

    def spy(*args):
        calls.append(args[3])
        return real(*args)

    monkeypatch.setattr(layers, "conv_transpose2d_subpixel", spy)
    assert not calls
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert calls == [(2, 2)] and got.dtype == torch.bfloat16 and got.shape == (2, 6, 10, 14)
    torch.testing.assert_close(got.float(), want, atol=0.05, rtol=0.05)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ConvTranspose2dSame(8, 6, kernel, 1)(x)  # stride 1: oneDNN's own path
    assert len(calls) == 1
