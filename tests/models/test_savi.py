"""SAVi against the official JAX/Flax code: every stored output, the loss and every gradient of
the fixtures written by the unmodified official code (../shared/reference/official_savi), for the
conditional model (a), learned initial slots (b1) and Gaussian initial slots (b2)."""

from pathlib import Path

import numpy as np
import pytest
import torch

import slotlab
from slotlab.errors import ConfigError
from slotlab.models import SAVi, SAViConfig, build_model
from slotlab.models.pretrained import save_pretrained
from slotlab.models.savi import SAViOutput, savi_loss
from slotlab.tf_formats.official_savi import (
    infer_savi_config,
    savi_state_dict,
    state_dict_to_flax,
)

ROOT = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "official_savi"
VARIANTS = {"a": "fixture.npz", "b1": "fixture_uncond_param.npz", "b2": "fixture_uncond_gauss.npz"}
ZERO_GRADS = (
    "SpatialBroadcastDecoder_0/alpha_logits/bias",
    "TransformerBlock_0/MultiHeadDotProductAttention_0/key/bias",
    "SlotAttention_0/LayerNorm_0/bias",
)
ATOL = 1e-4


def load_fixture(variant: str) -> dict[str, np.ndarray]:
    path = ROOT / VARIANTS[variant]
    if not path.is_file():
        pytest.skip(f"official SAVi fixture not found: {path}")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def official_params(fx: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in fx.items()
            if "__" not in k and k not in ("loss", "grad_global_norm", "grad_clip_coef")}


def official_model(fx: dict[str, np.ndarray]) -> SAVi:
    params = official_params(fx)
    model = SAVi(infer_savi_config(params, "fixture", num_slots=fx["out__states"].shape[2]))
    model.load_state_dict(savi_state_dict(params, model))
    return model.eval()


def t(fx, key: str) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(fx[key]))


def images(x: torch.Tensor) -> torch.Tensor:
    """Channels-last [..., H, W, C] -> channels-first [..., C, H, W]."""
    return x.movedim(-1, -3)


def run(model: SAVi, fx, video_key: str = "in__video", slots=None) -> SAViOutput:
    kwargs = {}
    if slots is not None:
        kwargs["slots"] = slots
    elif model.config.initializer == "boxes":
        kwargs["boxes"] = t(fx, "in__boxes")
    elif model.config.initializer == "gaussian":  # the official noise, recorded
        kwargs["slots"] = t(fx, "out__init_slots")
    return model(images(t(fx, video_key)), **kwargs)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.detach().double() - b.double()).abs().max())


@pytest.fixture(scope="module", params=list(VARIANTS))
def case(request):
    fx = load_fixture(request.param)
    model = official_model(fx)
    out = run(model, fx)
    loss = savi_loss(out, images(t(fx, "in__flow")))
    model.zero_grad()
    loss.backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    grads.update({k: torch.zeros_like(b) for k, b in model.named_buffers()})
    with torch.no_grad():
        cont = run(model, fx, "in__video_cont", slots=out.predicted_slots[:, -1])
    return request.param, fx, model, out, loss, grads, cont


def test_architecture_from_shapes(case):
    variant, fx, model, *_ = case
    c = model.config
    assert c.resolution == (32, 32) and c.slot_size == 128 and c.decoder_initial_size == (4, 4)
    assert c.initializer == {"a": "boxes", "b1": "learned", "b2": "gaussian"}[variant]
    assert c.decoder_strides == (2, 2, 2, 1) and c.predictor_heads == 4


def test_outputs_equal_official(case):
    _, fx, model, out, *_ = case
    expected = {
        "init_slots": (out.initial_slots, t(fx, "out__init_slots")),
        "states": (out.slots, t(fx, "out__states")),
        "states_pred": (out.predicted_slots, t(fx, "out__states_pred")),
        "attn": (out.attention, t(fx, "out__attn")),
        "alphas": (out.masks, images(t(fx, "out__alphas"))),
        "flow_slots": (out.readouts, images(t(fx, "out__flow_slots"))),
        "flow": (out.target, images(t(fx, "out__flow"))),
    }
    errors = {name: max_err(a, b) for name, (a, b) in expected.items()}
    assert max(errors.values()) < ATOL, errors
    assert out.masks.shape == (2, 3, 11, 1, 32, 32)
    assert torch.allclose(out.attention.sum(dim=2), torch.ones(()), atol=1e-5)


