"""TFDS-prepared CLEVR 3.1.0 read without TensorFlow."""

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data.preprocess import clevr_preprocess, clevr_target
from slotlab.data.tfds_clevr import TFDSClevrDataset, read_tfds_clevr
from slotlab.errors import ConfigError, DataError
from slotlab.tf_formats.example import BytesList
from slotlab.tf_formats.tfrecord import write_tfrecord

FORMATS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "formats"
TFDS_DIR = FORMATS / "tfds_clevr"
needs_ref = pytest.mark.skipif(not TFDS_DIR.is_dir(), reason="../shared/reference is absent")


@needs_ref
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_reproduces_tfds_bit_for_bit(split):
    expected = np.load(TFDS_DIR / "clevr.expected.npz")
    records = list(read_tfds_clevr(TFDS_DIR, split))
    keys = [k.split("__") for k in expected.files if k.startswith(split + "__")]
    assert len(records) == len({i for _, _, i in keys})
    for _, feature, i in keys:
        want, got = expected[f"{split}__{feature}__{i}"], records[int(i)][feature]
        assert got.dtype == want.dtype and got.shape == want.shape, feature
        np.testing.assert_array_equal(got, want)
    for i, record in enumerate(records):
        assert set(record) == {f for _, f, j in keys if int(j) == i}


@needs_ref
def test_reference_dataset_tasks(tmp_path):
    expected = np.load(TFDS_DIR / "clevr.expected.npz")
    ds = TFDSClevrDataset(
        TFDS_DIR, "validation", "set_prediction", cache_dir=tmp_path, progress=False
    )
    assert len(ds) == 2
    for i in range(2):
        sample = ds[i]
        assert set(sample) == {"image", "target"}
        image = expected[f"validation__image__{i}"]
        torch.testing.assert_close(sample["image"], clevr_preprocess(image, "set_prediction"))
        objects = [
            {
                k: expected[f"validation__objects.{k}__{i}"][j]
                for k in ("3d_coords", "size", "material", "shape", "color")
            }
            for j in range(len(expected[f"validation__objects.color__{i}"]))
        ]
        torch.testing.assert_close(sample["target"], clevr_target(objects, 10))
    # "train" skips the first num_eval_examples, "train_eval" takes them.
    train = TFDSClevrDataset(
        TFDS_DIR, "train", num_eval_examples=1, cache_dir=tmp_path, progress=False
    )
    train_eval = TFDSClevrDataset(
        TFDS_DIR, "train_eval", num_eval_examples=1, cache_dir=tmp_path, progress=False
    )
    assert len(train) == 2 and len(train_eval) == 1
    torch.testing.assert_close(
        train[0]["image"], clevr_preprocess(expected["train__image__1"], "object_discovery")
    )
    assert train[0]["image"].shape == (3, 128, 128)
    with pytest.raises(DataError, match="split 'train' is empty"):
        TFDSClevrDataset(TFDS_DIR, "train", cache_dir=tmp_path, progress=False)  # skips 512


# ---------------------------------------------------------------------------------------------
# A TFDS data_dir written by the tests (two shards per split)
# ---------------------------------------------------------------------------------------------


def png_bytes(rng: np.random.Generator, height=32, width=48) -> tuple[bytes, np.ndarray]:
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue(), rgba[..., :3]


def tfds_example(rng: np.random.Generator, index: int, n: int, image: bytes) -> dict:
    return {
        "image": [image],
        "file_name": f"CLEVR_train_{index:06d}.png",
        "objects/color": rng.integers(0, 8, n),
        "objects/material": rng.integers(0, 2, n),
        "objects/shape": rng.integers(0, 3, n),
        "objects/size": rng.integers(0, 2, n),
        "objects/rotation": rng.uniform(0, 360, n).astype(np.float32),
        "objects/3d_coords": rng.uniform(-3, 3, (n, 3)).astype(np.float32),
        "objects/pixel_coords": rng.uniform(0, 40, (n, 3)).astype(np.float32),
        "question_answer/question": ["How many?"] if index % 2 else BytesList(),
        "question_answer/answer": ["1"] if index % 2 else BytesList(),
    }


COUNTS = [[3, 7, 6], [10, 2]]  # objects per example, per shard


def make_data_dir(root: Path, counts=COUNTS, corrupt=None) -> tuple[Path, list]:
    rng = np.random.default_rng(0)
    builder = root / "clevr" / "3.1.0"
    builder.mkdir(parents=True)
    images = []
    index = 0
    for shard, shard_counts in enumerate(counts):
        examples = []
        for n in shard_counts:
            png, rgb = png_bytes(rng)
            if corrupt == index:
                png = png[:60] + b"\x00" * 20 + png[80:]
            examples.append(tfds_example(rng, index, n, png))
            images.append(rgb)
            index += 1
        write_tfrecord(builder / f"clevr-train.tfrecord-{shard:05d}-of-{len(counts):05d}", examples)
    info = {
        "name": "clevr",
        "fileFormat": "tfrecord",
        "splits": [
            {
                "name": "train",
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "shardLengths": [str(len(c)) for c in counts],
            }
        ],
    }
    (builder / "dataset_info.json").write_text(json.dumps(info))
    return builder, images


