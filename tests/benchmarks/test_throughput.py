"""benchmarks/throughput.py --kernels: the backend of each convolution of a training step."""

import pytest
import torch


def test_conv_backend_names_a_backend_for_plain_and_transposed_convolutions(tp):
    x, w = torch.randn(2, 8, 16, 16), torch.randn(8, 8, 3, 3)
    plain = tp.conv_backend((x, w, None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1))
    transposed = tp.conv_backend((x, w, None, [2, 2], [1, 1], [1, 1], True, [0, 0], 1))
    assert plain and "unknown" not in plain and "???" not in plain
    assert transposed and "unknown" not in transposed and "???" not in transposed
    assert plain != transposed


def test_kernel_report_lists_every_convolution_of_a_step(tp):
    report = tp.kernel_report("quickstart", "fp32-cl", "cpu", batch=2)
    rows = [line.split(" | ") for line in report.splitlines() if line.startswith("| forward")]
    # quickstart: 4 encoder convolutions, 4 decoder transposed convolutions (batch 2 x 5 slots)
    assert sum(int(r[-1].rstrip(" |")) for r in rows if r[1] == "conv") == 4
    assert sum(int(r[-1].rstrip(" |")) for r in rows if r[1] == "transposed") == 4
    assert all(r[2].startswith("2x") for r in rows if r[1] == "conv")
    assert all(r[2].startswith("10x") for r in rows if r[1] == "transposed")
    assert all(r[5] == "channels_last" for r in rows)
    assert "| convolution_backward | 8 |" in report  # one per convolution


def test_model_flops_count_the_model_arithmetic(tp):
    """The FLOPs reported are the model's (2 per multiply-add; a transposed convolution's over its
    input pixels): a 5x5 stride-2 TF-SAME transposed convolution computes with a 6x6 kernel (one
    zero tap in front), counted as 5x5, and a convolution with its ReLU fused by oneDNN on the
    CPU counts as a convolution; backward: the weight gradients, and the input gradients but the
    first layer's (the image needs none)."""
    from slotlab.nn.layers import Conv2dSame, ConvTranspose2dSame

    model = torch.nn.Sequential(Conv2dSame(3, 8, 5, 1, relu=True),
                                ConvTranspose2dSame(8, 6, 5, 2, relu=True),
                                ConvTranspose2dSame(6, 4, 3, 1))
    x = torch.randn(2, 3, 7, 5)
    layers = [2 * 2 * 7 * 5 * 3 * 8 * 25, 2 * 2 * 7 * 5 * 8 * 6 * 25, 2 * 2 * 14 * 10 * 6 * 4 * 9]
    assert tp.model_flops(model, lambda: model(x)) == sum(layers)
    backward = sum(layers) + sum(layers[1:])
    assert tp.model_flops(model, lambda: model(x).sum().backward()) == sum(layers) + backward


@pytest.mark.parametrize("shift", [False, True])
def test_model_flops_leave_out_a_strided_convolutions_zero_taps(tp, monkeypatch, shift):
    """A stride-2 TF-SAME convolution on an even input computes with one zero tap in front of its
    5x5 kernel where that is the faster (`strided_shift_is_faster`: with AMX in bf16) and pads its
    input elsewhere; counted as 5x5 either way."""
    import slotlab.nn.layers as layers
    from slotlab.nn.layers import Conv2dSame

    monkeypatch.setattr(layers, "strided_shift_is_faster", lambda x: shift)
    model = torch.nn.Sequential(Conv2dSame(3, 8, 5, 1, relu=True),
                                Conv2dSame(8, 6, 5, 2, relu=True))
    x = torch.randn(2, 3, 8, 6)
    convs = [2 * 2 * 8 * 6 * 3 * 8 * 25, 2 * 2 * 4 * 3 * 8 * 6 * 25]
    assert tp.model_flops(model, lambda: model(x)) == sum(convs)
    backward = sum(convs) + convs[1]
    assert tp.model_flops(model, lambda: model(x).sum().backward()) == sum(convs) + backward