def test_intermediates_equal_official(case):
    _, fx, model, out, *_ = case
    b, tt = fx["in__video"].shape[:2]
    with torch.no_grad():
        video = images(t(fx, "in__video")).flatten(0, 1)
        cnn = model.encoder.features(video).permute(0, 2, 3, 1).unflatten(0, (b, tt))
        encoded = model.encode(images(t(fx, "in__video")))
        attended, weights = model.predictor.attend(out.slots.flatten(0, 1))
    errors = {
        "encoder_cnn_out": max_err(cnn, t(fx, "inter__encoder_cnn_out")),
        "encoded_inputs": max_err(encoded, t(fx, "inter__encoded_inputs")),
        "predictor_attn": max_err(weights.unflatten(0, (b, tt)), t(fx, "inter__predictor_attn")),
        "predictor_self_attn_out": max_err(attended.unflatten(0, (b, tt)),
                                           t(fx, "inter__predictor_self_attn_out")),
        # official rows are b * K + k, then time
        "alpha_logits": max_err(out.mask_logits.detach().transpose(1, 2).flatten(0, 1),
                                images(t(fx, "inter__decoder_alpha_logits_raw"))),
    }
    assert max(errors.values()) < ATOL, errors


def test_segmentations_where_defined(case):
    _, fx, model, out, *_ = case
    logits = torch.from_numpy(fx["inter__decoder_alpha_logits_raw"][..., 0])  # [B*K, T, H, W]
    b, tt, k = out.slots.shape[:3]
    logits = logits.reshape(b, k, tt, *logits.shape[2:]).transpose(1, 2)  # [B, T, K, H, W]
    top2 = logits.topk(2, dim=2).values
    decided = (top2[:, :, 0] - top2[:, :, 1]) > 1e-4
    official = torch.from_numpy(fx["out__segmentations"][..., 0]).long()
    assert decided.float().mean() > 0.5
    assert torch.equal(out.segmentations[decided], official[decided])
    # video 0 has 11 distinct slots: its argmax matches everywhere
    assert torch.equal(out.segmentations[0], official[0])


def test_loss_equals_official(case):
    _, fx, _, _, loss, *_ = case
    reference = float(fx["loss"])
    loss = float(loss.detach())
    assert abs(loss - reference) <= 1e-5 * abs(reference), (loss, reference)


def test_gradients_equal_official(case):
    _, fx, model, _, _, grads, _ = case
    ours = state_dict_to_flax(grads, model.config)
    official = {k[len("grad__"):]: v for k, v in fx.items() if k.startswith("grad__")}
    assert set(ours) == set(official)
    worst = {}
    for name, ref in official.items():
        if name in ZERO_GRADS:  # zero in exact arithmetic: only rounding noise
            assert np.abs(ours[name]).max() < 1e-5, name
            continue
        scale = np.abs(ref).max()
        if scale == 0:  # the position grids (stop_gradient) and nothing else
            assert name.endswith("pos_embedding"), name
            continue
        worst[name] = float(np.abs(ours[name] - ref).max() / scale)
    assert max(worst.values()) < 1e-3, max(worst.items(), key=lambda kv: kv[1])
    # PyTorch's recurrent r/z GRU biases (absent officially) get the input biases' gradient
    d = model.config.slot_size
    bias_hh = grads["corrector.gru.bias_hh"][: 2 * d]
    assert torch.allclose(bias_hh, grads["corrector.gru.bias_ih"][: 2 * d])


def test_continuation_equals_official(case):
    _, fx, _, _, _, _, cont = case
    errors = {
        "states": max_err(cont.slots, t(fx, "cont__states")),
        "states_pred": max_err(cont.predicted_slots, t(fx, "cont__states_pred")),
        "flow": max_err(cont.target, images(t(fx, "cont__flow"))),
    }
    assert max(errors.values()) < ATOL, errors


def small_config(**overrides) -> SAViConfig:
    values = dict(resolution=(16, 16), num_slots=4, slot_size=32, encoder_channels=(8, 8),
                  encoder_mlp_hidden_size=16, initializer_hidden_size=32, predictor_heads=2,
                  predictor_mlp_size=32, decoder_channels=(8, 8, 8), decoder_strides=(2, 2, 1))
    values.update(overrides)
    return SAViConfig(**values)


