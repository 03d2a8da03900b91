"""DeepMind multi_object_datasets TFRecords: exact decoding and MultiObjectDataset."""

from pathlib import Path

import numpy as np
import pytest
import torch

import slotlab.io
from slotlab.data.multi_object import (
    MultiObjectDataset,
    default_cache_dir,
    infer_multi_object_name,
    multi_object_spec,
    read_multi_object_tfrecord,
)
from slotlab.data.preprocess import clevr_preprocess
from slotlab.errors import ConfigError, DataError
from slotlab.tf_formats.example import BytesList
from slotlab.tf_formats.tfrecord import write_tfrecord

FORMATS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats"
needs_ref = pytest.mark.skipif(not FORMATS.is_dir(), reason="../shared/reference is absent")
NAMES = [
    "clevr_with_masks",
    "multi_dsprites_binarized",
    "multi_dsprites_colored_on_grayscale",
    "multi_dsprites_colored_on_colored",
    "tetrominoes",
    "objects_room_train",
]


@needs_ref
@pytest.mark.parametrize("name", NAMES)
def test_reproduces_official_reader_bit_for_bit(name):
    path = FORMATS / "multi_object" / f"{name}.tfrecords"
    expected = np.load(path.with_suffix(".expected.npz"))
    keys = {k.rsplit("__", 1)[0] for k in expected.files}
    records = list(read_multi_object_tfrecord(path, name))
    assert len(records) == len({k.rsplit("__", 1)[1] for k in expected.files}) == 3
    for i, record in enumerate(records):
        assert set(record) == keys
        for key in keys:
            want, got = expected[f"{key}__{i}"], record[key]
            assert got.dtype == want.dtype and got.shape == want.shape, key
            assert got.tobytes() == want.tobytes(), key


def test_name_inference():
    assert infer_multi_object_name("x/clevr_with_masks_train.tfrecords") == "clevr_with_masks"
    assert infer_multi_object_name("tetrominoes_train.tfrecords") == "tetrominoes"
    assert infer_multi_object_name("objects_room_train.tfrecords") == "objects_room_train"
    assert (
        infer_multi_object_name("objects_room_test_six_objects.tfrecords")
        == "objects_room_six_objects"
    )
    assert (
        infer_multi_object_name("multi_dsprites_colored_on_colored.tfrecords")
        == "multi_dsprites_colored_on_colored"
    )
    assert multi_object_spec("identical_color").entities == 10
    assert multi_object_spec("empty_room").entities == 4
    with pytest.raises(DataError, match="data.tfrecords: cannot tell"):
        infer_multi_object_name("data.tfrecords")


# ---------------------------------------------------------------------------------------------
# Files in the genuine format, written by the tests
# ---------------------------------------------------------------------------------------------


def clevr_scene(rng: np.random.Generator, n_objects: int) -> tuple[dict, np.ndarray]:
    """A clevr_with_masks-format example with `n_objects` rectangles; returns (features, ids)."""
    e, h, w = 11, 240, 320
    ids = np.zeros((h, w), np.uint8)
    for i in range(1, n_objects + 1):
        r, c = rng.integers(20, h - 40), rng.integers(50, w - 60)
        ids[r : r + rng.integers(5, 40), c : c + rng.integers(5, 60)] = i
    mask = (ids[None] == np.arange(e)[:, None, None]).astype(np.uint8)[..., None] * 255
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    visibility = (np.arange(e) <= n_objects).astype(np.float32)
    codes = np.where(np.arange(e) <= n_objects, np.arange(e) % 3 + 1, 0).astype(np.uint8)
    codes[0] = 0
    features = {
        "image": BytesList.from_uint8(image),
        "mask": BytesList.from_uint8(mask),
        "x": rng.normal(size=e).astype(np.float32),
        "y": rng.normal(size=e).astype(np.float32),
        "z": rng.normal(size=e).astype(np.float32),
        "pixel_coords": rng.normal(size=(e, 3)).astype(np.float32),
        "rotation": rng.uniform(0, 360, e).astype(np.float32),
        "size": BytesList.from_uint8(codes),
        "material": BytesList.from_uint8(codes),
        "shape": BytesList.from_uint8(codes),
        "color": BytesList.from_uint8(codes),
        "visibility": visibility,
    }
    return features, ids


OBJECT_COUNTS = [3, 7, 6, 9, 1, 10]  # records 1, 3 and 5 exceed CLEVR6