def test_written_data_dir(tmp_path):
    builder, images = make_data_dir(tmp_path / "data")
    records = list(read_tfds_clevr(tmp_path / "data", "train"))
    flat = [n for shard in COUNTS for n in shard]
    assert [len(r["objects.color"]) for r in records] == flat
    for i, (record, rgb) in enumerate(zip(records, images)):
        np.testing.assert_array_equal(record["image"], rgb)
        assert record["file_name"] == f"CLEVR_train_{i:06d}.png"
        assert record["objects.3d_coords"].shape == (flat[i], 3)
        assert record["question_answer.question"].shape == (i % 2,)
    # Object discovery keeps <= 6 objects, set prediction <= 10; "train" skips the first 1.
    od = TFDSClevrDataset(
        tmp_path / "data",
        "train",
        num_eval_examples=1,
        cache_dir=tmp_path / "c",
        progress=False,
        resolution=(16, 16),
        crop=None,
    )
    assert od.num_objects.tolist() == [6, 2]
    assert od[1]["image"].shape == (3, 16, 16)
    sp = TFDSClevrDataset(
        tmp_path / "data",
        "train_all",
        "set_prediction",
        cache_dir=tmp_path / "c",
        progress=False,
        crop=None,
    )
    assert len(sp) == 5 and sp[3]["target"].shape == (10, 19)
    assert sp[3]["target"][:, 18].sum() == 10
    cropped = TFDSClevrDataset(
        tmp_path / "data", "train_all", cache_dir=tmp_path / "c", progress=False
    )
    with pytest.raises(DataError, match=r"00000-of-00002: record at byte \d+: .*32x48.*crop"):
        cropped[0]  # the official crop needs an image of at least 221x256
    # One small index file per TFDS split is cached.
    assert len(list((tmp_path / "c").iterdir())) == 1


def test_corrupt_png(tmp_path):
    make_data_dir(tmp_path / "data", corrupt=4)
    with pytest.raises(DataError, match=r"clevr-train.tfrecord-00001-of-00002: record 1: .*image"):
        list(read_tfds_clevr(tmp_path / "data", "train"))
    ds = TFDSClevrDataset(
        tmp_path / "data", "train_all", "set_prediction", cache_dir=tmp_path / "c", progress=False
    )
    with pytest.raises(DataError, match=r"clevr-train.tfrecord-00001-of-00002: .*image"):
        ds[4]


def test_missing_and_bad_data_dirs(tmp_path):
    with pytest.raises(DataError, match="nowhere: no such directory"):
        list(read_tfds_clevr(tmp_path / "nowhere", "train"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: has no clevr/3.1.0"):
        TFDSClevrDataset(tmp_path / "empty", cache_dir=tmp_path)
    builder, _ = make_data_dir(tmp_path / "data")
    with pytest.raises(DataError, match="dataset_info.json: lists no split 'validation'"):
        list(read_tfds_clevr(tmp_path / "data", "validation"))
    with pytest.raises(ConfigError, match="unknown split 'dev'"):
        list(read_tfds_clevr(tmp_path / "data", "dev"))
    (builder / "clevr-train.tfrecord-00001-of-00002").unlink()
    with pytest.raises(DataError, match="clevr-train.tfrecord-00001-of-00002: shard 1 .*missing"):
        list(read_tfds_clevr(tmp_path / "data", "train"))
    (builder / "dataset_info.json").write_text("{not json")
    with pytest.raises(DataError, match="dataset_info.json: is not a readable"):
        list(read_tfds_clevr(tmp_path / "data", "train"))


def test_shard_length_mismatch_and_missing_feature(tmp_path):
    builder, _ = make_data_dir(tmp_path / "data", counts=[[3, 4]])
    info = json.loads((builder / "dataset_info.json").read_text())
    info["splits"][0]["shardLengths"] = ["3"]
    (builder / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match="00000-of-00001: holds 2 records but .* lists 3"):
        list(read_tfds_clevr(tmp_path / "data", "train"))
    rng = np.random.default_rng(0)
    ex = tfds_example(rng, 1, 2, png_bytes(rng)[0])
    del ex["objects/shape"]
    write_tfrecord(builder / "clevr-train.tfrecord-00000-of-00001", [ex])
    with pytest.raises(DataError, match="00000-of-00001: record 0 has no feature 'objects/shape'"):
        list(read_tfds_clevr(tmp_path / "data", "train"))


@needs_ref
def test_reference_dir_copy_with_default_cache(tmp_path):
    data = tmp_path / "tfds"
    shutil.copytree(TFDS_DIR / "clevr", data / "clevr")
    ds = TFDSClevrDataset(data, "validation", progress=False)
    assert len(ds) == 2
    assert list((data / "clevr" / "3.1.0" / ".slotlab-cache").glob("tfds-clevr-*/index.npy"))