@pytest.mark.parametrize("initializer", ["boxes", "points", "learned", "gaussian"])
def test_shapes_and_save_load(initializer, tmp_path):
    torch.manual_seed(0)
    model = build_model("video", small_config(initializer=initializer), target="frames")
    video = torch.rand(2, 3, 3, 16, 16)
    boxes = torch.tensor([[0.1, 0.1, 0.5, 0.5], [0.4, 0.3, 0.9, 0.8], [0, 0, 0, 0]])
    kwargs = {"boxes": boxes.expand(2, 3, 3, 4)} if initializer == "boxes" else \
        {"points": boxes[:, :2].expand(2, 1, 3, 2)} if initializer == "points" else {}
    if initializer == "gaussian":
        kwargs["slots"] = torch.randn(2, 4, 32)
    model.eval()
    with torch.no_grad():
        out = model(video, **kwargs)
    k = 4
    assert out.slots.shape == out.predicted_slots.shape == (2, 3, k, 32)
    assert out.attention.shape == (2, 3, k, 256)
    assert out.masks.shape == (2, 3, k, 1, 16, 16)
    assert out.target.shape == (2, 3, 3, 16, 16) and out.readouts.shape == (2, 3, k, 3, 16, 16)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(()), atol=1e-5)
    assert float(savi_loss(out, video)) > 0
    save_pretrained(model, tmp_path / "m")
    loaded = slotlab.load_pretrained(tmp_path / "m")
    assert isinstance(loaded, SAVi) and loaded.config == model.config
    with torch.no_grad():
        again = loaded(video, **kwargs)
    assert torch.equal(again.target, out.target)


def test_continuation_is_one_long_run():
    """Two chunks, the second started from the first's last predicted slots, equal one run."""
    torch.manual_seed(1)
    model = SAVi(small_config(initializer="learned")).eval()
    video = torch.rand(1, 4, 3, 16, 16)
    with torch.no_grad():
        whole = model(video)
        first = model(video[:, :2])
        second = model(video[:, 2:], slots=first.predicted_slots[:, -1])
    assert torch.allclose(torch.cat([first.slots, second.slots], 1), whole.slots, atol=1e-6)
    assert torch.allclose(torch.cat([first.target, second.target], 1), whole.target, atol=1e-6)


def test_mask_attention_adds_the_corrected_slots_attention_logits():
    """mask_attention: each frame's alpha logits = the decoder's + the corrected slots' logits
    over that frame's inputs (what one more corrector iteration would attend with)."""
    torch.manual_seed(2)
    plain = SAVi(small_config(initializer="learned")).eval()
    with_attention = SAVi(small_config(initializer="learned", mask_attention=True)).eval()
    with_attention.load_state_dict(plain.state_dict())  # the option adds no parameter
    video = torch.rand(2, 3, 3, 16, 16)
    with torch.no_grad():
        a, b = plain(video), with_attention(video)
        inputs = plain.encode(video)
        for t in range(3):
            sa = plain.corrector(inputs[:, t], a.predicted_slots[:, t - 1] if t else
                                 a.initial_slots)
            logits = plain.corrector.final_logits(inputs[:, t], sa).reshape(2, 4, 16, 16)
            assert torch.allclose(b.mask_logits[:, t, :, 0] - a.mask_logits[:, t, :, 0], logits,
                                  atol=1e-5)
    assert torch.equal(a.slots, b.slots)  # the slots themselves are unchanged
    assert not torch.allclose(a.masks, b.masks)


@pytest.mark.parametrize("kind", ["boxes", "points"])
@pytest.mark.parametrize("mask_attention", [False, True])
def test_skip_absent_equals_the_model_without_the_absent_slots(kind, mask_attention):
    """skip_absent: an empty first-frame box (point) switches its slot off, so the other slots,
    masks and decoded frames equal those of the same model given only the present objects."""
    torch.manual_seed(3)
    model = SAVi(small_config(initializer=kind, skip_absent=True,
                              mask_attention=mask_attention)).eval()
    plain = SAVi(small_config(initializer=kind, mask_attention=mask_attention)).eval()
    plain.load_state_dict(model.state_dict())  # the option adds no parameter
    video = torch.rand(1, 3, 3, 16, 16)
    boxes = torch.tensor([[[[0.1, 0.1, 0.4, 0.5], [0.0, 0.0, 0.0, 0.0], [0.5, 0.2, 0.9, 0.7]]]])
    points = (boxes[..., :2] + boxes[..., 2:]) / 2
    given = {"boxes": boxes} if kind == "boxes" else {"points": points}
    present = {k: v[:, :, [0, 2]] for k, v in given.items()}
    with torch.no_grad():
        out = model(video, **given)  # K = 4: background, object 0, (absent), object 2
        fewer = model(video, **present)  # K = 3
        kept = plain(video, **given)  # the official model: the absent slot takes part
    on = [0, 1, 3]
    assert torch.allclose(out.slots[:, :, on], fewer.slots, atol=1e-5)
    assert torch.allclose(out.masks[:, :, on], fewer.masks, atol=1e-5)
    assert torch.allclose(out.target, fewer.target, atol=1e-5)
    assert out.masks[:, :, 2].max() < 1e-6 and out.attention[:, :, 2].max() < 1e-6
    assert out.slot_bias is not None and fewer.slot_bias.eq(0).all()
    assert not torch.allclose(kept.target, out.target, atol=1e-4)
    # a continuation chunk given the boxes keeps the slot off
    with torch.no_grad():
        first = model(video[:, :2], **given)
        second = model(video[:, 2:], slots=first.predicted_slots[:, -1], **given)
    assert torch.allclose(second.slots, out.slots[:, 2:], atol=1e-5)


