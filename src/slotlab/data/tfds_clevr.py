"""TFDS-prepared CLEVR (`clevr/3.1.0`), read without TensorFlow or tensorflow-datasets.

`tfds.builder("clevr").download_and_prepare()` leaves in its data_dir::

    clevr/3.1.0/dataset_info.json                 splits, shardLengths, filepathTemplate
    clevr/3.1.0/clevr-{split}.tfrecord-{i:05d}-of-{n:05d}   plain (uncompressed) TFRecords

`read_tfds_clevr(data_dir, split)` yields, in `as_dataset(split, shuffle_files=False)` order
(shards in index order, records in file order), dicts keyed like TFDS's nested features joined
with dots:

    image                      uint8 [H, W, 3]   (PNG decoded with Pillow, alpha dropped)
    file_name                  0-d unicode array
    objects.color              int64 [n]  gray blue brown yellow red green purple cyan (0..7)
    objects.material           int64 [n]  rubber metal
    objects.shape              int64 [n]  cube sphere cylinder
    objects.size               int64 [n]  small large
    objects.rotation           float32 [n]
    objects.3d_coords          float32 [n, 3]
    objects.pixel_coords       float32 [n, 3]
    question_answer.question   unicode [q]
    question_answer.answer     unicode [q]  ("" on the test split)

`TFDSClevrDataset` gives the common training sample (`slotlab.data.preprocess`) with the
official Slot Attention preprocessing and filters.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from slotlab.data.options import CropOption, normalize_split, parse_crop, parse_resolution
from slotlab.data.preprocess import (
    OFFICIAL_MAX_OBJECTS,
    OFFICIAL_RESOLUTION,
    clevr_preprocess,
    clevr_target,
    default_crop,
)
from slotlab.errors import DataError, SlotlabError
from slotlab.io import META_FILE, ShardWriter, cache_dir_in
from slotlab.tasks import normalize_task
from slotlab.tf_formats.example import BytesList, parse_example
from slotlab.tf_formats.tfrecord import index_records, iter_records
from slotlab.tf_formats.tfrecord import read_record_at as _read_record_at

__all__ = [
    "CLEVR_VERSION",
    "TFDSClevrDataset",
    "clevr_builder_dir",
    "decode_tfds_clevr_example",
    "read_tfds_clevr",
    "tfds_clevr_shards",
]

CLEVR_VERSION = "3.1.0"
TFDS_SPLITS = ("train", "validation", "test")
DATASET_SPLITS = ("train", "train_eval", "train_all", "validation", "test")
_DEFAULT_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"
_LABELS = ("color", "material", "shape", "size")
_INDEX_VERSION = 1


def clevr_builder_dir(data_dir: str | os.PathLike[str]) -> Path:
    """The `clevr/3.1.0` directory inside a TFDS data_dir (or data_dir itself if it is one)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: no such directory (expected a TFDS data_dir)")
    for candidate in (data_dir / "clevr" / CLEVR_VERSION, data_dir / CLEVR_VERSION, data_dir):
        if (candidate / "dataset_info.json").is_file():
            return candidate
    versions = sorted(p.name for p in (data_dir / "clevr").glob("*") if p.is_dir())
    found = f" (found versions: {', '.join(versions)})" if versions else ""
    raise DataError(
        f"{data_dir}: has no clevr/{CLEVR_VERSION}/dataset_info.json{found}; prepare it with "
        "tfds.builder('clevr').download_and_prepare()"
    )


def _split_name(split: str, tfds_names: tuple[str, ...] = TFDS_SPLITS) -> str:
    """`split` as TFDS names it ("val" and "validation" are TFDS's "validation")."""
    name = normalize_split(split, tuple("val" if n == "validation" else n for n in tfds_names))
    return "validation" if name == "val" else name


