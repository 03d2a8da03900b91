"""The TF-SAME convolutions, their fused crop + ReLU, and the sub-pixel fast path on the CPU in
bf16."""

import pytest
import torch
import torch.nn.functional as F

from slotlab.nn import Conv2dSame, ConvTranspose2dSame
from slotlab.nn.layers import conv_transpose2d_subpixel, crop_relu


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

    monkeypatch.setattr(layers, "_cpu_has_amx", lambda: False)
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


def test_with_amx_bf16_keeps_onednn_transposed_convolution(monkeypatch):
    import slotlab.nn.layers as layers

    monkeypatch.setattr(layers, "_cpu_has_amx", lambda: True)
    x = torch.randn(1, 2, 3, 3)
    assert not layers.subpixel_is_faster(x.bfloat16())
    monkeypatch.setattr(layers, "_cpu_has_amx", lambda: False)
    assert layers.subpixel_is_faster(x.bfloat16()) and not layers.subpixel_is_faster(x)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_crop_relu_equals_slice_and_relu_bit_for_bit(channels_last, dtype):
    """relu(y[..., :h, :w]) and its gradient, as autograd computes them from the slice and
    `F.relu`, exactly; the output keeps y's memory layout."""
    torch.manual_seed(0)
    y0 = torch.randn(3, 5, 9, 8, dtype=dtype)
    if channels_last:
        y0 = y0.contiguous(memory_format=torch.channels_last)
    y1, y2 = y0.clone().requires_grad_(), y0.clone().requires_grad_()
    want = F.relu(y1[..., :8, :7])
    got = crop_relu(y2 * 1, 8, 7)  # a tensor of its own, as a convolution's output
    assert torch.equal(got, want) and got.shape == (3, 5, 8, 7)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last
    g = torch.randn_like(want)
    assert torch.equal(torch.autograd.grad(got, y2, g)[0], torch.autograd.grad(want, y1, g)[0])


def test_crop_relu_in_place_only_on_a_tensor_of_its_own():
    y = torch.randn(2, 3, 4, 4)
    base = y.clone()
    out = crop_relu(base, 4, 4)  # nothing to crop: in place
    assert out.data_ptr() == base.data_ptr() and torch.equal(out, F.relu(y))
    view = y.clone()[:, :2]  # a view (the padded-channels path): not written in place
    before = view.clone()
    out = crop_relu(view, 4, 4)
    assert torch.equal(view, before) and torch.equal(out, F.relu(before))


@pytest.mark.parametrize("stride", [1, 2])
def test_layers_with_relu_equal_layer_then_relu(stride):
    """`relu=True` (Keras' activation) is the layer without it followed by ReLU, gradients too."""
    torch.manual_seed(0)
    for cls in (Conv2dSame, ConvTranspose2dSame):
        plain, fused = cls(4, 6, 5, stride), cls(4, 6, 5, stride, relu=True)
        fused.load_state_dict(plain.state_dict())
        x1 = torch.randn(2, 4, 8, 8, requires_grad=True)
        x2 = x1.detach().clone().requires_grad_()
        want, got = F.relu(plain(x1)), fused(x2)
        torch.testing.assert_close(got, want, rtol=0, atol=0)
        g = torch.randn_like(want)
        want_grads = torch.autograd.grad(want, (x1, plain.weight), g)
        got_grads = torch.autograd.grad(got, (x2, fused.weight), g)
        for a, e in zip(got_grads, want_grads, strict=True):
            torch.testing.assert_close(a, e, rtol=0, atol=0)
