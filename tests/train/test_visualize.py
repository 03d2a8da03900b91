"""Slot pictures: layout, content, set-prediction markers and `slotlab visualize`."""

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.errors import ConfigError
from slotlab.models import ObjectDiscoveryOutput, SlotAttentionAutoEncoder, build_model
from slotlab.models.pretrained import save_pretrained
from slotlab.train.visualize import (
    CLEVR_COLOUR_RGB,
    HEADER_HEIGHT,
    PAD,
    clevr_camera_projection,
    describe_object,
    object_discovery_figure,
    register,
    set_prediction_figure,
    to_uint8,
)

TINY_OD = dict(
    resolution=(32, 32), num_slots=4, decoder_initial_size=(8, 8), decoder_strides=(2, 2, 1),
    decoder_channels=(16, 16, 16), encoder_channels=(16,) * 4, slot_size=16, mlp_hidden_size=32,
)


def cell(figure: Image.Image, row: int, col: int, cell_h: int, cell_w: int) -> np.ndarray:
    """Pixels of cell (row, col) of a figure whose cells all have the same size."""
    x = PAD + col * (cell_w + PAD)
    y = HEADER_HEIGHT + PAD + row * (cell_h + PAD)
    return np.asarray(figure)[y : y + cell_h, x : x + cell_w]


def upscaled(pixels: np.ndarray, scale: int) -> np.ndarray:
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def fake_output(b, k, t, h, w, feature=(4, 4), seed=0):
    g = torch.Generator().manual_seed(seed)
    n = feature[0] * feature[1]
    attention = [torch.randn(b, k, n, generator=g).mul(3).softmax(1) for _ in range(t)]
    recons = torch.rand(b, k, 3, h, w, generator=g) * 2 - 1
    masks = torch.randn(b, k, 1, h, w, generator=g).softmax(1)
    return ObjectDiscoveryOutput(
        recon_combined=(recons * masks).sum(1), recons=recons, masks=masks,
        slots=torch.zeros(b, k, 8), attention=attention[-1],
        attention_per_iteration=attention if t > 1 else None,
    )


@pytest.mark.parametrize("b,k,t,num", [(3, 4, 3, 8), (5, 2, 1, 2)])
def test_object_discovery_figure_layout_and_content(b, k, t, num):
    h, w, scale = 16, 12, 2
    image = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(1)) * 2.4 - 1.2
    out = fake_output(b, k, t, h, w, feature=(4, 3))
    fig = object_discovery_figure(image, out, num=num, scale=scale)

    rows, cols = min(b, num), 2 + k + 1 + t
    ch, cw = h * scale, w * scale
    assert fig.mode == "RGB"
    assert fig.size == (PAD + cols * (cw + PAD), HEADER_HEIGHT + PAD + rows * (ch + PAD))
    assert np.asarray(fig).astype(float).var() > 100  # not blank
    inputs, recons = to_uint8(image), to_uint8(out.recon_combined)
    assert inputs.min() == 0 and inputs.max() == 255  # values were clamped, not wrapped
    for row in range(rows):
        np.testing.assert_array_equal(cell(fig, row, 0, ch, cw), upscaled(inputs[row], scale))
        np.testing.assert_array_equal(cell(fig, row, 1, ch, cw), upscaled(recons[row], scale))
        for col in range(2, cols):  # every slot, mask and attention cell shows something
            assert cell(fig, row, col, ch, cw).astype(float).var() > 0


