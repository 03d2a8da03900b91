"""Slot Attention variants change the model as described, and each trains for a few steps."""

import json
import math

import pytest
import torch

from slotlab.cli import main
from slotlab.models import SlotAttentionAutoEncoder
from slotlab.models.object_discovery import fourier_features
from slotlab.nn import SlotAttention
from slotlab.train import loop
from tests.train.helpers import TINY_ARGS, TINY_MODEL, write_folder, write_preset


def make(**kw):
    torch.manual_seed(0)
    return SlotAttention(num_slots=4, num_iterations=3, slot_size=16, mlp_hidden_size=32,
                         input_size=8, **kw)


def grads(module, loss):
    module.zero_grad()
    loss.backward()
    return {n: (None if p.grad is None else p.grad.clone()) for n, p in module.named_parameters()}


def test_implicit_differentiation_only_last_iteration_gets_gradient():
    x, noise = torch.randn(2, 10, 8), torch.randn(2, 4, 16)
    plain, implicit = make(), make(implicit_differentiation=True)
    implicit.load_state_dict(plain.state_dict())
    out_plain, _ = plain(x, noise=noise)
    out_implicit, _ = implicit(x, noise=noise)
    torch.testing.assert_close(out_plain, out_implicit)  # same forward pass
    g = grads(implicit, out_implicit.square().sum())
    assert g["slots_mu"] is None and g["slots_log_sigma"] is None  # no path to the init
    # reference: T-1 iterations without gradient, then one iteration with it
    ref = make()
    ref.load_state_dict(plain.state_dict())
    with torch.no_grad():
        warm, _ = ref(x, noise=noise, num_iterations=2)
    inputs = ref.norm_inputs(x)
    last, _ = ref.step(warm, ref.project_k(inputs), ref.project_v(inputs), 16**-0.5)
    g_ref = grads(ref, last.square().sum())
    for name in ("project_q.weight", "project_k.weight", "gru.weight_hh", "mlp.0.weight"):
        torch.testing.assert_close(g[name], g_ref[name])
    g_plain = grads(plain, plain(x, noise=noise)[0].square().sum())
    assert not torch.allclose(g["project_q.weight"], g_plain["project_q.weight"])


def test_learned_initialisation_bo_qsa():
    x = torch.randn(2, 10, 8)
    sa = make(slot_init="learned")
    names = {n for n, _ in sa.named_parameters()}
    assert "slots_queries" in names and "slots_mu" not in names
    assert sa.slots_queries.shape == (1, 4, 16)
    a, _ = sa(x, noise=torch.randn(2, 4, 16))
    b, _ = sa(x)
    torch.testing.assert_close(a, b)  # deterministic: no sampling
    g = grads(sa, a.square().sum())
    assert g["slots_queries"] is not None and g["slots_queries"].abs().sum() > 0
    # straight-through: the queries get the gradient the last iteration gives its input slots
    with torch.no_grad():
        warm, _ = sa(x, num_iterations=2)
    start = warm.clone().requires_grad_(True)
    inputs = sa.norm_inputs(x)
    last, _ = sa.step(start, sa.project_k(inputs), sa.project_v(inputs), 16**-0.5)
    last.square().sum().backward()
    torch.testing.assert_close(g["slots_queries"][0], start.grad.sum(0))
    with pytest.raises(ValueError, match="learned slot initialisation has 4 slots"):
        sa(x, num_slots=6)


def test_test_time_slots_and_iterations():
    model = SlotAttentionAutoEncoder(**TINY_MODEL)
    out = model(torch.rand(2, 3, 32, 32), num_slots=7, num_iterations=5,
                return_all_attention=True)
    assert out.masks.shape == (2, 7, 1, 32, 32) and len(out.attention_per_iteration) == 5


