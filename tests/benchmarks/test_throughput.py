"""benchmarks/throughput.py --kernels: the backend of each convolution of a training step."""

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