@pytest.fixture(scope="module")
def clevr_file(tmp_path_factory):
    rng = np.random.default_rng(0)
    scenes = [clevr_scene(rng, n) for n in OBJECT_COUNTS]
    path = tmp_path_factory.mktemp("cwm") / "clevr_with_masks_train.tfrecords"
    write_tfrecord(path, [f for f, _ in scenes], gzip=False)
    return path, scenes


def test_written_clevr_file_decodes(clevr_file):
    path, scenes = clevr_file
    records = list(read_multi_object_tfrecord(path))
    assert len(records) == len(scenes)
    for record, (features, ids) in zip(records, scenes):
        assert record["mask"].shape == (11, 240, 320, 1)
        np.testing.assert_array_equal(record["mask"][..., 0].argmax(0), ids)
        np.testing.assert_array_equal(record["image"].reshape(-1), features["image"].to_uint8())


def test_clevr6_dataset(clevr_file, tmp_path):
    path, scenes = clevr_file
    ds = MultiObjectDataset(path, "clevr_with_masks", cache_dir=tmp_path, progress=False)
    keep = [i for i, n in enumerate(OBJECT_COUNTS) if n <= 6]
    assert len(ds) == len(keep)
    assert ds.record_indices.tolist() == keep
    assert ds.num_objects.tolist() == [OBJECT_COUNTS[i] for i in keep]
    # Nearest-neighbour resize of the official crop rows 29:221, cols 64:256 to 128x128.
    src = 29 + np.floor((np.arange(128) + 0.5) * 1.5).astype(int)
    src_c = 64 + np.floor((np.arange(128) + 0.5) * 1.5).astype(int)
    for item, record in enumerate(keep):
        features, ids = scenes[record]
        sample = ds[item]
        assert set(sample) == {"image", "mask"}
        assert sample["image"].shape == (3, 128, 128) and sample["image"].dtype == torch.float32
        assert sample["mask"].shape == (128, 128) and sample["mask"].dtype == torch.int64
        np.testing.assert_array_equal(sample["mask"].numpy(), ids[src][:, src_c])
        raw = features["image"].to_uint8().reshape(240, 320, 3)
        official = clevr_preprocess(raw, "object_discovery")
        assert (sample["image"] - official).abs().max() <= 1 / 255 + 1e-6
    # Cached: a second dataset reuses the files without reading the TFRecord again.
    entries = sorted(p.name for p in tmp_path.iterdir())
    assert len(entries) == 1 and not entries[0].startswith(".")
    again = MultiObjectDataset(path, cache_dir=tmp_path, progress=False, verify_crc=False)
    assert again.cache_path == ds.cache_path
    torch.testing.assert_close(again[1]["image"], ds[1]["image"])
    every = MultiObjectDataset(path, max_objects=10, cache_dir=tmp_path, progress=False)
    assert len(every) == len(OBJECT_COUNTS)


def test_split_ranges_and_empty_splits(clevr_file, tmp_path):
    path, _ = clevr_file
    ranges = {"train": (0, 4), "val": (4, None), "late": (100, 200)}
    train = MultiObjectDataset(
        path, split="train", split_ranges=ranges, cache_dir=tmp_path, progress=False
    )
    val = MultiObjectDataset(
        path, split="val", split_ranges=ranges, cache_dir=tmp_path, progress=False
    )
    assert train.record_indices.tolist() == [0, 2]
    assert val.record_indices.tolist() == [4]
    with pytest.raises(DataError, match="clevr_with_masks_train.tfrecords: split 'late'.*empty"):
        MultiObjectDataset(
            path, split="late", split_ranges=ranges, cache_dir=tmp_path, progress=False
        )
    with pytest.raises(DataError, match="clevr_with_masks_train.tfrecords: split 'val'.*empty"):
        MultiObjectDataset(path, split="val", cache_dir=tmp_path, progress=False)  # 70000:85000
    with pytest.raises(DataError, match="none of the 2 records"):
        MultiObjectDataset(
            path,
            split="x",
            split_ranges={"x": (3, 5)},
            max_objects=0,
            cache_dir=tmp_path,
            progress=False,
        )
    with pytest.raises(ConfigError, match="unknown split 'nope'"):
        MultiObjectDataset(path, split="nope", cache_dir=tmp_path, progress=False)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_set_prediction_is_refused(clevr_file, tmp_path):
    path, _ = clevr_file
    with pytest.raises(DataError, match="set_prediction.*no documented names"):
        MultiObjectDataset(path, task="set_prediction", cache_dir=tmp_path)