@pytest.mark.parametrize("extra", [["--implicit-diff"], ["--slot-init", "learned"],
                                   ["--grad-clip", "0.05"], ["--invariant"],
                                   ["--invariant", "--decoder-frequencies", "3"],
                                   ["--invariant", "--decoder-slot-directions"],
                                   ["--mixture-sigma", "0.2"], ["--mask-attention"]])
def test_variant_trains_and_evaluates(tmp_path, extra, monkeypatch, capsys):
    data = write_folder(tmp_path / "data")
    preset = write_preset(tmp_path / "tiny.yaml")
    calls = []
    real_clip = torch.nn.utils.clip_grad_norm_

    def spy(params, max_norm, *a, **k):
        calls.append(max_norm)
        return real_clip(params, max_norm, *a, **k)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    sigmas = []
    real_mixture = loop.mixture_nll

    def mixture_spy(image, recons, mask_logits, sigma):
        sigmas.append(sigma)
        return real_mixture(image, recons, mask_logits, sigma)

    monkeypatch.setattr(loop, "mixture_nll", mixture_spy)
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, *extra]) == 0
    config = json.loads((run / "model" / "config.json").read_text())["config"]
    if "--implicit-diff" in extra:
        assert config["implicit_differentiation"] is True
    if "learned" in extra:
        assert config["slot_init"] == "learned"
    assert config.get("invariant", False) is ("--invariant" in extra)
    assert config.get("decoder_frequencies", 0) == (3 if "--decoder-frequencies" in extra else 0)
    assert config.get("decoder_slot_directions", False) is ("--decoder-slot-directions" in extra)
    assert config.get("mask_attention", False) is ("--mask-attention" in extra)
    assert calls == ([0.05] * 6 if "--grad-clip" in extra else [])
    assert sigmas == ([0.2] * 6 if "--mixture-sigma" in extra else [])
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


def make_invariant(**kw):
    from slotlab.nn import InvariantSlotAttention

    torch.manual_seed(0)
    return InvariantSlotAttention(num_slots=4, num_iterations=3, slot_size=16, mlp_hidden_size=32,
                                  grid_size=(5, 6), input_size=8, **kw)


def test_invariant_frames_are_the_attention_moments():
    sa = make_invariant()
    x = torch.randn(2, 30, 8)
    slots, attn, maps, positions, scales = sa(x, noise=torch.randn(2, 4, 16),
                                              return_all_attention=True)
    assert slots.shape == (2, 4, 16) and attn.shape == (2, 4, 30) and len(maps) == 3
    weights = attn + sa.epsilon
    weights = weights / weights.sum(dim=2, keepdim=True)  # [B, K, N]
    grid = sa.grid  # [N, 2] in [-1, 1], row-major
    assert grid[0].tolist() == [-1.0, -1.0] and grid[-1].tolist() == [1.0, 1.0]
    mean = weights @ grid
    torch.testing.assert_close(positions, mean)
    std = (weights @ grid.square() - mean.square()).clamp_min(0).sqrt().clamp(sa.min_scale, 2)
    torch.testing.assert_close(scales, std, atol=1e-5, rtol=1e-4)


def test_invariant_slots_see_inputs_in_their_own_frame():
    """The keys depend on the slot's position: moving one slot's initial position changes what
    it attends to; the relative-position projection and the key MLP get gradient."""
    sa = make_invariant(slot_init="learned")
    x = torch.randn(1, 30, 8)
    _, attn_a, *_ = sa(x, num_iterations=1)
    sa.init_positions[0, 0] = -sa.init_positions[0, 0]
    _, attn_b, *_ = sa(x, num_iterations=1)
    assert not torch.allclose(attn_a[0, 0], attn_b[0, 0], atol=1e-4)
    slots, *_ = sa(x)
    g = grads(sa, slots.square().sum())
    for name in ("project_grid.weight", "frame_mlp.1.weight", "slots_queries"):
        assert g[name] is not None and g[name].abs().sum() > 0, name
    assert "init_positions" in sa.state_dict()  # the fixed initial frames travel with the model


