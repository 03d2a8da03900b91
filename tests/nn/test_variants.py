"""Slot Attention and its variants (initialisers, implicit differentiation, the locality bias,
Invariant Slot Attention, mask attention) behave as described, and each trains for a few steps."""

import json
import math

import pytest
import torch

from slotlab.cli import main
from slotlab.errors import ConfigError
from slotlab.models import SlotAttentionAutoEncoder
from slotlab.nn import (
    GaussianSlots,
    InvariantSlotAttention,
    LearnedSlots,
    LocalityBias,
    SlotAttention,
)
from slotlab.nn.grid import coordinate_grid
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def make(**kw):
    torch.manual_seed(0)
    return SlotAttention(num_iterations=3, slot_size=16, mlp_hidden_size=32, input_size=8, **kw)


def grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()}


def last_iteration(sa, x, start, bias=None):
    """The last iteration by hand from `start` [B, K, D]."""
    xn = sa.norm_inputs(x)
    return sa.iteration(start, sa.project_k(xn), sa.project_v(xn), bias)


def test_implicit_differentiation_only_last_iteration_gets_gradient():
    x, noise = torch.randn(2, 10, 8), torch.randn(2, 4, 16)
    init = GaussianSlots(4, 16)
    plain, implicit = make(), make(implicit_differentiation=True)
    implicit.load_state_dict(plain.state_dict())
    out_plain = plain(x, init(2, noise=noise)).slots
    out_implicit = implicit(x, init(2, noise=noise)).slots
    torch.testing.assert_close(out_plain, out_implicit)  # same forward pass
    init.zero_grad()
    g = grads(implicit, out_implicit.square().sum())
    assert init.slots_mu.grad is None and init.slots_log_sigma.grad is None  # no path to init
    # reference: T-1 iterations without gradient, then one iteration with it
    ref = make()
    ref.load_state_dict(plain.state_dict())
    with torch.no_grad():
        warm = ref(x, init(2, noise=noise), num_iterations=2).slots
    g_ref = grads(ref, last_iteration(ref, x, warm)[0].square().sum())
    for name in ("project_q.weight", "project_k.weight", "gru.weight_hh", "mlp.0.weight"):
        torch.testing.assert_close(g[name], g_ref[name])
    g_plain = grads(plain, plain(x, init(2, noise=noise)).slots.square().sum())
    assert not torch.allclose(g["project_q.weight"], g_plain["project_q.weight"])


def test_learned_initialisation_bo_qsa():
    x = torch.randn(2, 10, 8)
    init = LearnedSlots(4, 16)
    sa = make(straight_through=init.straight_through)
    assert init.straight_through and sa.implicit_differentiation
    assert init.slots_queries.shape == (1, 4, 16)
    torch.testing.assert_close(init(2, noise=torch.randn(2, 4, 16)), init(2))  # no sampling
    a = sa(x, init(2)).slots
    a.square().sum().backward()
    g = init.slots_queries.grad.clone()
    assert g.abs().sum() > 0
    # straight-through: the queries get the gradient the last iteration gives its input slots
    with torch.no_grad():
        warm = sa(x, init(2), num_iterations=2).slots
    start = warm.clone().requires_grad_(True)
    last_iteration(sa, x, start)[0].square().sum().backward()
    torch.testing.assert_close(g[0], start.grad.sum(0))
    with pytest.raises(ValueError, match="learned slot initialisation has 4 slots"):
        init(2, num_slots=6)


def test_test_time_slots_and_iterations():
    model = SlotAttentionAutoEncoder(**TINY_MODEL)
    out = model(torch.rand(2, 3, 32, 32), num_slots=7, num_iterations=5,
                return_all_attention=True)
    assert out.masks.shape == (2, 7, 1, 32, 32) and len(out.attention_per_iteration) == 5


@pytest.mark.parametrize("extra", [["--implicit-diff"], ["--slot-init", "learned"],
                                   ["--grad-clip", "0.05"], ["--invariant"],
                                   ["--mask-attention"]])