def test_default_cache_dir(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    assert default_cache_dir(data / "f.tfrecords") == data / ".slotlab-cache"
    monkeypatch.setattr(slotlab.io, "_writable_dir", lambda path: False)
    monkeypatch.setattr(Path, "home", classmethod(lambda cls: tmp_path / "home"))
    assert default_cache_dir(data / "f.tfrecords") == tmp_path / "home" / ".cache" / "slotlab"


@needs_ref
@pytest.mark.parametrize(
    "name, size",
    [
        ("multi_dsprites_binarized", 64),
        ("multi_dsprites_colored_on_colored", 64),
        ("tetrominoes", 35),
        ("objects_room_train", 64),
    ],
)
def test_other_datasets(name, size, tmp_path):
    path = FORMATS / "multi_object" / f"{name}.tfrecords"
    expected = np.load(path.with_suffix(".expected.npz"))
    ds = MultiObjectDataset(path, name, cache_dir=tmp_path, progress=False)
    assert len(ds) == 3
    for i in range(3):
        sample = ds[i]
        assert sample["image"].shape == (3, size, size)
        image = expected[f"image__{i}"]
        if image.shape[-1] == 1:
            image = np.repeat(image, 3, axis=-1)
        want = (torch.from_numpy(image).permute(2, 0, 1).float() / 255 - 0.5) * 2
        torch.testing.assert_close(sample["image"], want)
        ids = expected[f"mask__{i}"][..., 0].argmax(0)
        np.testing.assert_array_equal(sample["mask"].numpy(), ids)


@needs_ref
def test_reference_clevr_dataset(tmp_path):
    path = FORMATS / "multi_object" / "clevr_with_masks.tfrecords"
    expected = np.load(path.with_suffix(".expected.npz"))
    ds = MultiObjectDataset(path, cache_dir=tmp_path, resolution=(192, 192), progress=False)
    assert len(ds) == 3
    ids = expected["mask__1"][..., 0].argmax(0)[29:221, 64:256]
    np.testing.assert_array_equal(ds[1]["mask"].numpy(), ids)
    image = clevr_preprocess(expected["image__1"], "object_discovery", (192, 192))
    torch.testing.assert_close(ds[1]["image"], image)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def tetromino(rng: np.random.Generator) -> dict:
    return {
        "image": BytesList.from_uint8(rng.integers(0, 256, 35 * 35 * 3)),
        "mask": BytesList.from_uint8(np.zeros(4 * 35 * 35)),
        "x": np.zeros(4, np.float32),
        "y": np.zeros(4, np.float32),
        "shape": np.zeros(4, np.float32),
        "color": np.zeros(12, np.float32),
        "visibility": np.ones(4, np.float32),
    }


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.pop("visibility"), "record 1 has no feature 'visibility'"),
        (
            lambda f: f.update(image=BytesList.from_uint8(np.zeros(35 * 35 * 3 - 1))),
            "record 1: feature 'image' has 3674 values, expected 3675",
        ),
        (lambda f: f.update(x=np.zeros(5, np.float32)), "record 1: feature 'x' has 5 values"),
        (lambda f: f.update(x=np.zeros(4, np.int64)), "record 1: feature 'x' is an int64_list"),
        (
            lambda f: f.update(mask=BytesList([b"ab"] * (4 * 35 * 35))),
            "record 1: feature 'mask' holds strings that are not exactly one byte",
        ),
    ],
    ids=["missing", "image-count", "float-count", "wrong-kind", "long-strings"],
)
def test_bad_records(tmp_path, change, message):
    rng = np.random.default_rng(1)
    good, bad = tetromino(rng), tetromino(rng)
    change(bad)
    path = tmp_path / "tetrominoes_train.tfrecords"
    write_tfrecord(path, [good, bad, good], gzip=True)
    with pytest.raises(DataError, match="tetrominoes_train.tfrecords: " + message):
        list(read_multi_object_tfrecord(path, "tetrominoes"))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="absent.tfrecords: no such file"):
        list(read_multi_object_tfrecord(tmp_path / "absent.tfrecords", "tetrominoes"))
    with pytest.raises(DataError, match="absent.tfrecords: no such file"):
        MultiObjectDataset(tmp_path / "absent.tfrecords", "tetrominoes", cache_dir=tmp_path)