@pytest.mark.parametrize("frequencies, directions", [(0, False), (3, False), (0, True)])
def test_invariant_decoder_draws_in_the_slot_frame(frequencies, directions):
    """Moving a slot's position by whole pixels moves its rendering by the same pixels (away
    from the border, where the convolutions see padding); the plain model has no such frame.
    With Fourier features of the relative coordinates, or slot-set directions, the frame is the
    same."""
    model = SlotAttentionAutoEncoder(**{**TINY_MODEL, "decoder_strides": [1, 1, 1]},
                                     invariant=True, decoder_frequencies=frequencies,
                                     decoder_slot_directions=directions)
    assert model.decoder_pos.in_features == 2 + 4 * frequencies
    assert model.encoder_pos is None
    slots = torch.randn(1, 1, 16)
    positions, scales = torch.tensor([[[0.1, -0.2]]]), torch.tensor([[[0.3, 0.4]]])
    step = 2.0 / 31  # one pixel of a 32-pixel grid in [-1, 1] coordinates
    rgb_a, alpha_a = model.decode(slots, positions, scales)
    rgb_b, alpha_b = model.decode(slots, positions + torch.tensor([3 * step, 5 * step]), scales)
    a = torch.cat([rgb_a, alpha_a], dim=2)[0, 0]  # [4, 32, 32]
    b = torch.cat([rgb_b, alpha_b], dim=2)[0, 0]
    torch.testing.assert_close(b[:, 3 + 8 : 24, 5 + 8 : 24], a[:, 8 : 24 - 3, 8 : 24 - 5],
                               atol=1e-5, rtol=1e-4)
    assert not torch.allclose(a[:, 8:24, 8:24], b[:, 8:24, 8:24], atol=1e-3)
    out = model(torch.rand(2, 3, 32, 32))
    assert out.positions.shape == (2, 4, 2) and out.scales.shape == (2, 4, 2)
    assert out.masks.shape == (2, 4, 1, 32, 32)


def test_fourier_features_of_the_decoder_position_code():
    rel = torch.tensor([[0.5, -1.0]])
    f = fourier_features(rel, 2)  # w = pi / 2, pi
    x, y = 0.5, -1.0
    expected = [x, y, math.sin(math.pi / 2 * x), math.sin(math.pi / 2 * y), math.sin(math.pi * x),
                math.sin(math.pi * y), math.cos(math.pi / 2 * x), math.cos(math.pi / 2 * y),
                math.cos(math.pi * x), math.cos(math.pi * y)]
    torch.testing.assert_close(f, torch.tensor([expected]), atol=1e-6, rtol=0)
    assert torch.equal(fourier_features(rel, 0), rel)
    with pytest.raises(ValueError, match="needs the invariant model"):
        SlotAttentionAutoEncoder(**TINY_MODEL, decoder_frequencies=3)


