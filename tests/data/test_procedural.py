"""Procedural CLEVR-style scenes: sampling, rendering, the in-memory dataset, the CLEVR layout
on disk and the `slotlab data generate|show` commands."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.cli import main
from slotlab.data.clevr_vocab import COLORS, MATERIALS, SHAPES, SIZES
from slotlab.data.preprocess import OFFICIAL_CROP, clevr_target
from slotlab.data.procedural import (
    CLEVR_RGB,
    MIN_PIXELS,
    ProceduralClevrDataset,
    generate_clevr_dir,
    procedural_scene,
    project,
    render_scene,
    scene_to_json,
)
from slotlab.data.procedural.render import render_ids
from slotlab.errors import ConfigError

REF_SCENES = (
    Path(__file__).resolve().parents[3]
    / "shared/reference/formats/tfds_clevr/raw/CLEVR_v1.0/scenes/CLEVR_train_scenes.json"
)
SCENE_KEYS = {"split", "image_index", "image_filename", "objects", "relationships", "directions"}
OBJECT_KEYS = {"color", "size", "rotation", "shape", "3d_coords", "material", "pixel_coords"}
DIRECTION_KEYS = {"left", "right", "front", "behind", "above", "below"}
RELATION_KEYS = {"left", "right", "front", "behind"}
HALF_EXTENTS = {0.35, 0.7, 0.35 / math.sqrt(2), 0.7 / math.sqrt(2)}


def _same_scene(a, b):
    return json.dumps(scene_to_json(a), sort_keys=True) == json.dumps(
        scene_to_json(b), sort_keys=True
    )


def test_scenes_are_deterministic_and_differ_across_index_split_seed():
    a = procedural_scene(0, "train", 3)
    assert _same_scene(a, procedural_scene(0, "train", 3))
    assert a["render"] == procedural_scene(0, "train", 3)["render"]
    for other in (
        procedural_scene(0, "train", 4),
        procedural_scene(0, "val", 3),
        procedural_scene(1, "train", 3),
    ):
        assert not _same_scene(a, other)


def test_scene_fields_follow_clevr():
    for index in range(6):
        scene = procedural_scene(0, "train", index)
        assert scene["split"] == "train" and scene["image_index"] == index
        assert scene["image_filename"] == f"CLEVR_train_{index:06d}.png"
        assert 3 <= len(scene["objects"]) <= 10
        assert set(scene["directions"]) == DIRECTION_KEYS
        assert scene["directions"]["above"] == [0.0, 0.0, 1.0]
        for obj in scene["objects"]:
            assert OBJECT_KEYS <= set(obj)
            assert obj["shape"] in SHAPES and obj["size"] in SIZES
            assert obj["material"] in MATERIALS and obj["color"] in COLORS
            assert obj["color"] in CLEVR_RGB
            x, y, z = obj["3d_coords"]
            assert -3 <= x <= 3 and -3 <= y <= 3
            assert min(abs(z - h) for h in HALF_EXTENTS) < 1e-9
            assert (z > 0.45) == (obj["size"] == "large")
            assert 0 <= obj["rotation"] < 360
            u, v, depth = obj["pixel_coords"]
            assert isinstance(u, int) and isinstance(v, int) and depth > 0
        # relationships[name][i] = the objects j that are `name` of object i.
        coords = np.array([o["3d_coords"] for o in scene["objects"]])
        assert set(scene["relationships"]) == RELATION_KEYS
        for name in RELATION_KEYS:
            vec = np.array(scene["directions"][name])
            for i, related in enumerate(scene["relationships"][name]):
                expected = [j for j in range(len(coords)) if (coords[j] - coords[i]) @ vec > 0.2]
                assert related == [j for j in expected if j != i]


def test_objects_do_not_overlap():
    for index in range(6):
        objects = procedural_scene(0, "train", index)["objects"]
        for i, a in enumerate(objects):
            for b in objects[i + 1 :]:
                gap = math.dist(a["3d_coords"][:2], b["3d_coords"][:2])
                assert gap - a["3d_coords"][2] - b["3d_coords"][2] >= 0.25 - 1e-9


def test_every_object_is_visible_and_mask_ids_match_objects():
    for index in range(4):
        scene = procedural_scene(0, "train", index)
        n = len(scene["objects"])
        ids = render_ids(scene, 240, 160, None)  # the size the visibility check uses
        counts = np.bincount(ids.ravel(), minlength=n + 1)
        assert counts.size == n + 1  # no id above n
        assert np.all(counts[1:] >= MIN_PIXELS / 4)


def test_pixel_coords_project_into_the_object():
    scene = procedural_scene(0, "train", 1, image_size=(240, 160))
    for obj in scene["objects"]:
        alone = {**scene, "objects": [obj]}
        ids = render_ids(alone, 240, 160, None)
        u, v, _ = obj["pixel_coords"]
        assert ids[min(v, 159), min(u, 239)] == 1
    uvd = project(scene, np.zeros((1, 3)), (480, 320))
    assert abs(uvd[0, 0] - 240) < 40 and abs(uvd[0, 1] - 160) < 40  # camera looks at the origin


def test_render_outputs_and_window_equals_crop():
    scene = procedural_scene(0, "train", 2)
    image, mask = render_scene(scene, 480, 320, supersample=1)
    assert image.shape == (320, 480, 3) and image.dtype == np.uint8
    assert mask.shape == (320, 480) and mask.dtype == np.uint8
    assert set(np.unique(mask)) == set(range(len(scene["objects"]) + 1))
    r0, r1, c0, c1 = OFFICIAL_CROP
    crop_image, crop_mask = render_scene(scene, 192, 192, OFFICIAL_CROP, supersample=1)
    np.testing.assert_array_equal(crop_mask, mask[r0:r1, c0:c1])
    diff = np.abs(crop_image.astype(int) - image[r0:r1, c0:c1].astype(int))
    assert diff.max() <= 1
    # The floor is grey, objects are coloured, and supersampling only touches edges.
    floor = image[mask == 0]
    assert np.all(np.abs(floor.astype(int) - floor.mean(axis=1, keepdims=True)) <= 2)
    smooth, smooth_mask = render_scene(scene, 480, 320, supersample=2)
    assert (smooth_mask != mask).mean() < 0.01
    assert np.abs(smooth.astype(int) - image.astype(int)).mean() < 1.0


@pytest.mark.parametrize("task", ["object_discovery", "set_prediction"])
def test_dataset_samples(task):
    ds = ProceduralClevrDataset("train", task, num=3, seed=0, resolution=(32, 32))
    assert len(ds) == 3
    sample = ds[1]
    assert sample["image"].shape == (3, 32, 32) and sample["image"].dtype == torch.float32
    assert -1.0 <= float(sample["image"].min()) and float(sample["image"].max()) <= 1.0
    assert sample["mask"].shape == (32, 32) and sample["mask"].dtype == torch.int64
    scene = ds.scene(1)
    n = len(scene["objects"])
    assert n <= (6 if task == "object_discovery" else 10)
    assert int(sample["mask"].max()) <= n
    again = ProceduralClevrDataset("train", task, num=3, seed=0, resolution=(32, 32))[1]
    assert torch.equal(sample["image"], again["image"])
    assert torch.equal(sample["mask"], again["mask"])
    assert not torch.equal(sample["image"], ds[0]["image"])
    other_split = ProceduralClevrDataset("val", task, num=3, seed=0, resolution=(32, 32))[1]
    assert not torch.equal(sample["image"], other_split["image"])
    if task == "set_prediction":
        target = sample["target"]
        assert target.shape == (10, 19)
        torch.testing.assert_close(target, clevr_target(scene["objects"], 10))
        assert int(target[:, 18].sum()) == n
        for row, obj in zip(target, scene["objects"]):
            assert int(row[7:10].argmax()) == SHAPES.index(obj["shape"])
            assert int(row[10:18].argmax()) == COLORS.index(obj["color"])
        assert set(sample) == {"image", "mask", "target"}
    else:
        assert set(sample) == {"image", "mask"}
    with pytest.raises(IndexError):
        ds[3]


def test_dataset_rejects_bad_options():
    with pytest.raises(ConfigError):
        ProceduralClevrDataset(task="segmentation")
    with pytest.raises(ConfigError):
        ProceduralClevrDataset(min_objects=5, max_objects=4)
    with pytest.raises(ConfigError):
        ProceduralClevrDataset(crop="centre")


def test_build_dataset_makes_procedural():
    from slotlab.data import build_dataset

    ds = build_dataset("procedural", "train", "object_discovery", num=2, resolution=(16, 16))
    assert isinstance(ds, ProceduralClevrDataset)
    assert ds[0]["image"].shape == (3, 16, 16)


def test_generate_writes_the_clevr_layout(tmp_path):
    root = generate_clevr_dir(
        tmp_path / "gen", "val", num=3, seed=5, resolution=(64, 96), workers=2
    )
    images = sorted((root / "images" / "val").iterdir())
    masks = sorted((root / "masks" / "val").iterdir())
    names = [f"CLEVR_val_{i:06d}.png" for i in range(3)]
    assert [p.name for p in images] == names and [p.name for p in masks] == names
    assert sorted(p.name for p in (root / "scenes").iterdir()) == ["CLEVR_val_scenes.json"]

    data = json.loads((root / "scenes" / "CLEVR_val_scenes.json").read_text())
    assert set(data) == {"info", "scenes"}
    assert {"split", "version", "date", "license"} <= set(data["info"])
    assert data["info"]["split"] == "val" and data["info"]["version"] == "1.0"
    assert [s["image_index"] for s in data["scenes"]] == [0, 1, 2]
    for i, scene in enumerate(data["scenes"]):
        assert set(scene) == SCENE_KEYS
        assert scene["split"] == "val" and scene["image_filename"] == names[i]
        assert set(scene["directions"]) == DIRECTION_KEYS
        assert set(scene["relationships"]) == RELATION_KEYS
        for obj in scene["objects"]:
            assert set(obj) == OBJECT_KEYS
            assert len(obj["3d_coords"]) == 3 and len(obj["pixel_coords"]) == 3
        with Image.open(images[i]) as img:
            assert img.mode == "RGBA" and img.size == (96, 64)
            rgba = np.asarray(img)
        assert np.all(rgba[..., 3] == 255)
        with Image.open(masks[i]) as img:
            assert img.mode == "L" and img.size == (96, 64)
            ids = np.asarray(img)
        assert ids.max() <= len(scene["objects"])
        # The files are exactly what the in-memory renderer makes of the same scene.
        expected = procedural_scene(5, "val", i, image_size=(96, 64))
        assert scene == scene_to_json(expected)
        image, mask = render_scene(expected, 96, 64)
        np.testing.assert_array_equal(rgba[..., :3], image)
        np.testing.assert_array_equal(ids, mask)

    if REF_SCENES.is_file():  # same field names as a CLEVR v1.0 scene file
        ref = json.loads(REF_SCENES.read_text())["scenes"][0]
        assert set(ref) == SCENE_KEYS
        assert set(ref["objects"][0]) == OBJECT_KEYS
        assert set(ref["directions"]) == DIRECTION_KEYS
        assert set(ref["relationships"]) == RELATION_KEYS


def test_generated_dir_reads_as_clevr(tmp_path):
    from slotlab.data.clevr import ClevrDataset

    root = generate_clevr_dir(tmp_path, "train", num=2, seed=0, resolution=(32, 48), workers=1)
    ds = ClevrDataset(root, "train", "set_prediction", resolution=(32, 32), crop=None)
    assert len(ds) == 2 and ds.has_masks
    scenes = json.loads((root / "scenes" / "CLEVR_train_scenes.json").read_text())["scenes"]
    for i in range(2):
        torch.testing.assert_close(ds[i]["target"], clevr_target(scenes[i]["objects"], 10))


def test_cli_generate_and_show(tmp_path, capsys):
    out = tmp_path / "gen"
    argv = ["data", "generate", "--out", str(out), "--num", "2", "--resolution", "40x60"]
    assert main([*argv, "--seed", "1", "--workers", "1"]) == 0
    assert "images/s" in capsys.readouterr().out
    assert (out / "images" / "train" / "CLEVR_train_000001.png").is_file()
    assert (out / "masks" / "train" / "CLEVR_train_000001.png").is_file()
    assert (out / "scenes" / "CLEVR_train_scenes.json").is_file()

    sheet = tmp_path / "sheet.png"
    assert main(["data", "show", str(out), "--out", str(sheet)]) == 0
    with Image.open(sheet) as img:
        assert img.mode == "RGB" and img.size[0] > 2 * img.size[1]  # image | mask side by side


def test_cli_show_errors(tmp_path, capsys):
    assert main(["data", "show", str(tmp_path / "missing"), "--out", str(tmp_path / "a.png")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty" / "images" / "train").mkdir(parents=True)
    assert main(["data", "show", str(tmp_path / "empty"), "--out", str(tmp_path / "a.png")]) == 2
    assert "no PNG" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["data", "generate", "--out", str(tmp_path), "--resolution", "big"])


def test_regenerating_replaces_the_split_and_object_range(tmp_path, capsys):
    out = tmp_path / "gen"
    base = ["data", "generate", "--out", str(out), "--resolution", "32x48", "--workers", "1"]
    assert main([*base, "--num", "3"]) == 0
    assert main([*base, "--num", "2", "--min-objects", "3", "--max-objects", "3",
                 "--overwrite"]) == 0
    names = sorted(p.name for p in (out / "images" / "train").iterdir())
    assert names == ["CLEVR_train_000000.png", "CLEVR_train_000001.png"]
    assert len(list((out / "masks" / "train").iterdir())) == 2
    scenes = json.loads((out / "scenes" / "CLEVR_train_scenes.json").read_text())["scenes"]
    assert [len(s["objects"]) for s in scenes] == [3, 3]
    capsys.readouterr()
    (tmp_path / "file").write_text("x")
    assert main(["data", "generate", "--out", str(tmp_path / "file"), "--num", "1"]) == 2
    assert "cannot write" in capsys.readouterr().err


PINNED = Path(__file__).resolve().parents[1] / "fixtures" / "procedural"


def _close_json(got, want, path="scene"):
    """Equal structure and strings; numbers equal up to float round-off (CPUs differ in the last
    bits of numpy's vectorised maths)."""
    if isinstance(want, dict):
        assert sorted(got) == sorted(want), path
        for key in want:
            _close_json(got[key], want[key], f"{path}.{key}")
    elif isinstance(want, list):
        assert len(got) == len(want), path
        for i, (g, w) in enumerate(zip(got, want, strict=True)):
            _close_json(g, w, f"{path}[{i}]")
    elif isinstance(want, float):
        assert math.isclose(got, want, rel_tol=1e-9, abs_tol=1e-9), path
    else:
        assert got == want, path


def _close_pixels(got, want, name):
    """Rendered pixels equal but for rare rounding flips: at most 0.5% of the values and by at
    most 2 levels of 255 (a renderer or sampler change moves far more)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, name
    diff = np.abs(got - want)
    scale = 2 / 255 if want.dtype.kind == "f" or np.abs(want).max() <= 1 else 2
    assert (diff > 1e-6).mean() <= 0.005 and diff.max() <= scale + 1e-6, name


def test_outputs_are_pinned():
    """The sampler's scenes and the renderer's pixels are what slotlab generated when they were
    pinned (tests/fixtures/procedural): a change here changes the data every procedural dataset
    and every generated directory holds."""
    pinned = np.load(PINNED / "pinned.npz")
    for i in (0, 1):
        scene = procedural_scene(3, "train", i, image_size=(96, 64))
        want = json.loads((PINNED / f"scene{i}.json").read_text())
        _close_json(json.loads(json.dumps(scene_to_json(scene))), want)
        image, mask = render_scene(scene, 96, 64)
        _close_pixels(image, pinned[f"render{i}_image"], f"render{i} image")
        assert (mask != pinned[f"render{i}_mask"]).mean() <= 0.005
    for task in ("object_discovery", "set_prediction"):
        sample = ProceduralClevrDataset("val", task, num=3, seed=1, resolution=(32, 32))[2]
        for key, value in sample.items():
            want = pinned[f"{task}_{key}"]
            if key == "image":
                _close_pixels(value.numpy(), want, f"{task} image")
            elif key == "mask":
                assert (value.numpy() != want).mean() <= 0.005
            else:
                np.testing.assert_allclose(value.numpy(), want, rtol=0, atol=1e-6)
