"""The TF-SAME convolutions, their fused crop + ReLU, and the sub-pixel fast path on the CPU in
bf16."""

import pytest
import torch
import torch.nn.functional as F

from slotlab.nn import Conv2dSame, ConvTranspose2dSame
from slotlab.nn.layers import bias_relu, conv_transpose2d_subpixel


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
    """Under CPU bf16 autocast on a CPU without AMX a stride-2 layer goes through the sub-pixel
    convolution (spied); its output matches the float32 layer to bf16 precision and keeps the
    TF-SAME size."""
    import slotlab.nn.layers as layers

    monkeypatch.setattr(layers, "cpu_has_amx", lambda: False)
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


def test_with_amx_bf16_trains_on_onednn_transposed_convolution(monkeypatch):
    import slotlab.nn.layers as layers

    monkeypatch.setattr(layers, "cpu_has_amx", lambda: True)
    x = torch.randn(1, 2, 3, 3)
    assert not layers.subpixel_is_faster(x.bfloat16())  # training
    with torch.no_grad():
        assert layers.subpixel_is_faster(x.bfloat16())  # inference
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: False)
    assert layers.subpixel_is_faster(x.bfloat16()) and not layers.subpixel_is_faster(x)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("size", [(8, 7), (9, 8)])
def test_bias_relu_equals_slice_add_and_relu(channels_last, dtype, size):
    """relu(y[..., :h, :w] + bias) and its gradients as autograd computes them from the slice, the
    addition and `F.relu` (y's gradient bit for bit); the output keeps y's memory layout."""
    torch.manual_seed(0)
    y0 = torch.randn(3, 5, 9, 8, dtype=dtype)
    if channels_last:
        y0 = y0.contiguous(memory_format=torch.channels_last)
    y1, y2 = y0.clone().requires_grad_(), y0.clone().requires_grad_()
    b1 = torch.randn(5, requires_grad=True)
    b2 = b1.detach().clone().requires_grad_()
    want = F.relu(y1[..., : size[0], : size[1]] + b1.to(dtype)[:, None, None])
    got = bias_relu(y2 * 1, b2, *size)  # a tensor of its own, as a convolution's output
    assert torch.equal(got, want) and got.shape == (3, 5, *size)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(want)
    gy_want, gb_want = torch.autograd.grad(want, (y1, b1), g)
    gy_got, gb_got = torch.autograd.grad(got, (y2, b2), g)
    assert torch.equal(gy_got, gy_want) and gb_got.dtype == torch.float32
    torch.testing.assert_close(gb_got, gb_want, rtol=1e-2 if dtype == torch.bfloat16 else 1e-6,
                               atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2])
def test_layers_with_relu_equal_layer_then_relu(stride):
    """`relu=True` (Keras' activation) is the layer without it followed by ReLU, gradients too
    (float32 within 1e-5: the bias is added after the convolution)."""
    torch.manual_seed(0)
    for cls in (Conv2dSame, ConvTranspose2dSame):
        plain, fused = cls(4, 6, 5, stride), cls(4, 6, 5, stride, relu=True)
        x1 = torch.randn(2, 4, 8, 8, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        with torch.no_grad():
            plain.bias.normal_()
        fused.load_state_dict(plain.state_dict())
        want, got = F.relu(plain(x1)), fused(x2)
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
        g = torch.randn_like(want)
        want_grads = torch.autograd.grad(want, (x1, plain.weight, plain.bias), g)
        got_grads = torch.autograd.grad(got, (x2, fused.weight, fused.bias), g)
        for a, e in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)