@pytest.mark.parametrize("frequencies", [0, 2])
def test_decoder_slot_directions_turn_with_the_slot(frequencies):
    """The first decoder layer sees slot + rel @ (P + M(slot)): in the plain model the position
    part (input minus the broadcast slot) is the same for every slot in the same frame; with
    slot-set directions it is rel @ M(slot) more, different per slot, and M gets gradient."""
    def first_layer_input(model, slots, positions, scales):
        seen = []
        hook = model.decoder_cnn[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
        model.decode(slots, positions, scales)
        hook.remove()
        return seen[0]  # [B*K, D, H, W]

    kw = {**TINY_MODEL, "decoder_strides": [1, 1, 1]}
    torch.manual_seed(0)
    plain = SlotAttentionAutoEncoder(**kw, invariant=True, decoder_frequencies=frequencies)
    torch.manual_seed(0)
    turned = SlotAttentionAutoEncoder(**kw, invariant=True, decoder_frequencies=frequencies,
                                      decoder_slot_directions=True)
    slots = torch.randn(1, 2, 16)
    positions = torch.tensor([[[0.1, -0.2], [0.1, -0.2]]])  # both slots in the same frame
    scales = torch.tensor([[[0.3, 0.4], [0.3, 0.4]]])
    broadcast = slots.reshape(2, 16, 1, 1)
    pos_plain = first_layer_input(plain, slots, positions, scales) - broadcast
    torch.testing.assert_close(pos_plain[0], pos_plain[1])
    pos_turned = first_layer_input(turned, slots, positions, scales) - broadcast
    assert not torch.allclose(pos_turned[0], pos_turned[1], atol=1e-3)
    # the extra term is exactly rel @ M(slot)
    from slotlab.nn.slot_attention import relative_grid

    rel = fourier_features(relative_grid(turned.decoder_grid, positions, scales)[0], frequencies)
    m = turned.decoder_directions(slots[0]).reshape(2, 2 + 4 * frequencies, 16)
    extra = torch.bmm(rel, m).transpose(1, 2).reshape(2, 16, 32, 32)
    base = turned.decoder_pos(rel).transpose(1, 2).reshape(2, 16, 32, 32)
    torch.testing.assert_close(pos_turned, base + extra, atol=1e-5, rtol=1e-4)
    rgb, alpha = turned.decode(slots, positions, scales)
    (rgb.square().sum() + alpha.square().sum()).backward()
    assert turned.decoder_directions.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="needs the invariant model"):
        SlotAttentionAutoEncoder(**TINY_MODEL, decoder_slot_directions=True)


@pytest.mark.parametrize("invariant", [False, True])
def test_final_logits_are_the_next_iterations_attention(invariant):
    """`final_logits` of the final slots are what one more iteration would attend with: their
    softmax over slots is that iteration's attention map."""
    sa = make_invariant() if invariant else make()
    x, noise = torch.randn(2, 30, 8), torch.randn(2, 4, 16)
    if invariant:
        slots, _, _, positions, scales = sa(x, noise=noise)
        logits = sa.final_logits(x, slots, positions, scales)
        _, attn_next, *_ = sa.frame_step(
            slots, positions, scales, sa.project_k(sa.norm_inputs(x))[:, None],
            sa.project_v(sa.norm_inputs(x))[:, None], sa.slot_size**-0.5)
    else:
        slots, _ = sa(x, noise=noise)
        logits = sa.final_logits(x, slots)
        xn = sa.norm_inputs(x)
        _, attn_next = sa.step(slots, sa.project_k(xn), sa.project_v(xn), sa.slot_size**-0.5)
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
    assert model.config["mask_attention"] is True and "mask_attention" not in plain.config
    image, noise = torch.rand(2, 3, 32, 32) * 2 - 1, torch.randn(2, TINY_MODEL["num_slots"], 16)
    a, b = plain(image, noise=noise), model(image, noise=noise)
    torch.testing.assert_close(a.recons, b.recons)
    term = b.mask_logits - a.mask_logits  # [B, K, 1, H, W]
    logits = model.slot_attention.final_logits(model.encode(image), b.slots)  # [B, K, N]
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
    assert model.config["test_iterations"] == 5
    image = torch.rand(2, 3, 32, 32)
    assert len(model(image, return_all_attention=True).attention_per_iteration) == 3
    model.eval()
    assert len(model(image, return_all_attention=True).attention_per_iteration) == 5
    assert len(model(image, return_all_attention=True, num_iterations=2)
               .attention_per_iteration) == 2
    with pytest.raises(ValueError, match="test_iterations must be >= 1"):
        SlotAttention(num_slots=2, num_iterations=3, slot_size=8, mlp_hidden_size=8,
                      test_iterations=0)


