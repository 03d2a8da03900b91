"""Fast paths (channels_last, bf16 autocast with float32 attention and mask combination) against
the plain float32 model."""

import pytest
import torch

from slotlab.models import build_model

SMALL = {"resolution": [32, 32], "num_slots": 4, "slot_size": 32, "mlp_hidden_size": 64,
         "encoder_channels": [32, 32, 32, 32], "decoder_channels": [32, 32, 32],
         "decoder_strides": [2, 2, 1]}


def make(task="object_discovery", **kwargs):
    torch.manual_seed(0)
    model = build_model(task, **{**SMALL, **kwargs}) if task == "object_discovery" else \
        build_model(task, resolution=[32, 32], num_slots=4, encoder_channels=[32] * 4)
    image = torch.rand(2, 3, 32, 32) * 2 - 1
    noise = torch.randn(2, 4, model.slot_attention.slot_size)
    return model, image, noise


def grads(model):
    return {n: p.grad.clone() for n, p in model.named_parameters()}


def test_channels_last_equals_plain():
    model, image, noise = make()
    out = model(image, noise=noise)
    out.recon_combined.square().mean().backward()
    plain = grads(model)
    model.zero_grad()
    model = model.to(memory_format=torch.channels_last)
    fast = model(image.contiguous(memory_format=torch.channels_last), noise=noise)
    fast.recon_combined.square().mean().backward()
    for name in ("recon_combined", "recons", "masks", "slots", "attention"):
        torch.testing.assert_close(getattr(fast, name), getattr(out, name), atol=1e-5, rtol=1e-4)
    for name, g in grads(model).items():
        torch.testing.assert_close(g, plain[name], atol=1e-5, rtol=1e-3, msg=name)


@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_bf16_autocast_keeps_attention_in_float32(task):
    model, image, noise = make(task)
    ref = model(image, noise=noise)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, noise=noise)
    # the attention (softmax over slots, epsilon, weighted mean) runs in float32 under autocast
    assert out.attention.dtype == torch.float32
    torch.testing.assert_close(out.attention.sum(dim=1), torch.ones_like(out.attention[:, 0]),
                               atol=1e-6, rtol=0)
    if task == "object_discovery":
        assert out.masks.dtype == out.recon_combined.dtype == torch.float32
        torch.testing.assert_close(out.masks.sum(dim=1), torch.ones_like(out.masks[:, 0]),
                                   atol=1e-6, rtol=0)
        pairs = [(out.recon_combined, ref.recon_combined), (out.masks, ref.masks)]
    else:
        pairs = [(out.predictions.float(), ref.predictions)]
    # the stated bf16 bound (README, "Speed"): max abs error <= 0.02 on outputs in [-1, 1] / [0, 1]
    for fast, plain in pairs:
        assert torch.isfinite(fast).all()
        err = (fast - plain).abs().max().item()
        assert err <= 0.02, err
    # and bf16 is really used: the outputs are not bit-identical to float32
    assert not torch.equal(pairs[0][0], pairs[0][1])


def test_bf16_backward_is_finite():
    model, image, noise = make()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, noise=noise)
    ((out.recon_combined - image) ** 2).mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("channels_last", [False, True])
def test_padded_last_layer_equals_plain(channels_last):
    """The last decoder layer computed with 8 outputs (4 of them zero) gives the same outputs
    and gradients, and really takes the padded path."""
    model, image, noise = make()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    image = image.contiguous(memory_format=fmt)
    out = model(image, noise=noise)
    out.recon_combined.square().mean().backward()
    plain = grads(model)
    model.zero_grad()
    model.pad_last_layer(8)
    calls = []
    handle = torch.nn.functional.conv_transpose2d
    try:
        def spy(x, weight, *args):
            calls.append(weight.shape)
            return handle(x, weight, *args)
        torch.nn.functional.conv_transpose2d = spy
        fast = model(image, noise=noise)
    finally:
        torch.nn.functional.conv_transpose2d = handle
    assert calls and calls[-1][1] == 8  # [C_in, 8, k, k]
    fast.recon_combined.square().mean().backward()
    for name in ("recon_combined", "recons", "masks"):
        torch.testing.assert_close(getattr(fast, name), getattr(out, name), atol=1e-6, rtol=1e-5)
    for name, g in grads(model).items():
        assert g.shape == plain[name].shape  # the parameters themselves are not padded
        torch.testing.assert_close(g, plain[name], atol=1e-6, rtol=1e-5, msg=name)
    assert "pad_out_channels" not in str(model.state_dict().keys())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_graphs_and_padding_match_plain_training_step():
    """compile mode reduce-overhead (CUDA graphs) + padded last layer: two training steps give
    the same loss and parameters as the plain CUDA model (TF32 off)."""
    from slotlab.train.loop import compute_loss

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        results = []
        for fast in (False, True):
            model, image, noise = make()
            model = model.cuda()
            forward = model
            if fast:
                model.pad_last_layer(8)
                forward = torch.compile(model, mode="reduce-overhead")
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            batch = {"image": image.cuda()}
            losses = []
            for _ in range(3):
                if fast:
                    torch.compiler.cudagraph_mark_step_begin()
                loss, _ = compute_loss(forward, batch, "object_discovery", noise.cuda())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            results.append((losses, [p.detach().cpu() for p in model.parameters()]))
        torch.testing.assert_close(results[1][0], results[0][0], atol=1e-5, rtol=1e-4)
        for a, b in zip(results[1][1], results[0][1], strict=True):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-3)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_cuda_fast_paths_match_cpu_float32(task):
    """On CUDA with TF32 off: channels_last and torch.compile within 1e-4 of the CPU float32
    model, bf16 autocast within the stated 0.02."""
    model, image, noise = make(task)
    ref = model(image, noise=noise)
    name = "recon_combined" if task == "object_discovery" else "predictions"
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        model = model.cuda().to(memory_format=torch.channels_last)
        x = image.cuda().contiguous(memory_format=torch.channels_last)
        n = noise.cuda()
        plain = getattr(model(x, noise=n), name).float().cpu()
        torch.testing.assert_close(plain, getattr(ref, name), atol=1e-4, rtol=0)
        compiled = getattr(torch.compile(model)(x, noise=n), name).float().cpu()
        torch.testing.assert_close(compiled, getattr(ref, name), atol=1e-4, rtol=0)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            fast = getattr(model(x, noise=n), name).float().cpu()
        assert torch.isfinite(fast).all()
        assert (fast - getattr(ref, name)).abs().max().item() <= 0.02
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old