def tfds_clevr_shards(data_dir: str | os.PathLike[str], split: str) -> list[tuple[Path, int]]:
    """[(shard path, number of examples)] of a split, in shard index order."""
    builder = clevr_builder_dir(data_dir)
    split = _split_name(split)
    info_path = builder / "dataset_info.json"
    try:
        info = json.loads(info_path.read_text(encoding="utf-8"))
        splits = {s["name"]: s for s in info["splits"]}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{info_path}: is not a readable TFDS dataset_info.json ({exc})") from None
    if split not in splits:
        raise DataError(f"{info_path}: lists no split {split!r} (it has {', '.join(splits)})")
    entry = splits[split]
    try:
        lengths = [int(n) for n in entry["shardLengths"]]
    except (KeyError, TypeError, ValueError):
        raise DataError(f"{info_path}: split {split!r} has no valid shardLengths") from None
    template = entry.get("filepathTemplate") or _DEFAULT_TEMPLATE
    fmt = info.get("fileFormat") or "tfrecord"
    name = info.get("name") or "clevr"
    shards = []
    for i, count in enumerate(lengths):
        file_name = (
            template.replace("{DATASET}", name)
            .replace("{SPLIT}", split)
            .replace("{FILEFORMAT}", fmt)
            .replace("{SHARD_X_OF_Y}", f"{i:05d}-of-{len(lengths):05d}")
        )
        path = builder / file_name
        if not path.is_file():
            raise DataError(f"{path}: shard {i} of split {split!r} is missing")
        shards.append((path, count))
    return shards


def _texts(value: Any, where: str, key: str) -> np.ndarray:
    if not isinstance(value, BytesList):
        raise DataError(f"{where}: feature {key!r} is not a bytes_list")
    try:
        return np.array([v.decode("utf-8") for v in value], dtype=str)
    except UnicodeDecodeError:
        raise DataError(f"{where}: feature {key!r} is not valid UTF-8 text") from None


def _numbers(value: Any, where: str, key: str, dtype: type) -> np.ndarray:
    if not (isinstance(value, np.ndarray) and value.dtype == dtype):
        kind = "an int64_list" if dtype is np.int64 else "a float_list"
        raise DataError(f"{where}: feature {key!r} is not {kind}")
    return value