def test_box_attention_confines_the_first_frame_to_the_boxes():
    """box_attention: in the first frame a box slot's logits are lowered outside its box (a large
    penalty leaves it no attention there); later frames and a continuation chunk are untouched."""
    torch.manual_seed(4)
    model = SAVi(small_config(box_attention=30.0, mask_attention=True)).eval()
    plain = SAVi(small_config(mask_attention=True)).eval()
    plain.load_state_dict(model.state_dict())  # the option adds no parameter
    video = torch.rand(2, 3, 3, 16, 16)
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0], [0.5, 0.0, 1.0, 0.25]])
    boxes = boxes.expand(2, 1, 3, 4)
    with torch.no_grad():
        out, ref = model(video, boxes=boxes), plain(video, boxes=boxes)
        first = model(video[:, :1], boxes=boxes)
        rest = model(video[:, 1:], slots=first.predicted_slots[:, -1], boxes=boxes)
        rest_plain = plain(video[:, 1:], slots=first.predicted_slots[:, -1], boxes=boxes)
    centres = (torch.arange(16) + 0.5) / 16
    in_any = torch.zeros(256, dtype=torch.bool)
    for m, (y0, x0, y1, x1) in enumerate(boxes[0, 0].tolist()):
        inside = (((centres[:, None] >= y0) & (centres[:, None] <= y1)) &
                  ((centres[None, :] >= x0) & (centres[None, :] <= x1))).flatten()
        attention = out.attention[:, 0, m + 1]  # [B, N] the slot of box m, first frame
        assert attention[:, ~inside].max() < 1e-6 and attention[:, inside].sum() > 0
        masks = out.masks[:, 0, m + 1, 0].flatten(1)  # mask_attention carries it to the masks
        assert masks[:, ~inside].max() < 1e-3
        in_any |= inside
    assert out.attention[:, 0, 0, in_any].max() < 1e-6  # the background slot: outside the boxes
    assert out.attention[:, 0, 0, ~in_any].sum() > 0
    assert not torch.allclose(out.slots[:, 0], ref.slots[:, 0], atol=1e-4)
    assert torch.allclose(rest.slots, rest_plain.slots, atol=1e-6)  # continuation: no term
    assert torch.allclose(rest.slots, out.slots[:, 1:], atol=1e-5)
    with pytest.raises(ValueError, match="box_attention"):
        SAViConfig(initializer="points", box_attention=5.0)


def test_skip_absent_needs_boxes_or_points():
    with pytest.raises(ValueError, match="skip_absent"):
        SAViConfig(initializer="learned", skip_absent=True)


def test_defaults_are_savi_s():
    c = SAViConfig()
    assert c.resolution == (64, 64) and c.num_slots == 24 and c.slot_size == 128
    assert c.decoder_initial_size == (8, 8) and c.num_iterations == 1
    assert c.initializer == "boxes" and c.target == "flow" and not c.mask_attention


def test_bad_calls_and_options():
    model = SAVi(small_config())
    with pytest.raises(ValueError, match="boxes"):
        model(torch.rand(1, 2, 3, 16, 16))
    with pytest.raises(ValueError, match="video must be"):
        model(torch.rand(1, 3, 16, 16), boxes=torch.rand(1, 1, 2, 4))
    with pytest.raises(ConfigError, match="predictor_heads"):
        build_model("video", small_config(), predictor_heads=3)
    with pytest.raises(ConfigError, match="initializer"):
        build_model("video", {"initializer": "slots"})