def test_slot_cells_fade_to_white_where_the_mask_is_off():
    b, k, h, w = 1, 2, 8, 8
    image = torch.zeros(b, 3, h, w)
    masks = torch.zeros(b, k, 1, h, w)
    masks[:, 0, 0, :, : w // 2] = 1.0
    masks[:, 1, 0, :, w // 2 :] = 1.0
    recons = torch.full((b, k, 3, h, w), -1.0)  # black objects
    out = ObjectDiscoveryOutput(recons.sum(1), recons, masks, torch.zeros(b, k, 4),
                                torch.full((b, k, 4), 0.5))
    fig = object_discovery_figure(image, out, scale=1)
    assert fig.size[0] == PAD + (2 + k + 1 + 1) * (w + PAD)
    slot0 = cell(fig, 0, 2, h, w)
    assert (slot0[:, : w // 2] == 0).all() and (slot0[:, w // 2 :] == 255).all()
    seg = cell(fig, 0, 2 + k, h, w)  # masks: two flat colours
    assert len(np.unique(seg.reshape(-1, 3), axis=0)) == 2


def test_default_scale_makes_small_images_readable():
    out = fake_output(1, 2, 1, 32, 32)
    fig = object_discovery_figure(torch.zeros(1, 3, 32, 32), out)
    assert fig.size[1] == HEADER_HEIGHT + PAD + (96 + PAD)  # 32 px upscaled 3x


def test_attention_that_fits_no_grid_is_a_clear_error():
    out = fake_output(1, 2, 1, 16, 16, feature=(1, 7))
    with pytest.raises(ValueError, match="feature_size"):
        object_discovery_figure(torch.zeros(1, 3, 16, 16), out)
    fig = object_discovery_figure(torch.zeros(1, 3, 16, 16), out, feature_size=(1, 7))
    assert fig.size[0] == PAD + 6 * (96 + PAD)


def make_object(coords, size, colour, material, shape, objectness=1.0):
    row = torch.zeros(19)
    row[0:3] = (torch.tensor(coords) + 3.0) / 6.0
    row[3 + ["small", "large"].index(size)] = 1
    row[5 + ["rubber", "metal"].index(material)] = 1
    row[7 + ["cube", "sphere", "cylinder"].index(shape)] = 1
    colours = ["gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan"]
    row[10 + colours.index(colour)] = 1
    row[18] = objectness
    return row


def test_set_prediction_figure_draws_numbered_markers():
    h = w = 128
    image = torch.zeros(1, 3, h, w)  # flat grey
    red = make_object((1.0, -1.0, 0.7), "large", "red", "metal", "cube")
    blue = make_object((-2.0, 2.0, 0.35), "small", "blue", "rubber", "sphere")
    assert describe_object(red) == "large red metal cube"
    targets = torch.stack([red, torch.zeros(19)])[None]  # one object + a padding row
    predictions = torch.stack([blue.clone(), red.clone()])[None]
    predictions[0, 0, 18] = 0.2  # below the threshold: not drawn
    predictions[0, 1, 18] = 0.9

    fig = set_prediction_figure(image, predictions, targets, threshold=0.5, scale=1)
    pixels = np.asarray(fig)
    grey = to_uint8(image)[0, 0, 0]
    text_w = (fig.size[0] - PAD - 2 * (w + PAD)) // 2 - PAD
    picture_x = [PAD, PAD + (w + PAD) + (text_w + PAD)]  # prediction and ground-truth pictures
    y0 = HEADER_HEIGHT + PAD
    (ur, vr), (ub, vb) = clevr_camera_projection(torch.stack([red[:3], blue[:3]])).tolist()
    assert 0 < ur < 1 and 0 < vr < 1 and 0 < ub < 1 and 0 < vb < 1
    for x0 in picture_x:
        picture = pixels[y0 : y0 + h, x0 : x0 + w]
        cx, cy = int(ur * w), int(vr * h)
        marker = picture[cy - 5 : cy + 6, cx - 5 : cx + 6].reshape(-1, 3)
        assert (marker == CLEVR_COLOUR_RGB["red"]).all(axis=1).sum() > 20
        far = picture[int(vb * h) - 3 : int(vb * h) + 4, int(ub * w) - 3 : int(ub * w) + 4]
        assert (far == grey).all()  # the sub-threshold blue slot has no marker

    plain = set_prediction_figure(image, predictions, None, scale=1)
    assert plain.size[0] < fig.size[0] and plain.size[1] == fig.size[1]


def test_set_prediction_figure_without_any_object():
    image = torch.rand(2, 3, 16, 16) * 2 - 1
    fig = set_prediction_figure(image, torch.zeros(2, 3, 19), num=1)
    assert fig.size[1] == HEADER_HEIGHT + PAD + (96 + PAD)
    assert np.asarray(fig).astype(float).var() > 0


def write_folder(root, count=3, size=40):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    for i in range(count):
        pixels = np.full((size, size, 3), 90, np.uint8)
        x, y = rng.integers(0, size - 12, 2)
        pixels[y : y + 12, x : x + 12] = rng.integers(0, 256, 3)
        Image.fromarray(pixels).save(root / "images" / f"{i:03d}.png")
    return root


def run_cli(argv):
    parser = argparse.ArgumentParser(prog="slotlab")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_png_for_a_model_dir(tmp_path, capsys):
    torch.manual_seed(0)
    model_dir = save_pretrained(SlotAttentionAutoEncoder(**TINY_OD), tmp_path / "model")
    data = write_folder(tmp_path / "data", count=3)
    out = tmp_path / "figs" / "slots.png"
    argv = ["visualize", str(model_dir), "--data", f"folder:{data}", "--out", str(out),
            "--num", "8", "--seed", "3"]
    assert run_cli(argv) == 0
    assert str(out) in capsys.readouterr().out
    fig = Image.open(out)
    k, t, cell_side = 4, 3, 96  # 32x32 upscaled 3x
    assert fig.size == (PAD + (2 + k + 1 + t) * (cell_side + PAD),
                        HEADER_HEIGHT + PAD + 3 * (cell_side + PAD))
    assert np.asarray(fig.convert("RGB")).astype(float).var() > 100

    again = tmp_path / "again.png"
    run_cli([*argv[:5], str(again), "--seed", "3"])
    assert np.array_equal(np.asarray(Image.open(again)), np.asarray(fig))  # fixed noise seed


def test_cli_set_prediction_model(tmp_path):
    model = build_model("set_prediction", resolution=(32, 32), num_slots=3,
                        encoder_channels=(8,) * 4, slot_size=8, mlp_hidden_size=16,
                        classifier_hidden_size=8)
    model_dir = save_pretrained(model, tmp_path / "sp")
    out = tmp_path / "sp.png"
    assert run_cli(["visualize", str(model_dir), "--data", "procedural", "--num", "2",
                    "--out", str(out)]) == 0
    fig = Image.open(out)
    assert fig.size[1] >= HEADER_HEIGHT + PAD + 2 * (96 + PAD)


def test_model_dir_without_data_spec_is_a_config_error(tmp_path):
    from slotlab.train.visualize import visualize

    model_dir = save_pretrained(SlotAttentionAutoEncoder(**TINY_OD), tmp_path / "model")
    with pytest.raises(ConfigError, match="--data"):
        visualize(model_dir, None, tmp_path / "x.png")
    with pytest.raises(ConfigError, match="--num"):
        visualize(model_dir, "procedural", tmp_path / "x.png", num=0)


def test_registered_in_the_slotlab_cli(tmp_path):
    from slotlab.cli import build_parser, main

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if "visualize" not in commands.choices:
        pytest.skip("slotlab.train.commands does not register `visualize` yet")
    assert main(["visualize", str(tmp_path / "missing"), "--data", "procedural",
                 "--out", str(tmp_path / "x.png")]) == 2


def test_missing_split_falls_back_to_train(tmp_path, monkeypatch, capsys):
    import slotlab.data
    from slotlab.errors import DataError
    from slotlab.train.visualize import visualize

    real_build = slotlab.data.build_dataset
    data = write_folder(tmp_path / "data", count=2)
    asked = []

    def build(spec, split, task, **options):
        asked.append(split)
        if split != "train":
            raise DataError(f"no split {split}")
        return real_build(spec, split, task, **options)

    monkeypatch.setattr(slotlab.data, "build_dataset", build)
    model_dir = save_pretrained(SlotAttentionAutoEncoder(**TINY_OD), tmp_path / "model")
    out = visualize(model_dir, f"folder:{data}", tmp_path / "x.png", split="val")
    assert out.is_file() and asked == ["val", "train"]
    assert "using 'train'" in capsys.readouterr().out


def test_strided_attention_is_drawn_where_its_cells_look():
    """A 16x16 attention map from 32x32 pixels (cells centred on pixels 1, 3, ..., 31): with the
    encoder's cell pixels, a one-cell blob peaks on its cell's pixel; bilinear resizing without
    them puts the peak half a pixel early (equal on pixels 2i and 2i + 1)."""
    from slotlab.models.object_discovery import encoder_cell_pixels
    from slotlab.train.visualize import attention_images

    attention = torch.zeros(1, 2, 16, 16)
    attention[0, 1, 6, 9] = 1.0
    attention[0, 0] = 1.0 - attention[0, 1]
    attention = attention.reshape(1, 2, 256)
    cells = encoder_cell_pixels((32, 32), 3, (1, 1, 2, 1))
    placed = attention_images(attention, (32, 32), cell_pixels=cells)[0, 1]
    assert divmod(int(placed.argmax()), 32) == (13, 19) and placed[13, 19].item() == 1.0
    resized = attention_images(attention, (32, 32))[0, 1]
    assert resized[12, 18].item() == resized[13, 19].item()
    fig = object_discovery_figure(torch.zeros(1, 3, 32, 32), fake_output(1, 2, 1, 32, 32,
                                  feature=(16, 16)), scale=1, cell_pixels=cells)
    assert fig.size == object_discovery_figure(
        torch.zeros(1, 3, 32, 32), fake_output(1, 2, 1, 32, 32, feature=(16, 16)), scale=1).size
