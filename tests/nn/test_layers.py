"""The TF-SAME convolutions, their fused bias + ReLU (training: `bias_relu`; inference: oneDNN),
the shifted kernel of the transposed one, and the sub-pixel path on the CPU in bf16."""

import pytest
import torch
import torch.nn.functional as F

from slotlab.nn import Conv2dSame, ConvTranspose2dSame
from slotlab.nn.layers import bias_grad, bias_relu, conv_transpose2d_subpixel, zero_pad


def assert_same_with_gradients(got: torch.Tensor, want: torch.Tensor, got_inputs: tuple,
                               want_inputs: tuple) -> None:
    """got equals want, and so do their gradients with respect to their inputs (one random
    output gradient for both)."""
    torch.testing.assert_close(got, want)
    g = torch.randn_like(want)
    grads_got = torch.autograd.grad(got, got_inputs, g)
    grads_want = torch.autograd.grad(want, want_inputs, g)
    for a, e in zip(grads_got, grads_want, strict=True):
        torch.testing.assert_close(a, e)


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


def test_with_amx_bf16_runs_on_onednn_transposed_convolution(monkeypatch):
    import slotlab.nn.layers as layers

    monkeypatch.setattr(layers, "cpu_has_amx", lambda: True)
    x = torch.randn(1, 2, 3, 3)
    assert not layers.subpixel_is_faster(x.bfloat16())  # training
    with torch.no_grad():
        assert not layers.subpixel_is_faster(x.bfloat16())  # inference
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: False)
    assert layers.subpixel_is_faster(x.bfloat16()) and not layers.subpixel_is_faster(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert layers.subpixel_is_faster(x)


@pytest.mark.parametrize("kernel, stride", [
    (5, 2), (3, 2), (4, 2), (2, 2), (5, 1), (4, 1), (3, 1), (3, 3), (5, 3), (6, 3)])
def test_transposed_same_equals_full_transposed_convolution_cropped(kernel, stride):
    """TF's SAME transposed convolution is the full one cropped to [before, before + s * size),
    before = (k - s) // 2; the layer computes it without a crop (the shifted kernel), gradients
    too, float64 to rounding."""
    torch.manual_seed(0)
    layer = ConvTranspose2dSame(3, 4, kernel, stride).double()
    with torch.no_grad():
        layer.bias.normal_()
    x1 = torch.randn(2, 3, 5, 6, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    before = (kernel - stride) // 2
    want = F.conv_transpose2d(x1, layer.weight, layer.bias, stride)
    want = want[..., before: before + 5 * stride, before: before + 6 * stride]
    got = layer(x2)
    assert got.shape == (2, 4, 5 * stride, 6 * stride)
    assert_same_with_gradients(got, want, (x2, layer.weight, layer.bias),
                               (x1, layer.weight, layer.bias))


@pytest.mark.parametrize("pad", [(1, 2, 1, 2), (0, 1, 2, 0), (3, 0, 0, 0)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_zero_pad_equals_f_pad_with_gradients(pad, channels_last):
    """`zero_pad` gives F.pad's zeros and values, keeps x's memory layout, and its gradient is
    F.pad's (a view of the padded gradient's interior)."""
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 6)
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    want, got = F.pad(x1, pad), zero_pad(x2, pad)
    assert torch.equal(got, want)
    assert got.is_contiguous(memory_format=torch.channels_last if channels_last
                             else torch.contiguous_format)
    g = torch.randn_like(want)
    (gw,), (gg,) = torch.autograd.grad(want, x1, g), torch.autograd.grad(got, x2, g)
    assert torch.equal(gg, gw)


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("size, pad", [((8, 6), (1, 2, 1, 2)), ((7, 6), (1, 2, 2, 2))])
def test_conv_same_stride_two_equals_tf_padding_then_convolution(monkeypatch, shift, size, pad):
    """Stride 2: TF pads 1 before and 2 after an even size, 2 and 2 an odd one (k = 5); the layer
    equals F.pad then the convolution, gradients too, float64, with the input padded and with
    the shifted kernel (`strided_shift_is_faster`, with AMX in bf16)."""
    import slotlab.nn.layers as layers

    monkeypatch.setattr(layers, "strided_shift_is_faster", lambda x: shift)
    torch.manual_seed(0)
    layer = Conv2dSame(3, 4, 5, stride=2, relu=True).double()
    with torch.no_grad():
        layer.bias.normal_()
    x1 = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    want = F.relu(F.conv2d(F.pad(x1, pad), layer.weight, layer.bias, 2))
    got = layer(x2)
    assert got.shape == (2, 4, (size[0] + 1) // 2, 3)
    assert_same_with_gradients(got, want, (x2, layer.weight, layer.bias),
                               (x1, layer.weight, layer.bias))


@pytest.mark.parametrize("shape", [(3, 5, 4, 6), (2, 4, 1, 1), (1, 3, 7, 2)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_bias_grad_is_the_sum_over_batch_and_pixels(shape, channels_last):
    torch.manual_seed(0)
    g = torch.randn(*shape, dtype=torch.float64)
    if channels_last:
        g = g.to(memory_format=torch.channels_last)
    torch.testing.assert_close(bias_grad(g), g.sum(dim=(0, 2, 3)))
    b = g.bfloat16()  # bf16: the sum of the rounded values, rounded once
    torch.testing.assert_close(bias_grad(b).double(), b.double().sum(dim=(0, 2, 3)).bfloat16()
                               .double(), rtol=0.01, atol=0.01)


def test_transposed_same_needs_kernel_at_least_stride():
    with pytest.raises(ValueError, match="kernel_size >= stride"):
        ConvTranspose2dSame(3, 4, 1, 2)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("bf16", [False, True])
@pytest.mark.parametrize("cls, stride", [
    (Conv2dSame, 1), (Conv2dSame, 2), (ConvTranspose2dSame, 1), (ConvTranspose2dSame, 2)])
def test_onednn_fused_relu_equals_the_unfused_layer(cls, stride, channels_last, bf16,
                                                    monkeypatch):
    """On the CPU a layer with a ReLU runs as one oneDNN convolution with the bias and the ReLU
    fused (spied; where the torch build has the op), in training and inference: output and
    gradients (input, weight, bias) equal the unfused layer's (`bias_relu`) in float32 within
    1e-5. In bf16 (autocast) they equal the float32 layer's on the bf16-rounded input and
    parameters (the fused op rounds once, after the bias; the unfused layer rounds before it, and
    a ReLU that cuts one value differently moves these small gradients by several percent)."""
    import slotlab.nn.layers as layers

    if not layers.has_onednn_pointwise():
        pytest.skip("this torch build has no oneDNN pointwise convolution")
    monkeypatch.setattr(layers, "cpu_has_amx", lambda: True)  # no sub-pixel path
    torch.manual_seed(0)
    layer = cls(8, 6, 5, stride, relu=True)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 8, 9, 8)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    calls = []
    real = layers.conv_relu_onednn

    def spy(*args, **kwargs):
        calls.append(kwargs.get("transposed", False))
        return real(*args, **kwargs)

    def run(module: torch.nn.Module, x: torch.Tensor, fused: bool,
            autocast: bool) -> tuple[torch.Tensor, ...]:
        monkeypatch.setattr(layers, "onednn_fused_relu", lambda t: fused)
        xg = x.clone().requires_grad_()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            with torch.no_grad():
                inferred = module(xg)
            out = module(xg)
        g = torch.linspace(-1, 1, out.numel()).reshape(out.shape).to(out.dtype)
        grads = torch.autograd.grad(out, (xg, module.weight, module.bias), g)
        return tuple(t.float() for t in (inferred, out.detach(), *grads))

    monkeypatch.setattr(layers, "conv_relu_onednn", spy)
    if bf16:
        rounded = cls(8, 6, 5, stride, relu=True)
        with torch.no_grad():
            for mine, theirs in zip(rounded.parameters(), layer.parameters(), strict=True):
                mine.copy_(theirs.bfloat16())
        want = run(rounded, x.bfloat16().float(), False, False)
    else:
        want = run(layer, x, False, False)
    got = run(layer, x, True, bf16)
    transposed = cls is ConvTranspose2dSame
    assert calls == [transposed, transposed]  # inference and training, the fused run only
    for a, e in zip(got, want, strict=True):
        assert a.shape == e.shape
        if bf16:
            assert (a - e).norm() <= 0.01 * e.norm()
        else:
            torch.testing.assert_close(a, e, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_bias_relu_equals_add_and_relu(channels_last, dtype):
    """relu(y + bias) and its gradients as autograd computes them from the addition and `F.relu`
    (y's gradient bit for bit); the output keeps y's memory layout."""
    torch.manual_seed(0)
    y0 = torch.randn(3, 5, 9, 8, dtype=dtype)
    if channels_last:
        y0 = y0.contiguous(memory_format=torch.channels_last)
    y1, y2 = y0.clone().requires_grad_(), y0.clone().requires_grad_()
    b1 = torch.randn(5, requires_grad=True)
    b2 = b1.detach().clone().requires_grad_()
    want = F.relu(y1 + b1.to(dtype)[:, None, None])
    got = bias_relu(y2 * 1, b2)  # a tensor of its own, as a convolution's output
    assert torch.equal(got, want) and got.shape == y0.shape
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


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("grad", [True, False])
def test_layers_trace_into_one_compiled_graph(grad, channels_last):
    """Under torch.compile the layers take plain ops (F.pad, bias + ReLU) where their own
    autograd functions would break the graph: a break makes each layer a frame of its own, then
    compiled for symbolic sizes, on which a strided layer's TF padding fails to lower. fullgraph
    raises on any break; the compiled stack equals the eager one."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        Conv2dSame(3, 8, 5, stride=2, relu=True), Conv2dSame(8, 8, 5, stride=1, relu=True),
        Conv2dSame(8, 8, 5, stride=2, relu=True), ConvTranspose2dSame(8, 8, 5, stride=2, relu=True),
        ConvTranspose2dSame(8, 4, 3, stride=1))
    x = torch.randn(2, 3, 16, 16)
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(
            memory_format=torch.channels_last)
    x.requires_grad_(grad)
    compiled = torch.compile(model, backend="eager", fullgraph=True)
    with torch.set_grad_enabled(grad):
        got, want = compiled(x), model(x)
    torch.testing.assert_close(got, want)
    if grad:
        g = torch.randn_like(want)
        torch.testing.assert_close(torch.autograd.grad(got, x, g)[0],
                                   torch.autograd.grad(want, x, g)[0])


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("x_last, w_last", [(False, False), (True, False), (False, True)])
def test_fused_convolution_operator_passes_the_operator_checks(transposed, x_last, w_last):
    """`slotlab::conv_relu` as torch.compile sees it: its declared output shape and layout
    (channels_last where the input or the weight is) equal oneDNN's, and its gradients are
    registered and traceable (torch.library.opcheck)."""
    import slotlab.nn.layers as layers

    if not layers.has_onednn_pointwise():
        pytest.skip("this torch build has no oneDNN convolutions with post-ops")
    torch.manual_seed(0)
    cl = torch.channels_last
    x = torch.randn(2, 4, 7, 6, requires_grad=True)
    w = torch.randn(4 if transposed else 5, 5 if transposed else 4, 3, 3, requires_grad=True)
    if x_last:
        x = x.detach().contiguous(memory_format=cl).requires_grad_()
    if w_last:
        w = w.detach().contiguous(memory_format=cl).requires_grad_()
    b = torch.randn(5, requires_grad=True)
    stride, padding = ([2, 2], [1, 1]) if transposed else ([2, 1], [1, 0])
    torch.library.opcheck(torch.ops.slotlab.conv_relu.default,
                          (x, w, b, stride, padding, transposed))