def test_variant_trains_and_evaluates(tmp_path, extra, monkeypatch, capsys):
    data = write_folder(tmp_path / "data")
    preset = write_preset(tmp_path / "tiny.yaml")
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, *extra]) == 0
    config = json.loads((run / "model" / "config.json").read_text())["config"]
    assert config["implicit_differentiation"] is ("--implicit-diff" in extra)
    assert config["slot_init"] == ("learned" if "learned" in extra else "gaussian")
    assert config["invariant"] is ("--invariant" in extra)
    assert config["mask_attention"] is ("--mask-attention" in extra)
    assert calls == ([0.05] * 6 if "--grad-clip" in extra else [])
    capsys.readouterr()
    assert main(["eval", str(run), "--num", "8", "--json", "--num-iterations", "5"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["num_iterations"] == 5 and "fg_ari" in result
    assert -1.0 <= result["fg_ari_attn"] <= 1.0 or math.isnan(result["fg_ari_attn"])
    if "learned" in extra:  # K is fixed by the learned queries: one error line, not a no-op
        assert main(["eval", str(run), "--num", "8", "--num-slots", "6"]) != 0
        assert "cannot be evaluated with 6 slots" in capsys.readouterr().err
    else:
        assert main(["eval", str(run), "--num", "8", "--json", "--num-slots", "6"]) == 0
        assert json.loads(capsys.readouterr().out)["num_slots"] == 6


def make_invariant(learned=False, **kw):
    torch.manual_seed(0)
    init = LearnedSlots(4, 16) if learned else GaussianSlots(4, 16)
    sa = InvariantSlotAttention(num_iterations=3, slot_size=16, mlp_hidden_size=32,
                                grid_size=(5, 6), num_slots=4, fixed_init_positions=learned,
                                input_size=8, straight_through=learned, **kw)
    return init, sa


def test_invariant_frames_are_the_attention_moments():
    init, sa = make_invariant()
    x = torch.randn(2, 30, 8)
    out = sa(x, init(2, noise=torch.randn(2, 4, 16)), return_all_attention=True)
    attn = out.attention
    assert out.slots.shape == (2, 4, 16) and attn.shape == (2, 4, 30)
    assert len(out.attention_per_iteration) == 3
    weights = attn + sa.epsilon
    weights = weights / weights.sum(dim=2, keepdim=True)  # [B, K, N]
    grid = sa.grid  # [N, 2] in [-1, 1], row-major
    assert grid[0].tolist() == [-1.0, -1.0] and grid[-1].tolist() == [1.0, 1.0]
    mean = weights @ grid
    torch.testing.assert_close(out.positions, mean)
    std = (weights @ grid.square() - mean.square()).clamp_min(0).sqrt().clamp(sa.min_scale, 2)
    torch.testing.assert_close(out.scales, std, atol=1e-5, rtol=1e-4)


def test_invariant_slots_see_inputs_in_their_own_frame():
    """The keys depend on the slot's position: moving one slot's initial position changes what
    it attends to; the relative-position projection and the key MLP get gradient."""
    init, sa = make_invariant(learned=True)
    x = torch.randn(1, 30, 8)
    attn_a = sa(x, init(1), num_iterations=1).attention
    sa.init_positions[0, 0] = -sa.init_positions[0, 0]
    attn_b = sa(x, init(1), num_iterations=1).attention
    assert not torch.allclose(attn_a[0, 0], attn_b[0, 0], atol=1e-4)
    g = grads(sa, sa(x, init(1)).slots.square().sum())
    for name in ("project_grid.weight", "frame_mlp.1.weight"):
        assert g[name] is not None and g[name].abs().sum() > 0, name
    assert init.slots_queries.grad.abs().sum() > 0
    assert "init_positions" in sa.state_dict()  # the fixed initial frames travel with the model


def test_invariant_decoder_draws_in_the_slot_frame():
    """Moving a slot's position by whole pixels moves its rendering by the same pixels (away
    from the border, where the convolutions see padding)."""
    from slotlab.nn import SlotAttentionOutput

    model = SlotAttentionAutoEncoder(**{**TINY_MODEL, "decoder_strides": [1, 1, 1]},
                                     invariant=True)
    assert model.decoder_pos.in_features == 2 and model.encoder_pos is None
    slots = torch.randn(1, 1, 16)
    positions, scales = torch.tensor([[[0.1, -0.2]]]), torch.tensor([[[0.3, 0.4]]])
    step = 2.0 / 31  # one pixel of a 32-pixel grid in [-1, 1] coordinates
    moved = positions + torch.tensor([3 * step, 5 * step])
    rgb_a, alpha_a = model.decode(SlotAttentionOutput(slots, None, None, positions, scales))
    rgb_b, alpha_b = model.decode(SlotAttentionOutput(slots, None, None, moved, scales))
    a = torch.cat([rgb_a, alpha_a], dim=2)[0, 0]  # [4, 32, 32]
    b = torch.cat([rgb_b, alpha_b], dim=2)[0, 0]
    torch.testing.assert_close(b[:, 3 + 8 : 24, 5 + 8 : 24], a[:, 8 : 24 - 3, 8 : 24 - 5],
                               atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a[:, 8:24, 8:24], b[:, 8:24, 8:24], atol=1e-3)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.positions.shape == (2, 4, 2) and out.scales.shape == (2, 4, 2)
    assert out.masks.shape == (2, 4, 1, 32, 32)


@pytest.mark.parametrize("invariant", [False, True])
def test_final_logits_are_the_next_iterations_attention(invariant):
    """`final_logits` of the final slots are what one more iteration would attend with: their
    softmax over slots is that iteration's attention map."""
    x, noise = torch.randn(2, 30, 8), torch.randn(2, 4, 16)
    if invariant:
        init, sa = make_invariant()
        out = sa(x, init(2, noise=noise))
        xn = sa.norm_inputs(x)
        _, attn_next, *_ = sa.frame_iteration(out.slots, out.positions, out.scales,
                                              sa.project_k(xn)[:, None],
                                              sa.project_v(xn)[:, None])
    else:
        sa = make()
        out = sa(x, GaussianSlots(4, 16)(2, noise=noise))
        _, attn_next = last_iteration(sa, x, out.slots)
    logits = sa.final_logits(x, out)
    assert logits.shape == (2, 4, 30) and logits.dtype == torch.float32
    torch.testing.assert_close(logits.softmax(dim=1), attn_next)


@pytest.mark.parametrize("strides", [(1, 1, 1, 1), (1, 2, 1, 1)])
def test_mask_attention_adds_the_attention_logits_to_the_masks(strides):
    """With `mask_attention` the mask logits are the decoder's plus the final slots' attention
    logits placed on the pixels (exactly the cells' values where a cell is centred on a pixel);
    the masks then follow the input: with the decoder's alpha output zeroed they are the
    softmax of the attention term alone, and the key projection gets gradient through them."""
    torch.manual_seed(0)
    kw = {**TINY_MODEL, "encoder_strides": strides}
    plain = SlotAttentionAutoEncoder(**kw)
    model = SlotAttentionAutoEncoder(**kw, mask_attention=True)
    model.load_state_dict(plain.state_dict())
    assert model.config.mask_attention and not plain.config.mask_attention
    image, noise = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, TINY_MODEL["num_slots"], 16)
    a, b = plain(image, noise=noise), model(image, noise=noise)
    torch.testing.assert_close(a.recons, b.recons)
    term = b.mask_logits - a.mask_logits  # [B, K, 1, H, W]
    sa = model.slot_attention(model.encode(image), model.initial_slots(2, noise=noise))
    logits = model.slot_attention.final_logits(model.encode(image), sa)  # [B, K, N]
    h, w = model.feature_size
    rows, cols = model.cell_pixels
    on_cells = term[:, :, 0][:, :, rows.long()][:, :, :, cols.long()]
    torch.testing.assert_close(on_cells, logits.reshape(2, -1, h, w))
    last = model.decoder_cnn[-1]
    with torch.no_grad():  # the decoder's alpha channel -> 0
        last.weight[:, 3:] = 0  # [C_in, C_out, k, k]
        last.bias[3:] = 0
    out = model(image, noise=noise)
    torch.testing.assert_close(out.masks, term.softmax(dim=1), atol=1e-5, rtol=1e-4)
    g = grads(model, out.recon_combined.square().mean())
    assert g["slot_attention.project_k.weight"].abs().sum() > 0


@pytest.mark.parametrize("invariant", [False, True])
def test_test_iterations_run_in_eval_mode_only(invariant):
    """`test_iterations` T' runs T' iterations in eval mode and T in training; a call's
    `num_iterations` overrides both; the option travels in the model's config."""
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, invariant=invariant, test_iterations=5)
    assert model.config.test_iterations == 5
    image = torch.rand(2, 3, 32, 32)
    assert len(model(image, return_all_attention=True).attention_per_iteration) == 3
    model.eval()
    assert len(model(image, return_all_attention=True).attention_per_iteration) == 5
    assert len(model(image, return_all_attention=True, num_iterations=2)
               .attention_per_iteration) == 2
    with pytest.raises(ConfigError, match="test_iterations must be >= 1"):
        SlotAttentionAutoEncoder(**TINY_MODEL, test_iterations=0)


