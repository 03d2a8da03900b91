"""ImageFolderDataset: any folder of images, with or without instance-id masks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data import ImageFolderDataset, clevr_preprocess
from slotlab.data.folder import HELD_OUT, center_box, held_out
from slotlab.data.preprocess import crop, resize_mask
from slotlab.errors import ConfigError, DataError


def smooth_image(height: int, width: int, seed: int) -> np.ndarray:
    """A uint8 [H, W, 3] picture that survives JPEG well enough to compare loosely."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    return np.kron(coarse, np.ones((8, 8, 1), np.uint8))[:height, :width].copy()


def write_folder(root: Path, masks: bool = False) -> dict[str, dict]:
    """Three PNGs of different sizes and modes plus one JPEG, written out of name order."""
    (root / "images").mkdir(parents=True)
    if masks:
        (root / "masks").mkdir()
    specs = {"c_rgba.png": (60, 90), "a_rgb.png": (100, 100), "d_photo.jpg": (48, 64),
             "b_grey.png": (70, 50)}  # fmt: skip
    written = {}
    for seed, (name, (h, w)) in enumerate(specs.items()):
        rgb = smooth_image(h, w, seed)
        if name.startswith("c_"):
            alpha = np.full((h, w, 1), 255, np.uint8)
            Image.fromarray(np.concatenate([rgb, alpha], axis=2), "RGBA").save(
                root / "images" / name
            )
        elif name.startswith("b_"):
            rgb = np.repeat(rgb[:, :, :1], 3, axis=2)
            Image.fromarray(rgb[:, :, 0], "L").save(root / "images" / name)
        elif name.endswith(".jpg"):
            Image.fromarray(rgb).save(root / "images" / name, quality=95)
        else:
            Image.fromarray(rgb).save(root / "images" / name)
        ids = np.zeros((h, w), np.uint8)
        ids[h // 4 : h // 2, w // 4 : w // 2] = 1
        ids[h // 2 :, w // 2 :] = 3  # ids need not be consecutive
        if masks:
            Image.fromarray(ids, "L").save(root / "masks" / (Path(name).stem + ".png"))
        written[name] = {"rgb": rgb, "ids": ids}
    return written


def test_folder_without_masks_sorted_and_preprocessed(tmp_path):
    written = write_folder(tmp_path)
    ds = ImageFolderDataset(tmp_path, "all", resolution=(32, 32), crop="full")
    names = [p.name for p in ds.image_paths]
    assert names == ["a_rgb.png", "b_grey.png", "c_rgba.png", "d_photo.jpg"]
    assert not ds.has_masks and len(ds) == 4
    for item, name in enumerate(names):
        sample = ds[item]
        assert set(sample) == {"image"}
        image = sample["image"]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert image.min() >= -1 and image.max() <= 1
        rgb = written[name]["rgb"]
        if name.endswith(".jpg"):  # JPEG is lossy: compare with Pillow's own decode
            rgb = np.array(Image.open(tmp_path / "images" / name).convert("RGB"))
        expected = clevr_preprocess(rgb, "object_discovery", (32, 32), None)
        torch.testing.assert_close(image, expected)


def test_folder_with_masks_and_centre_crop(tmp_path):
    written = write_folder(tmp_path, masks=True)
    ds = ImageFolderDataset(tmp_path, "all", resolution=(16, 16), crop="center")
    assert ds.has_masks
    for item, path in enumerate(ds.image_paths):
        ids = written[path.name]["ids"]
        box = center_box(*ids.shape, 1.0)
        sample = ds[item]
        mask = sample["mask"]
        assert mask.dtype == torch.int64 and mask.shape == (16, 16)
        expected = resize_mask(crop(torch.from_numpy(ids).long(), box), (16, 16))
        torch.testing.assert_close(mask, expected)
        assert set(mask.unique().tolist()) <= {0, 1, 3}
        if path.suffix == ".png":
            torch.testing.assert_close(
                sample["image"],
                clevr_preprocess(written[path.name]["rgb"], "object_discovery", (16, 16), box),
            )


def test_fixed_crop_box_and_flat_folder(tmp_path):
    rgb = smooth_image(40, 60, 0)
    Image.fromarray(rgb).save(tmp_path / "x.png")
    ds = ImageFolderDataset(tmp_path, "all", resolution=(8, 8), crop=(4, 36, 10, 42))
    assert ds.image_dir == tmp_path and len(ds) == 1
    expected = clevr_preprocess(rgb, "object_discovery", (8, 8), (4, 36, 10, 42))
    torch.testing.assert_close(ds[0]["image"], expected)
    too_big = ImageFolderDataset(tmp_path, "all", crop=(0, 50, 0, 50))
    with pytest.raises(DataError, match=r"x\.png is 40x60 \(height x width\), too small"):
        too_big[0]
    with pytest.raises(ConfigError, match="crop"):
        ImageFolderDataset(tmp_path, crop="middle")


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DataError, match="nowhere does not exist"):
        ImageFolderDataset(tmp_path / "nowhere")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("no pictures")
    with pytest.raises(DataError, match=r"images holds no \.png, \.jpg or \.jpeg"):
        ImageFolderDataset(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=r"empty holds no .*and has no images/ subfolder"):
        ImageFolderDataset(tmp_path / "empty")


def test_missing_mask_is_an_error(tmp_path):
    write_folder(tmp_path, masks=True)
    (tmp_path / "masks" / "c_rgba.png").unlink()
    with pytest.raises(DataError, match=r"mask file .*c_rgba\.png is missing"):
        ImageFolderDataset(tmp_path)


def test_mask_size_mismatch_names_the_mask(tmp_path):
    write_folder(tmp_path, masks=True)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(tmp_path / "masks" / "a_rgb.png")
    ds = ImageFolderDataset(tmp_path, "all")
    with pytest.raises(DataError, match=r"masks.a_rgb\.png is 10x10 but its image"):
        ds[0]


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_files_name_the_file(tmp_path, damage):
    write_folder(tmp_path)
    path = tmp_path / "images" / "d_photo.jpg"
    data = path.read_bytes()
    path.write_bytes(
        b"\xff\xd8\xff" + b"\x00" * 64 if damage == "garbage" else data[: len(data) // 3]
    )
    ds = ImageFolderDataset(tmp_path, "all")
    with pytest.raises(DataError, match=r"d_photo\.jpg is corrupt or truncated"):
        ds[3]


def test_set_prediction_is_refused(tmp_path):
    write_folder(tmp_path)
    with pytest.raises(DataError, match="no set-prediction targets"):
        ImageFolderDataset(tmp_path, task="set_prediction")


def test_flat_folder_split_is_deterministic_disjoint_and_stable(tmp_path):
    """A flat folder holds out the files whose name hashes into the first tenth: train and val
    are disjoint, cover "all", do not depend on the other files, and read the same twice."""
    (tmp_path / "images").mkdir()
    for i in range(60):
        Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(tmp_path / "images" / f"{i:03d}.png")
    train = ImageFolderDataset(tmp_path, "train", resolution=(8, 8))
    val = ImageFolderDataset(tmp_path, "val", resolution=(8, 8))
    every = ImageFolderDataset(tmp_path, "all", resolution=(8, 8))
    assert set(train.image_paths).isdisjoint(val.image_paths)
    assert sorted(train.image_paths + val.image_paths) == every.image_paths
    assert [p.name for p in val.image_paths] == [
        p.name for p in every.image_paths if held_out(p.name) < HELD_OUT]
    assert 1 <= len(val) < 20
    assert ImageFolderDataset(tmp_path, "val").image_paths == val.image_paths
    for i in range(60, 90):  # more files: the old ones keep their side
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / f"{i:03d}.png")
    grown = ImageFolderDataset(tmp_path, "val", resolution=(8, 8))
    assert set(val.image_paths) <= set(grown.image_paths)
    with pytest.raises(DataError, match="no split directories"):
        ImageFolderDataset(tmp_path, "test")


def test_split_directories_as_the_generator_writes_them(tmp_path):
    from slotlab.cli import main

    out = tmp_path / "sprites"
    for split, num in (("train", 6), ("val", 3)):
        assert main(["data", "generate", "--style", "sprites", "--out", str(out), "--num",
                     str(num), "--split", split, "--resolution", "32"]) == 0
    train = ImageFolderDataset(out, "train", resolution=(32, 32))
    val = ImageFolderDataset(out, "val", resolution=(32, 32))
    assert len(train) == 6 and len(val) == 3 and train.has_masks and val.has_masks
    assert set(train.image_paths).isdisjoint(val.image_paths)
    assert len(ImageFolderDataset(out, "all")) == 9
    assert val[0]["mask"].max() >= 1
    with pytest.raises(DataError, match="has the splits train, val"):
        ImageFolderDataset(out, "test")


def test_non_square_images_are_centre_cropped_or_padded_never_squashed(tmp_path):
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, 10:30] = 255  # a white square in the middle of a wide image
    Image.fromarray(rgb).save(tmp_path / "wide.png")
    crop = ImageFolderDataset(tmp_path, "all", resolution=(10, 10))[0]["image"]
    assert crop.min() == 1.0  # default "center": the white middle only
    pad = ImageFolderDataset(tmp_path, "all", resolution=(10, 10), crop="pad")[0]["image"]
    assert pad.shape == (3, 10, 10) and pad[:, 5, 0].max() == -1.0 and pad[:, 5, 5].min() == 1.0
    full = ImageFolderDataset(tmp_path, "all", resolution=(10, 10), crop="full")[0]["image"]
    assert full[:, 5, 0].max() == -1.0 and full[:, 5, 2].min() > -1.0  # squashed on request