def test_locality_term_by_hand_and_it_separates_two_places_of_one_colour():
    """`locality_grid`: from the second iteration the logits get -|x_n - mu_k|^2 / (2 s^2) with
    mu_k the mean position of slot k's previous attention; final_logits include it (their
    softmax is the next iteration's attention); the first iteration is the paper's."""
    sa = make(locality_grid=(5, 6))
    plain = make()
    plain.load_state_dict(sa.state_dict(), strict=False)
    assert sa.locality_positions.shape == (30, 2) and not plain.locality
    x, noise = torch.randn(2, 30, 8), torch.randn(2, 4, 16)
    # one iteration: no previous attention, so no term
    torch.testing.assert_close(sa(x, noise=noise, num_iterations=1)[0],
                               plain(x, noise=noise, num_iterations=1)[0])
    slots, attn, attns = sa(x, noise=noise, return_all_attention=True)
    # the term by hand from the first iteration's attention
    w = attns[0] + sa.epsilon
    w = w / w.sum(dim=-1, keepdim=True)
    mu = w @ sa.locality_positions  # [B, K, 2]
    d2 = ((sa.locality_positions[None, None] - mu[:, :, None]) ** 2).sum(-1)
    torch.testing.assert_close(sa.locality_bias(attns[0]), -d2 / (2 * 0.5**2))
    xn = sa.norm_inputs(x)
    k, v = sa.project_k(xn), sa.project_v(xn)
    slots1, _ = sa.step(sa.initial_slots(2, 4, noise), k, v, sa.slot_size**-0.5)
    _, attn2 = sa.step(slots1, k, v, sa.slot_size**-0.5,
                       sa.locality_bias(attns[0]).transpose(1, 2))
    torch.testing.assert_close(attn2, attns[1])
    logits = sa.final_logits(x, slots, attn)
    _, attn_next = sa.step(slots, k, v, sa.slot_size**-0.5, sa.locality_bias(attn).transpose(1, 2))
    torch.testing.assert_close(logits.softmax(dim=1), attn_next)
    with pytest.raises(ValueError, match="needs the last attention"):
        sa.final_logits(x, slots)
    # the learned width gets gradient, also where only the last iteration is differentiated
    for kw in ({}, {"slot_init": "learned"}, {"implicit_differentiation": True}):
        sa_kw = make(locality_grid=(5, 6), **kw)
        g = grads(sa_kw, sa_kw(x, noise=noise)[0].square().sum())
        assert g["locality_log_width"].abs() > 0, kw

    # two places with the same features: the paper's attention cannot tell them apart (the
    # logits are equal, so every slot attends both places equally); with the term, a slot that
    # started on one place keeps to it
    feats = torch.zeros(1, 30, 8)
    feats[0, :, 0] = 1.0
    sa2 = make(locality_grid=(5, 6))
    attention = torch.full((1, 4, 30), 0.25)
    attention[0, 0, :3], attention[0, 0, 3:] = 0.97, 0.01  # slot 0 on the first cells
    bias = sa2.locality_bias(attention)
    assert bias[0, 0, :3].mean() > bias[0, 0, -3:].mean() + 1.0


def test_attention_locality_model_option_and_cli(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, mask_attention=True)
    assert model.config["attention_locality"] is True
    assert model.slot_attention.locality_positions.shape == (
        model.feature_size[0] * model.feature_size[1], 2)
    out = model(torch.rand(2, 3, 32, 32) * 2 - 1)
    assert torch.isfinite(out.recon_combined).all()
    with pytest.raises(ValueError, match="its own slot positions"):
        SlotAttentionAutoEncoder(**TINY_MODEL, attention_locality=True, invariant=True)
    data, preset = write_folder(tmp_path / "data"), write_preset(tmp_path / "tiny.yaml")
    run = tmp_path / "run"
    assert main(["train", "object-discovery", "--data", f"folder:{data}", "--out", str(run),
                 "--preset", str(preset), *TINY_ARGS, "--attention-locality"]) == 0
    saved = json.loads((run / "model" / "config.json").read_text())
    assert saved["config"]["attention_locality"] is True
