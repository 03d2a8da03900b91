"""The preprocessed data cache: write_cache, CacheDataset, `cache:` specs, `slotlab data cache`."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.cli import main
from slotlab.data import build_dataset, make_loader
from slotlab.data.cache import CacheDataset, dequantize, quantize, read_cache_meta, write_cache
from slotlab.data.procedural import ProceduralClevrDataset
from slotlab.data.sprites import ProceduralSpritesDataset
from slotlab.errors import ConfigError, DataError

QUANT = 1.0 / 255 + 1e-6  # half a uint8 step in [-1, 1] units (plus float rounding)


def sprites(num: int = 24, size: int = 32) -> ProceduralSpritesDataset:
    return ProceduralSpritesDataset("train", num=num, resolution=(size, size))


def no_partials(root: Path) -> bool:
    return not [p for p in root.iterdir() if ".partial-" in p.name]


def test_quantize_error_bound_and_uint8_sources_round_trip_exactly():
    x = torch.linspace(-1, 1, 10001).reshape(1, 1, -1).expand(3, 1, -1)
    back = dequantize(quantize(x).movedim(-1, -3))
    assert (back - x).abs().max() <= QUANT
    assert (back - x).abs().max() > 1e-4  # more than the official fixture tolerance
    pixels = torch.arange(256, dtype=torch.uint8)
    x = ((pixels.float() / 255.0) - 0.5) * 2.0  # to_unit_range's formula
    q = quantize(x.reshape(1, 1, -1).expand(3, 1, -1))
    assert torch.equal(q[0, :, 0], pixels)
    assert quantize(torch.tensor([[[3.0]], [[-7.0]], [[0.0]]])).flatten().tolist() == [255, 0, 128]


def test_sprites_round_trip_in_shards(tmp_path):
    source = sprites(40)
    path = write_cache(
        source,
        tmp_path,
        "train",
        num=30,
        workers=0,
        shard_size=8,
        source="procedural-sprites",
        source_options={"resolution": (32, 32)},
    )
    assert path == tmp_path / "train"
    meta = json.loads((path / "meta.json").read_text())
    assert meta["count"] == 30 and meta["task"] == "object_discovery"
    assert meta["resolution"] == [32, 32] and meta["source"] == "procedural-sprites"
    assert meta["source_options"] == {"resolution": [32, 32]}
    assert [s["count"] for s in meta["shards"]] == [8, 8, 8, 6]
    assert meta["fields"]["images"] == {"shape": [32, 32, 3], "dtype": "uint8"}
    assert meta["fields"]["masks"]["dtype"] == "uint8" and "targets" not in meta["fields"]
    assert meta["slotlab_version"] and meta["options"]["shard_size"] == 8
    assert np.load(path / "images-00003.npy", mmap_mode="r").shape == (6, 32, 32, 3)

    cache = CacheDataset(tmp_path, resolution=32)
    raw = CacheDataset(tmp_path, as_uint8=True)
    assert len(cache) == 30 and cache.has_masks
    for i in (0, 7, 8, 29, -1):
        want, got = source[i % 30], cache[i]
        assert set(got) == {"image", "mask"}
        assert got["image"].dtype == torch.float32 and got["image"].shape == (3, 32, 32)
        assert torch.equal(got["image"], want["image"])  # uint8 pixels: bit-exact
        assert got["mask"].dtype == torch.int64 and torch.equal(got["mask"], want["mask"])
        image = raw[i]["image"]
        assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
        assert torch.equal(dequantize(image), got["image"])
    with pytest.raises(IndexError):
        cache[30]
    assert len(CacheDataset(tmp_path, num=10)) == 10


def same_batch(dataset, items) -> bool:
    """`__getitems__` (the DataLoader's batched read) gives exactly the items one by one."""
    batch = dataset.__getitems__(items)
    return len(batch) == len(items) and all(
        got.keys() == dataset[i].keys()
        and all(torch.equal(got[k], dataset[i][k]) and got[k].dtype == dataset[i][k].dtype
                for k in got)
        for got, i in zip(batch, items)
    )  # fmt: skip


def test_batched_reads_match_single_reads(tmp_path):
    write_cache(sprites(20, 16), tmp_path, "train", workers=0, shard_size=6)
    items = [19, 0, 8, -2, 7, 6, 5, 12]
    assert same_batch(CacheDataset(tmp_path), items)
    assert same_batch(CacheDataset(tmp_path, as_uint8=True), items)
    with pytest.raises(IndexError, match="item 20 out of range"):
        CacheDataset(tmp_path).__getitems__([1, 20])
    with pytest.raises(IndexError):
        CacheDataset(tmp_path, num=10).__getitems__([10])


def test_workers_write_and_read_the_same(tmp_path):
    source = sprites(20, 16)
    write_cache(source, tmp_path, "val", workers=2, shard_size=7)
    cache = build_dataset(f"cache:{tmp_path}", "validation", "object_discovery")
    loader = make_loader(cache, batch_size=20, shuffle=False, num_workers=2)
    batch = next(iter(loader))
    assert torch.equal(batch["image"], torch.stack([source[i]["image"] for i in range(20)]))
    assert torch.equal(batch["mask"], torch.stack([source[i]["mask"] for i in range(20)]))


def write_folder(root: Path, count: int = 5) -> None:
    """PNG images of assorted sizes with 16-bit id masks (item 3 has an id above 255)."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        h, w = 24 + 4 * i, 30
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
            root / "images" / f"im{i}.png"
        )
        ids = np.zeros((h, w), np.uint16)
        ids[: h // 2, : w // 2] = 1 + i
        ids[h // 2 :, w // 3 :] = 300 if i == 3 else 7
        Image.fromarray(ids).save(root / "masks" / f"im{i}.png")


def test_folder_with_masks_widens_to_uint16(tmp_path):
    write_folder(tmp_path / "photos")
    source = build_dataset(f"folder:{tmp_path / 'photos'}", "all", resolution=(16, 20),
                           crop="full")
    assert source.has_masks
    write_cache(source, tmp_path / "c", "train", workers=0, shard_size=2)
    meta = read_cache_meta(tmp_path / "c")
    assert [s["mask_dtype"] for s in meta["shards"]] == ["uint8", "uint16", "uint8"]
    assert np.load(tmp_path / "c/train/masks-00001.npy").dtype == np.uint16
    cache = build_dataset(f"cache:{tmp_path / 'c'}", "train", resolution=[16, 20])
    assert len(cache) == 5
    for i in range(5):
        want, got = source[i], cache[i]
        assert (got["image"] - want["image"]).abs().max() <= QUANT
        assert torch.equal(got["mask"], want["mask"])
    assert int(cache[3]["mask"].max()) == 300


def test_set_prediction_targets_from_procedural(tmp_path):
    source = ProceduralClevrDataset("train", "set_prediction", num=4, resolution=(32, 32))
    write_cache(source, tmp_path, "train", "set_prediction", workers=0, source="procedural",
                source_options={"resolution": [32, 32]})  # fmt: skip
    cache = build_dataset(f"cache:{tmp_path}", "train", "set_prediction", resolution=(32, 32))
    assert read_cache_meta(tmp_path)["fields"]["targets"] == {"shape": [10, 19], "dtype": "float32"}
    for i in range(4):
        want, got = source[i], cache[i]
        assert set(got) == {"image", "mask", "target"}
        assert (got["image"] - want["image"]).abs().max() <= QUANT
        assert torch.equal(got["mask"], want["mask"])
        assert got["target"].dtype == torch.float32 and torch.equal(got["target"], want["target"])
    assert same_batch(cache, [3, 1, 0])
    with pytest.raises(DataError, match="task set_prediction, not object_discovery"):
        build_dataset(f"cache:{tmp_path}", "train", "object_discovery")


def test_bad_caches_and_options_give_clear_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        CacheDataset(tmp_path / "nowhere")
    write_cache(sprites(6, 16), tmp_path, "train", workers=0, shard_size=4,
                source_options={"resolution": [16, 16]})  # fmt: skip
    with pytest.raises(DataError, match=r"no split 'test' \(splits there: train\)"):
        CacheDataset(tmp_path, "test")
    with pytest.raises(DataError, match="has no set-prediction targets"):
        CacheDataset(tmp_path, task="set_prediction")
    with pytest.raises(DataError, match="holds 16x16 images but resolution 64x64"):
        build_dataset(f"cache:{tmp_path}", resolution=64)
    with pytest.raises(ConfigError, match="cannot apply the dataset option seed=3"):
        build_dataset(f"cache:{tmp_path}", seed=3)
    with pytest.raises(DataError, match="only 6"):
        CacheDataset(tmp_path, num=7)
    with pytest.raises(DataError, match="already exists"):
        write_cache(sprites(6, 16), tmp_path, "train", workers=0)
    with pytest.raises(DataError, match="cannot be cached for task set_prediction"):
        write_cache(sprites(6, 16), tmp_path, "val", "set_prediction", workers=0)
    assert not (tmp_path / "val").exists() and no_partials(tmp_path)

    shard = tmp_path / "train" / "images-00001.npy"
    good = shard.read_bytes()
    np.save(shard, np.zeros((2, 16, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"images-00001.npy holds uint8 \[2, 16, 8, 3\]"):
        CacheDataset(tmp_path)
    shard.write_bytes(good[:-10])
    with pytest.raises(DataError, match=r"images-00001.npy is truncated"):
        CacheDataset(tmp_path)
    shard.write_bytes(good[:40])
    with pytest.raises(DataError, match=r"images-00001.npy is truncated"):
        CacheDataset(tmp_path)
    shard.unlink()
    with pytest.raises(DataError, match=r"images-00001.npy is missing"):
        CacheDataset(tmp_path)
    shard.write_bytes(good)
    CacheDataset(tmp_path)

    meta = tmp_path / "train" / "meta.json"
    content = json.loads(meta.read_text())
    meta.write_text(json.dumps({**content, "count": 5}))
    with pytest.raises(DataError, match="meta.json is damaged"):
        CacheDataset(tmp_path)
    meta.write_text(json.dumps({**content, "version": 99}))
    with pytest.raises(DataError, match="cache format version 99"):
        CacheDataset(tmp_path)
    meta.write_text("{not json")
    with pytest.raises(DataError, match="meta.json is not readable JSON"):
        CacheDataset(tmp_path)
    meta.unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        build_dataset(f"cache:{tmp_path}")


class FailingSprites(ProceduralSpritesDataset):
    def __init__(self, fail_at: int, error: Exception, **kwargs) -> None:
        super().__init__(**kwargs)
        self.fail_at, self.error = fail_at, error

    def __getitem__(self, item: int):
        if item == self.fail_at:
            raise self.error
        return super().__getitem__(item)


@pytest.mark.parametrize("workers", [0, 2])
def test_a_failed_write_leaves_no_cache_and_keeps_the_old_one(tmp_path, workers):
    bad = FailingSprites(13, RuntimeError("boom"), num=30, resolution=(16, 16))
    with pytest.raises(RuntimeError, match="boom"):
        write_cache(bad, tmp_path, "train", workers=workers, shard_size=4)
    assert not (tmp_path / "train").exists() and no_partials(tmp_path)
    with pytest.raises(DataError, match="no split 'train'"):
        CacheDataset(tmp_path)

    write_cache(sprites(5, 16), tmp_path, "train", workers=0)
    bad = FailingSprites(9, DataError("image 9 is corrupt"), num=30, resolution=(16, 16))
    with pytest.raises(DataError, match="^image 9 is corrupt$"):  # not wrapped by the loader
        write_cache(bad, tmp_path, "train", workers=workers, shard_size=4, overwrite=True)
    assert len(CacheDataset(tmp_path)) == 5 and no_partials(tmp_path)
    write_cache(sprites(7, 16), tmp_path, "train", workers=0, overwrite=True)
    assert len(CacheDataset(tmp_path)) == 7 and sorted(os.listdir(tmp_path)) == ["train"]


KILLED_WRITER = """
import os, signal, sys
from slotlab.data.cache import write_cache
from slotlab.data.sprites import ProceduralSpritesDataset

class Killed(ProceduralSpritesDataset):
    def __getitem__(self, item):
        if item == 18:
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(item)

write_cache(Killed(num=24, resolution=(16, 16)), sys.argv[1], "train", workers=0, shard_size=4)
"""


def test_a_killed_write_never_looks_complete(tmp_path):
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path)], timeout=60)
    assert proc.returncode == -signal.SIGKILL
    partial = [p for p in tmp_path.iterdir() if ".partial-" in p.name]
    assert len(partial) == 1 and (partial[0] / "images-00003.npy").exists()
    assert not (tmp_path / "train").exists()
    with pytest.raises(DataError, match="no split 'train' \\(splits there: none\\)"):
        build_dataset(f"cache:{tmp_path}")
    write_cache(sprites(4, 16), tmp_path, "train", workers=0)  # removes the dead writer's files
    assert sorted(os.listdir(tmp_path)) == ["train"]


def test_cli_cache_command(tmp_path, capsys):
    out = tmp_path / "cache"
    args = ["data", "cache", "procedural-sprites", "--out", str(out), "--num", "12"]
    assert main([*args, "--resolution", "24", "--workers", "0", "--shard-size", "5"]) == 0
    printed = capsys.readouterr().out
    assert "cached 12 24x24 images" in printed and "images/s" in printed
    assert main([*args, "--split", "val", "--resolution", "24x24", "--workers", "0"]) == 0
    assert sorted(os.listdir(out)) == ["train", "val"]
    meta = read_cache_meta(out, "val")
    assert meta["source"] == "procedural-sprites" and meta["source_options"] == {
        "resolution": [24, 24]
    }
    assert len(build_dataset(f"cache:{out}", "val", resolution=[24, 24])) == 12
    assert main([*args, "--resolution", "24", "--workers", "0"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--task", "set-prediction", "--split", "test"]) == 2
    assert not (out / "test").exists()


def test_cli_cache_asks_generated_data_for_num_items(tmp_path, monkeypatch):
    """A generated dataset is as long as its `num` option (default 10,000): `--num 20000` must
    build 20,000 items, not fail for lack of them (spied: the kwargs build_dataset gets)."""
    import slotlab.data.build as build

    seen = []
    real = build.build_dataset

    def spy(spec, split="train", task="object_discovery", **options):
        seen.append(options)
        return real(spec, split, task, **options)

    monkeypatch.setattr(build, "build_dataset", spy)
    out = tmp_path / "cache"
    assert main(["data", "cache", "procedural-sprites", "--out", str(out), "--num", "6",
                 "--resolution", "16", "--workers", "0"]) == 0
    assert seen[0] == {"resolution": (16, 16), "num": 6}
    assert read_cache_meta(out, "train")["source_options"] == {"resolution": [16, 16]}