def test_locality_term_by_hand_and_it_separates_two_places_of_one_colour():
    """`LocalityBias`: from the second iteration the logits get -|x_n - mu_k|^2 / (2 s^2) with
    mu_k the mean position of slot k's previous attention; final_logits include it (their
    softmax is the next iteration's attention); the first iteration is the paper's."""
    positions = coordinate_grid((5, 6))
    sa = make(attention_bias=LocalityBias(positions))
    plain = make()
    plain.load_state_dict(sa.state_dict(), strict=False)
    x, noise = torch.randn(2, 30, 8), torch.randn(2, 4, 16)
    init = GaussianSlots(4, 16)
    # one iteration: no previous attention, so no term
    torch.testing.assert_close(sa(x, init(2, noise=noise), num_iterations=1).slots,
                               plain(x, init(2, noise=noise), num_iterations=1).slots)
    out = sa(x, init(2, noise=noise), return_all_attention=True)
    attns = out.attention_per_iteration
    # the term by hand from the first iteration's attention
    w = attns[0] + sa.epsilon
    w = w / w.sum(dim=-1, keepdim=True)
    mu = w @ positions  # [B, K, 2]
    d2 = ((positions[None, None] - mu[:, :, None]) ** 2).sum(-1)
    bias = sa.attention_bias
    torch.testing.assert_close(bias(attns[0]), -d2 / (2 * 0.5**2))
    slots1, _ = last_iteration(sa, x, init(2, noise=noise))
    _, attn2 = last_iteration(sa, x, slots1, bias(attns[0]))
    torch.testing.assert_close(attn2, attns[1])
    logits = sa.final_logits(x, out)
    _, attn_next = last_iteration(sa, x, out.slots, bias(out.attention))
    torch.testing.assert_close(logits.softmax(dim=1), attn_next)
    # the learned width gets gradient, also where only the last iteration is differentiated
    for kw in ({}, {"straight_through": True}, {"implicit_differentiation": True}):
        sa_kw = make(attention_bias=LocalityBias(positions), **kw)
        g = grads(sa_kw, sa_kw(x, init(2, noise=noise)).slots.square().sum())
        assert g["attention_bias.log_width"].abs() > 0, kw

    # two places with the same features: the paper's attention cannot tell them apart (the
    # logits are equal, so every slot attends both places equally); with the term, a slot that
    # started on one place keeps to it
    attention = torch.full((1, 4, 30), 0.25)
    attention[0, 0, :3], attention[0, 0, 3:] = 0.97, 0.01  # slot 0 on the first cells
    b = LocalityBias(positions)(attention)
    assert b[0, 0, :3].mean() > b[0, 0, -3:].mean() + 1.0


