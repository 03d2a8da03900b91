"""ClevrDataset on small files written in the genuine CLEVR v1.0 layout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from slotlab.data import ClevrDataset, clevr_preprocess, clevr_target
from slotlab.data.io import read_id_mask, read_image, read_json
from slotlab.data.preprocess import crop, resize_mask
from slotlab.errors import DataError

WIDTH, HEIGHT = 480, 320
COLOR_NAMES = ["gray", "red", "blue", "green", "brown", "purple", "cyan", "yellow"]


def make_object(rng: np.random.Generator, i: int) -> dict:
    """One object with the field names and value names of real CLEVR scene JSON."""
    return {
        "3d_coords": [float(rng.uniform(-3, 3)), float(rng.uniform(-3, 3)), 0.35 + 0.35 * (i % 2)],
        "pixel_coords": [int(rng.integers(0, WIDTH)), int(rng.integers(0, HEIGHT)), 10.5],
        "rotation": float(rng.uniform(0, 360)),
        "size": ["small", "large"][i % 2],
        "color": COLOR_NAMES[i % 8],
        "material": ["rubber", "metal"][(i // 2) % 2],
        "shape": ["cube", "sphere", "cylinder"][i % 3],
    }


def write_clevr(
    root: Path,
    split: str,
    counts: list[int],
    masks: bool = False,
    scenes: bool = True,
    seed: int = 0,
) -> dict[int, dict]:
    """Write images/, scenes/ (and masks/) for len(counts) scenes; return what was written.

    Images are RGBA 480x320 like real CLEVR. Files are written in a shuffled order and the scene
    list is reversed, so the dataset's ordering is really tested.
    """
    rng = np.random.default_rng(seed)
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    written = {}
    order = rng.permutation(len(counts))
    for index in order:
        index = int(index)
        coarse = rng.integers(0, 256, size=(HEIGHT // 16, WIDTH // 16, 3), dtype=np.uint8)
        rgb = np.kron(coarse, np.ones((16, 16, 1), dtype=np.uint8))
        rgb[::7, ::5] = 255 - rgb[::7, ::5]  # some high-frequency content
        rgba = np.concatenate([rgb, np.full((HEIGHT, WIDTH, 1), 255, np.uint8)], axis=2)
        name = f"CLEVR_{split}_{index:06d}.png"
        Image.fromarray(rgba, "RGBA").save(root / "images" / split / name)
        objects = [make_object(rng, i) for i in range(counts[index])]
        ids = np.zeros((HEIGHT, WIDTH), dtype=np.uint8)
        for i in range(counts[index]):
            r, c = 40 + 25 * (i % 7), 80 + 30 * i
            ids[r : r + 30, c : c + 24] = i + 1
        if masks:
            (root / "masks" / split).mkdir(parents=True, exist_ok=True)
            Image.fromarray(ids, "L").save(root / "masks" / split / name)
        written[index] = {"rgb": rgb, "ids": ids, "objects": objects, "name": name}
    if scenes:
        scene_list = [
            {
                "split": split,
                "image_index": index,
                "image_filename": written[index]["name"],
                "directions": {"left": [-0.65, 0.76, 0.0], "right": [0.65, -0.76, 0.0]},
                "objects": written[index]["objects"],
                "relationships": {"left": [[] for _ in written[index]["objects"]]},
            }
            for index in sorted(written, reverse=True)
        ]
        info = {"split": split, "version": "1.0", "date": "2/14/2017", "license": "CC BY 4.0"}
        (root / "scenes").mkdir(exist_ok=True)
        with open(root / "scenes" / f"CLEVR_{split}_scenes.json", "w") as f:
            json.dump({"info": info, "scenes": scene_list}, f)
    return written


def edit_scenes(root: Path, split: str, edit) -> Path:
    """Load the scene file, apply edit(data) in place, write it back; return its path."""
    path = root / "scenes" / f"CLEVR_{split}_scenes.json"
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    return path


# --------------------------------------------------------------------------- pipelines


def test_object_discovery_pipeline_filter_order_and_crop(tmp_path):
    written = write_clevr(tmp_path, "train", [3, 7, 6, 10, 4, 5])
    ds = ClevrDataset(tmp_path, "train", "object_discovery")
    assert ds.image_indices == [0, 2, 4, 5]  # <= 6 objects, image-index order
    assert len(ds) == 4 and ds.max_objects == 6 and not ds.has_masks
    for item, index in enumerate(ds.image_indices):
        sample = ds[item]
        assert set(sample) == {"image"}
        image = sample["image"]
        assert image.dtype == torch.float32 and image.shape == (3, 128, 128)
        assert image.min() >= -1.0 and image.max() <= 1.0
        rgb = written[index]["rgb"]
        torch.testing.assert_close(image, clevr_preprocess(rgb, "object_discovery"))
        # Spelled out: scale, crop rows 29:221 cols 64:256, bilinear (half-pixel) resize.
        x = torch.from_numpy(rgb).float().permute(2, 0, 1) / 255.0
        x = ((x - 0.5) * 2.0)[:, 29:221, 64:256]
        expected = F.interpolate(x[None], size=(128, 128), mode="bilinear", align_corners=False)
        torch.testing.assert_close(image, expected[0].clamp(-1, 1), atol=1e-5, rtol=0)
    # Without the crop the picture differs.
    uncropped = ClevrDataset(tmp_path, "train", "object_discovery", crop=None)[0]["image"]
    assert not torch.allclose(uncropped, ds[0]["image"])


def test_set_prediction_pipeline_targets_and_filter(tmp_path):
    written = write_clevr(tmp_path, "val", [3, 11, 10, 6])
    ds = ClevrDataset(tmp_path, "validation", "set_prediction")
    assert ds.split == "val" and ds.max_objects == 10
    assert ds.image_indices == [0, 2, 3]  # the 11-object scene is dropped
    for item, index in enumerate(ds.image_indices):
        sample = ds[item]
        assert set(sample) == {"image", "target"}
        torch.testing.assert_close(
            sample["image"], clevr_preprocess(written[index]["rgb"], "set_prediction")
        )
        target = sample["target"]
        assert target.shape == (10, 19) and target.dtype == torch.float32
        torch.testing.assert_close(target, clevr_target(written[index]["objects"], 10))
        n = len(written[index]["objects"])
        assert target[:n, 18].eq(1).all() and target[n:].eq(0).all()


def test_explicit_max_objects_and_resolution(tmp_path):
    write_clevr(tmp_path, "train", [3, 4, 5, 6])
    ds = ClevrDataset(tmp_path, "train", "set_prediction", max_objects=4, resolution=(64, 96))
    assert ds.image_indices == [0, 1]
    sample = ds[1]
    assert sample["image"].shape == (3, 64, 96) and sample["target"].shape == (4, 19)


def test_masks_are_cropped_resized_and_keep_ids(tmp_path):
    written = write_clevr(tmp_path, "train", [3, 5, 8], masks=True)
    ds = ClevrDataset(tmp_path, "train", "object_discovery")
    assert ds.has_masks and ds.image_indices == [0, 1]
    for item, index in enumerate(ds.image_indices):
        mask = ds[item]["mask"]
        assert mask.dtype == torch.int64 and mask.shape == (128, 128)
        ids = torch.from_numpy(written[index]["ids"]).long()
        torch.testing.assert_close(mask, resize_mask(crop(ids, (29, 221, 64, 256)), (128, 128)))
        # Every object that is inside the crop keeps its id; no id is invented.
        visible = set(ids[29:221, 64:256].unique().tolist())
        assert set(mask.unique().tolist()) == visible
    sp = ClevrDataset(tmp_path, "train", "set_prediction")
    assert sp[2]["mask"].unique().tolist() == list(range(9))  # no crop: all 8 objects + bg


def test_test_split_without_scenes(tmp_path):
    write_clevr(tmp_path, "test", [3, 9, 10], scenes=False)
    ds = ClevrDataset(tmp_path, "test", "object_discovery")
    assert len(ds) == 3 and ds.max_objects is None  # no scenes: no filtering
    assert set(ds[1]) == {"image"} and ds.num_objects(1) is None
    with pytest.raises(DataError, match="CLEVR_test_scenes.json"):
        ClevrDataset(tmp_path, "test", "set_prediction")
    with pytest.raises(DataError, match="CLEVR_test_scenes.json"):
        ClevrDataset(tmp_path, "test", "object_discovery", max_objects=6)


def test_default_collate_batches(tmp_path):
    write_clevr(tmp_path, "train", [3, 4, 5], masks=True)
    ds = ClevrDataset(tmp_path, "train", "set_prediction")
    batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert batch["image"].shape == (3, 3, 128, 128)
    assert batch["mask"].shape == (3, 128, 128) and batch["target"].shape == (3, 10, 19)


# --------------------------------------------------------------------------- bad input


def test_missing_root_and_image_directory(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        ClevrDataset(tmp_path / "nowhere")
    (tmp_path / "scenes").mkdir()
    with pytest.raises(DataError, match=r"images.train"):
        ClevrDataset(tmp_path)


def test_empty_image_directory(tmp_path):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "images" / "train" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError, match=r"images.train.*no CLEVR_train_NNNNNN.png"):
        ClevrDataset(tmp_path)


def test_missing_scene_file(tmp_path):
    write_clevr(tmp_path, "train", [3], scenes=False)
    with pytest.raises(DataError, match="CLEVR_train_scenes.json"):
        ClevrDataset(tmp_path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_or_truncated_png_names_the_file(tmp_path, damage):
    written = write_clevr(tmp_path, "train", [3, 4])
    path = tmp_path / "images" / "train" / written[1]["name"]
    data = path.read_bytes()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 50 if damage == "garbage" else data[:-4000])
    ds = ClevrDataset(tmp_path)
    ds[0]  # the intact image still reads
    with pytest.raises(DataError, match=r"CLEVR_train_000001\.png.*(corrupt|truncated)"):
        ds[1]


def test_unknown_colour_names_scene_file_and_image(tmp_path):
    write_clevr(tmp_path, "train", [3, 4, 5])

    def paint(data):
        scene = next(s for s in data["scenes"] if s["image_index"] == 1)
        scene["objects"][2]["color"] = "magenta"

    edit_scenes(tmp_path, "train", paint)
    with pytest.raises(DataError, match=r"CLEVR_train_scenes\.json.*image index 1.*magenta"):
        ClevrDataset(tmp_path, "train", "object_discovery")


def test_missing_field_and_invalid_json(tmp_path):
    write_clevr(tmp_path, "train", [3, 4])

    def drop_shape(data):
        del data["scenes"][0]["objects"][1]["shape"]

    edit_scenes(tmp_path, "train", drop_shape)
    with pytest.raises(DataError, match=r"CLEVR_train_scenes\.json.*image index 1.*'shape'"):
        ClevrDataset(tmp_path)
    (tmp_path / "scenes" / "CLEVR_train_scenes.json").write_text('{"scenes": [')
    with pytest.raises(DataError, match=r"CLEVR_train_scenes\.json is not valid JSON"):
        ClevrDataset(tmp_path)


def test_image_scene_count_mismatch(tmp_path):
    write_clevr(tmp_path, "train", [3, 4, 5])
    (tmp_path / "images" / "train" / "CLEVR_train_000002.png").unlink()
    with pytest.raises(DataError, match=r"3 scenes.*2 images.*no image CLEVR_train_000002"):
        ClevrDataset(tmp_path)


def test_missing_mask(tmp_path):
    write_clevr(tmp_path, "train", [3, 4], masks=True)
    (tmp_path / "masks" / "train" / "CLEVR_train_000001.png").unlink()
    with pytest.raises(DataError, match=r"mask file .*CLEVR_train_000001\.png is missing"):
        ClevrDataset(tmp_path)


def test_mask_with_too_many_ids(tmp_path):
    write_clevr(tmp_path, "train", [3], masks=True)
    path = tmp_path / "masks" / "train" / "CLEVR_train_000000.png"
    Image.fromarray(np.full((HEIGHT, WIDTH), 7, np.uint8)).save(path)
    with pytest.raises(DataError, match=r"CLEVR_train_000000\.png holds instance id 7"):
        ClevrDataset(tmp_path)[0]


# --------------------------------------------------------------------------- io helpers


def test_read_image_converts_modes(tmp_path):
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    Image.fromarray(rgb).convert("P").save(tmp_path / "p.png")
    Image.fromarray(rgb[:, :, 0], "L").save(tmp_path / "l.png")
    assert read_image(tmp_path / "p.png").shape == (4, 5, 3)
    grey = read_image(tmp_path / "l.png")
    assert grey.dtype == np.uint8 and (grey == rgb[:, :, :1]).all()
    with pytest.raises(DataError, match="missing.png does not exist"):
        read_image(tmp_path / "missing.png")


def test_read_id_mask_and_json_errors(tmp_path):
    ids = np.array([[0, 1], [2, 3]], dtype=np.uint8)
    Image.fromarray(ids, "L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_id_mask(tmp_path / "m.png"), ids)
    Image.fromarray(np.tile(np.array([1, 2, 3], np.uint8), (2, 2, 1))).save(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"c\.png is a colour image"):
        read_id_mask(tmp_path / "c.png")
    with pytest.raises(DataError, match=r"nothing\.json does not exist"):
        read_json(tmp_path / "nothing.json")