def decode_png(data: bytes, where: str) -> np.ndarray:
    """Encoded image bytes -> uint8 [H, W, 3] like TF `decode_image(channels=3)`."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            rgb = im if im.mode == "RGB" else im.convert("RGB")  # RGBA: alpha dropped
            return np.array(rgb, dtype=np.uint8)
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise DataError(f"{where}: feature 'image' is not a decodable image ({exc})") from None


def decode_tfds_clevr_example(
    payload: bytes, where: str = "record", decode_image: bool = True
) -> dict[str, np.ndarray]:
    """Decode one serialized TFDS CLEVR example into the dot-keyed dict (module docstring).

    With `decode_image=False` the `image` entry is left out (the PNG is not decoded).
    """
    ex = parse_example(payload, where)
    keys = ["image", "file_name", "question_answer/question", "question_answer/answer"]
    keys += [f"objects/{k}" for k in (*_LABELS, "rotation", "3d_coords", "pixel_coords")]
    for key in keys:
        if key not in ex:
            raise DataError(f"{where} has no feature {key!r}, which TFDS CLEVR requires")
    out: dict[str, np.ndarray] = {}
    if decode_image:
        image = ex["image"]
        if not isinstance(image, BytesList) or len(image) != 1:
            raise DataError(f"{where}: feature 'image' must be one encoded image")
        out["image"] = decode_png(image[0], where)
    names = _texts(ex["file_name"], where, "file_name")
    if names.shape != (1,):
        raise DataError(f"{where}: feature 'file_name' has {names.size} values, expected 1")
    out["file_name"] = names.reshape(())
    n = len(_numbers(ex["objects/color"], where, "objects/color", np.int64))
    for key in _LABELS:
        value = _numbers(ex[f"objects/{key}"], where, f"objects/{key}", np.int64)
        if value.size != n:
            raise DataError(
                f"{where}: feature 'objects/{key}' has {value.size} values, expected {n}"
            )
        out[f"objects.{key}"] = value
    for key, per_object in (("rotation", 1), ("3d_coords", 3), ("pixel_coords", 3)):
        value = _numbers(ex[f"objects/{key}"], where, f"objects/{key}", np.float32)
        if value.size != n * per_object:
            raise DataError(
                f"{where}: feature 'objects/{key}' has {value.size} values, expected "
                f"{n * per_object} for {n} objects"
            )
        out[f"objects.{key}"] = value if per_object == 1 else value.reshape(n, per_object)
    for key in ("question", "answer"):
        out[f"question_answer.{key}"] = _texts(
            ex[f"question_answer/{key}"], where, f"question_answer/{key}"
        )
    if out["question_answer.question"].size != out["question_answer.answer"].size:
        raise DataError(f"{where}: has a different number of questions and answers")
    return out


def read_tfds_clevr(
    data_dir: str | os.PathLike[str], split: str, *, verify_crc: bool = True
) -> Iterator[dict[str, np.ndarray]]:
    """Yield every example of a TFDS CLEVR split (train / validation / test) in TFDS order."""
    for shard, expected in tfds_clevr_shards(data_dir, split):
        count = 0
        for payload in iter_records(shard, verify_crc=verify_crc):
            yield decode_tfds_clevr_example(payload, f"{shard}: record {count}")
            count += 1
        if count != expected:
            raise DataError(
                f"{shard}: holds {count} records but dataset_info.json lists {expected}"
            )


class TFDSClevrDataset(Dataset):
    """Map-style dataset over TFDS-prepared CLEVR with the official Slot Attention pipeline.

    Each item (see `slotlab.data.preprocess`):
        image   float32 [3, *resolution] in [-1, 1] via `clevr_preprocess` (object discovery:
                crop rows 29:221, cols 64:256 first; set prediction: no crop)
        target  float32 [max_objects, 19] via `clevr_target` (task "set_prediction" only)
    TFDS CLEVR has no masks, so there is no `mask` entry.

    Splits as in the official code: "train" = TFDS train without its first `num_eval_examples`
    (512) examples, "train_eval" = those first 512, "train_all" = all of TFDS train,
    "validation" (or "val") and "test" (no objects: empty targets). Order is TFDS's
    `shuffle_files=False` order. Then the official filter keeps examples with at most
    `max_objects` objects (default 6 for object discovery, 10 for set prediction).

    Shards are plain TFRecords, so items are read at random by file offset. The offsets and
    object counts are found by one pass over the split's shards and saved as a small index in
    `cache_dir` (default: `.slotlab-cache` in the builder directory, else ~/.cache/slotlab).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        split: str = "train",
        task: str = "object_discovery",
        resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
        max_objects: int | None = None,
        *,
        crop: CropOption = "official",
        num_eval_examples: int = 512,
        cache_dir: str | os.PathLike[str] | None = None,
        progress: bool = True,
        verify_crc: bool = True,
    ) -> None:
        self.task = normalize_task(task)
        self.resolution = parse_resolution(resolution)
        self.max_objects = OFFICIAL_MAX_OBJECTS[self.task] if max_objects is None else max_objects
        self.crop = parse_crop(crop, {"official": default_crop(self.task)})
        self.verify_crc = verify_crc
        self.split = _split_name(split, DATASET_SPLITS)
        base = "train" if self.split in ("train", "train_eval", "train_all") else self.split
        self.builder_dir = clevr_builder_dir(data_dir)
        self.shards = tfds_clevr_shards(data_dir, base)
        cache_root = Path(cache_dir) if cache_dir is not None else cache_dir_in(self.builder_dir)
        index = self._load_index(cache_root, base, progress)  # [N, 4]: shard, offset, len, n_obj
        if self.split == "train":
            index = index[num_eval_examples:]
        elif self.split == "train_eval":
            index = index[:num_eval_examples]
        if len(index) == 0:
            raise DataError(
                f"{self.builder_dir}: split {self.split!r} is empty (TFDS {base!r} has "
                f"{sum(n for _, n in self.shards)} examples; 'train' skips the first "
                f"{num_eval_examples})"
            )
        kept = index[index[:, 3] <= self.max_objects]
        if len(kept) == 0:
            raise DataError(
                f"{self.builder_dir}: no example of split {self.split!r} has at most "
                f"{self.max_objects} objects"
            )
        self.index = kept
        self.num_objects = kept[:, 3].copy()
        self._files: dict[int, BinaryIO] = {}
        self._pid = os.getpid()

    def _load_index(self, cache_root: Path, base: str, progress: bool) -> np.ndarray:
        ident = [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns] for p, _ in self.shards]
        digest = hashlib.sha256(json.dumps([_INDEX_VERSION, ident]).encode()).hexdigest()[:16]
        folder = cache_root / f"tfds-clevr-{base}-{digest}"
        if (folder / META_FILE).is_file():
            try:
                index = np.load(folder / "index.npy")
                if index.ndim == 2 and index.shape[1] == 4:
                    return index
            except (OSError, ValueError):
                pass  # rebuild below
        rows = []
        total = sum(n for _, n in self.shards)
        with tqdm(
            total=total, desc=f"indexing clevr {base}", unit="ex", disable=not progress
        ) as bar:
            for shard_id, (shard, expected) in enumerate(self.shards):
                offsets = index_records(shard)
                if len(offsets) != expected:
                    raise DataError(
                        f"{shard}: holds {len(offsets)} records but dataset_info.json lists "
                        f"{expected}"
                    )
                with open(shard, "rb") as f:
                    for i, (offset, length) in enumerate(offsets):
                        where = f"{shard}: record {i}"
                        payload = _read_record_at(
                            f,
                            int(offset),
                            int(length),
                            path=shard,
                            index=i,
                            verify_crc=self.verify_crc,
                        )
                        ex = decode_tfds_clevr_example(payload, where, decode_image=False)
                        rows.append((shard_id, offset, length, len(ex["objects.color"])))
                        bar.update(1)
        index = np.asarray(rows, dtype=np.int64).reshape(-1, 4)
        meta = {"version": _INDEX_VERSION, "split": base, "shards": ident, "examples": len(index)}
        try:
            with ShardWriter(folder) as writer:
                writer.save("index.npy", index)
                writer.commit(meta, if_exists="replace")
        except (OSError, SlotlabError):
            pass  # an unwritable cache only costs a rescan next time
        return index

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_files"] = {}
        return state

    def _file(self, shard_id: int) -> BinaryIO:
        if self._pid != os.getpid():  # forked DataLoader worker: do not share file offsets
            self._files = {}
            self._pid = os.getpid()
        f = self._files.get(shard_id)
        if f is None:
            path = self.shards[shard_id][0]
            try:
                f = open(path, "rb")
            except OSError as exc:
                raise DataError(f"{path}: cannot be opened ({exc.strerror or exc})") from None
            self._files[shard_id] = f
        return f

    def example(self, index: int) -> dict[str, np.ndarray]:
        """The decoded TFDS example of item `index` (dot-keyed dict, see `read_tfds_clevr`)."""
        shard_id, offset, length, _ = (int(v) for v in self.index[index])
        path = self.shards[shard_id][0]
        payload = _read_record_at(
            self._file(shard_id),
            offset,
            length,
            path=path,
            index=f"at byte {offset}",
            verify_crc=self.verify_crc,
        )
        return decode_tfds_clevr_example(payload, f"{path}: record at byte {offset}")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        ex = self.example(index)
        try:
            image = clevr_preprocess(ex["image"], self.task, self.resolution, self.crop)
        except ValueError as exc:
            shard_id, offset = int(self.index[index, 0]), int(self.index[index, 1])
            raise DataError(
                f"{self.shards[shard_id][0]}: record at byte {offset}: its "
                f"{ex['image'].shape[0]}x{ex['image'].shape[1]} image cannot be preprocessed "
                f"({exc})"
            ) from None
        sample = {"image": image}
        if self.task == "set_prediction":
            objects = [
                {
                    "3d_coords": ex["objects.3d_coords"][i],
                    "size": int(ex["objects.size"][i]),
                    "material": int(ex["objects.material"][i]),
                    "shape": int(ex["objects.shape"][i]),
                    "color": int(ex["objects.color"][i]),
                }
                for i in range(len(ex["objects.color"]))
            ]
            sample["target"] = clevr_target(objects, self.max_objects)
        return sample

    def __del__(self) -> None:
        for f in getattr(self, "_files", {}).values():
            try:
                f.close()
            except OSError:
                pass