def test_locality_width_grows_with_the_area_a_slot_covers():
    """`area` c: slot k's width is s_k^2 = s^2 + c A_k / (2 pi), A_k = 4 sum_n a_kn / N. A slot
    holding most of the image (a background) gets a near-flat term; a slot on a few cells, or on
    a few cells in two places, keeps about the width s."""
    positions = coordinate_grid((8, 8))  # N = 64
    attention = torch.full((1, 3, 64), 0.001)
    attention[0, 0] = 0.998  # slot 0: the background, all but the cells below
    attention[0, 0, [0, 1, 62, 63]] = 0.001
    attention[0, 1, [0, 1]] = 0.998  # slot 1: two cells in the first corner
    attention[0, 2, [0, 1, 62, 63]] = 0.499  # slot 2: two cells in each of two far corners
    plain, grown = LocalityBias(positions, width=0.25), LocalityBias(positions, width=0.25,
                                                                     area=1.0)
    w = attention + 1e-8
    mu = (w / w.sum(dim=-1, keepdim=True)) @ positions
    d2 = ((positions[None, None] - mu[:, :, None]) ** 2).sum(-1)
    area = 4 * attention.sum(dim=-1) / 64  # [1, 3]
    torch.testing.assert_close(plain(attention), -d2 / (2 * 0.25**2))
    torch.testing.assert_close(grown(attention),
                               -d2 / (2 * (0.25**2 + area[..., None] / (2 * math.pi))))
    # the background slot's farthest cell: -16 / 8 = -2 with one width, about -1.5 grown
    assert plain(attention)[0, 0].min() < -15 and grown(attention)[0, 0].min() > -2
    # the small slots keep most of their term (A = 1/8: 76%), the two-place one included, where
    # the background's keeps a tenth
    ratio = grown(attention)[0] / plain(attention)[0]
    assert ratio[0].max() < 0.15 and ratio[1:].min() > 0.7
    with pytest.raises(ConfigError, match="locality_area must be >= 0"):
        SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, locality_area=-1)
    with pytest.raises(ConfigError, match="needs attention_locality"):
        SlotAttentionAutoEncoder(**TINY_MODEL, locality_area=1.0)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, locality_area=2.0)
    assert model.slot_attention.attention_bias.area == 2.0


def test_attention_locality_model_option_and_cli(tmp_path):
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, mask_attention=True)
    assert model.config.attention_locality
    assert model.slot_attention.attention_bias.positions.shape == (
        model.feature_size[0] * model.feature_size[1], 2)
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.isfinite(out.recon_combined).all()
    with pytest.raises(ConfigError, match="its own slot positions"):
        SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, invariant=True)
    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, "--attention-locality"]) == 0
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["config"]["attention_locality"] is True
