"""Procedural 2-D sprites: rendering, determinism, the dataset, and files on disk."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.cli import main
from slotlab.data.sprites import (
    SPRITE_SHAPES,
    ProceduralSpritesDataset,
    generate_sprites_dir,
    render_sprites,
    sprites_sample,
)
from slotlab.errors import ConfigError


def test_render_outputs_masks_and_colours():
    for index in range(20):
        image, mask, objects = sprites_sample(0, "train", index)
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert mask.shape == (64, 64) and mask.dtype == np.uint8
        n = len(objects)
        assert 2 <= n <= 6
        counts = np.bincount(mask.ravel(), minlength=n + 1)
        assert counts.size == n + 1  # ids 0..n only
        assert np.all(counts[1:] >= 15)  # every object keeps its minimum visible pixels
        for k, obj in enumerate(objects, start=1):
            assert obj["shape"] in SPRITE_SHAPES
            assert obj["visible_pixels"] == counts[k]
            assert np.all(image[mask == k] == obj["color"])  # flat colour, hard edges
        background = image[mask == 0]
        assert len(np.unique(background, axis=0)) == 1  # a plain background


def test_deterministic_and_different_across_index_and_split():
    a = sprites_sample(3, "train", 5)
    b = sprites_sample(3, "train", 5)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[2] == b[2]
    for other in (sprites_sample(3, "train", 6), sprites_sample(3, "val", 5)):
        assert not np.array_equal(a[0], other[0])


def test_all_shape_kinds_occur_and_fill_their_area():
    seen = set()
    rng = np.random.default_rng(0)
    for _ in range(60):
        _, _, objects = render_sprites(rng, (64, 64), 4, 4, background="grey")
        seen.update(o["shape"] for o in objects)
    assert seen == set(SPRITE_SHAPES)


@pytest.mark.parametrize("shape", SPRITE_SHAPES)
def test_shape_areas_match_geometry(shape):
    from slotlab.data.sprites import _SIDES, _STAR_INNER, _inside

    r, aspect = 40.3, 0.6
    grid = np.arange(-50, 50, dtype=np.float64) + 0.5
    u, v = np.meshgrid(grid, grid)
    area = _inside(shape, u, v, r, aspect).sum()
    if shape == "disc":
        expected = np.pi * r * r
    elif shape == "ellipse":
        expected = np.pi * r * r * aspect
    elif shape == "star":
        expected = 5 * r * (_STAR_INNER * r) * np.sin(np.pi / 5)
    else:
        n = _SIDES[shape]
        expected = 0.5 * n * r * r * np.sin(2 * np.pi / n)
    assert abs(area / expected - 1) < 0.02


def test_backgrounds_and_sizes():
    rng = np.random.default_rng(2)
    image, mask, _ = render_sprites(rng, (48, 80), background="black")
    assert image.shape == (48, 80, 3) and mask.shape == (48, 80)
    assert np.all(image[mask == 0] == 0)
    levels = set()
    for _ in range(20):  # greyscale: a plain grey background whose level varies per image
        image, mask, _ = render_sprites(rng, (32, 32), background="greyscale")
        bg = image[mask == 0]
        assert np.all(bg == bg[0]) and bg[0, 0] == bg[0, 1] == bg[0, 2]
        levels.add(int(bg[0, 0]))
    assert len(levels) >= 10
    with pytest.raises(ConfigError):
        render_sprites(rng, background="plaid")


def test_dataset_samples():
    ds = ProceduralSpritesDataset("train", num=4, seed=0, resolution=(32, 32), max_objects=4)
    assert len(ds) == 4
    sample = ds[2]
    assert set(sample) == {"image", "mask"}
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert -1 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1
    assert sample["mask"].shape == (32, 32) and sample["mask"].dtype == torch.int64
    assert 2 <= int(sample["mask"].max()) <= 4
    again = ProceduralSpritesDataset("train", num=4, seed=0, resolution=(32, 32), max_objects=4)
    assert torch.equal(sample["image"], again[2]["image"])
    assert not torch.equal(sample["image"], ds[1]["image"])
    with pytest.raises(IndexError):
        ds[4]


def test_set_prediction_is_refused():
    with pytest.raises(ConfigError, match="object_discovery"):
        ProceduralSpritesDataset(task="set_prediction")


def test_build_dataset_makes_sprites():
    from slotlab.data import build_dataset

    ds = build_dataset("procedural-sprites", "val", "object_discovery", num=2)
    assert isinstance(ds, ProceduralSpritesDataset)
    assert ds[1]["image"].shape == (3, 64, 64)


def test_generate_sprites_dir_and_show(tmp_path):
    root = generate_sprites_dir(tmp_path / "sprites", "train", num=5, seed=1, resolution=(32, 40))
    names = [f"SPRITES_train_{i:06d}.png" for i in range(5)]
    assert sorted(p.name for p in (root / "images" / "train").iterdir()) == names
    assert sorted(p.name for p in (root / "masks" / "train").iterdir()) == names
    scenes = json.loads((root / "scenes" / "SPRITES_train_scenes.json").read_text())["scenes"]
    assert [s["image_filename"] for s in scenes] == names
    image, mask, objects = sprites_sample(1, "train", 3, (32, 40))
    with Image.open(root / "images" / "train" / names[3]) as img:
        assert img.size == (40, 32)
        np.testing.assert_array_equal(np.asarray(img), image)
    with Image.open(root / "masks" / "train" / names[3]) as img:
        np.testing.assert_array_equal(np.asarray(img), mask)
    assert scenes[3]["objects"] == objects

    sheet = tmp_path / "sheet.png"
    assert main(["data", "show", str(root), "--out", str(sheet), "--num", "5"]) == 0
    assert sheet.is_file()


def test_cli_generate_sprites(tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["data", "generate", "--out", str(out), "--style", "sprites", "--num", "3"]) == 0
    assert "images/s" in capsys.readouterr().out
    with Image.open(out / "images" / "train" / "SPRITES_train_000002.png") as img:
        assert img.size == (64, 64)
