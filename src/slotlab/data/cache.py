"""A preprocessed, memory-mapped cache of any slotlab dataset, so training never waits on decoding.

    slotlab data cache procedural --out ~/caches/clevr --split train --num 70000
    dataset = build_dataset("cache:~/caches/clevr", "train", "object_discovery")

`write_cache(dataset, out_dir, split, task)` runs a map-style dataset once (in DataLoader worker
processes) and stores its samples, already preprocessed, as shards of plain `.npy` files:

    OUT_DIR/<split>/meta.json            what was cached and how (see `write_cache`)
    OUT_DIR/<split>/images-00000.npy     uint8 [n, H, W, 3]: round((x + 1) * 127.5), x in [-1, 1]
    OUT_DIR/<split>/masks-00000.npy      uint8 [n, H, W] ids (uint16 if an id > 255), if any
    OUT_DIR/<split>/targets-00000.npy    float32 [n, K, 19], if the source has targets

Several splits can live under one OUT_DIR. `CacheDataset` memory-maps the shards (read-only),
so opening a cache costs nothing and the page cache is shared by all loader workers.

Precision: images are quantised to 8 bits. For x in [-1, 1] the stored value decodes to within
half a uint8 step, at most 1/255 ~= 3.9e-3 in [-1, 1] units (1/510 in [0, 1] units). A source
whose images are uint8 pixels shown at their own resolution (procedural sprites, a folder of
PNGs not resized) round-trips bit-exactly; a resized or rendered float image does not. That
error is far above the 1e-4 tolerance of the official fixtures: the cache is for training
throughput, not for bit-exact evaluation against the official pipeline (evaluate on the source
spec for that). Masks and targets are stored exactly.

Writes are atomic (`slotlab.io.ShardWriter`): everything goes to a hidden
`.<split>.partial-<pid>-*` directory beside the final one, which is fsynced and renamed into
place only after `meta.json` is written, so a write
that fails or is killed never leaves a cache that looks complete (a killed write's partial
directory is removed by the next `write_cache` into the same OUT_DIR).
"""

from __future__ import annotations

import bisect
import json
import os
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from slotlab.data.options import normalize_split, parse_resolution
from slotlab.data.preprocess import TARGET_DIM, Sample, to_unit_range
from slotlab.errors import ConfigError, DataError, SlotlabError
from slotlab.io import META_FILE, NpyRows, ShardWriter
from slotlab.tasks import normalize_task

__all__ = [
    "CACHE_FORMAT",
    "CACHE_VERSION",
    "CacheDataset",
    "dequantize",
    "quantize",
    "read_cache_meta",
    "write_cache",
]

CACHE_FORMAT = "slotlab-cache"
CACHE_VERSION = 1
DEFAULT_SHARD_SIZE = 4096  # items per shard: ~200 MB of images at 128x128
WRITE_BATCH = 16  # items per worker round trip while writing
QUANTIZATION = "uint8 = round((clamp(x, -1, 1) + 1) * 127.5); x = (uint8 / 255 - 0.5) * 2"
SAMPLE_KEYS = ("image", "mask", "target")
MAX_MASK_ID = np.iinfo(np.uint16).max


# --------------------------------------------------------------------------------------------
# Quantisation
# --------------------------------------------------------------------------------------------


def quantize(image: torch.Tensor) -> torch.Tensor:
    """float [..., 3, H, W] in [-1, 1] -> uint8 [..., H, W, 3]: round((clamp(x) + 1) * 127.5)."""
    q = ((image.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
    return q.movedim(-3, -1).contiguous()


def dequantize(image: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 in [-1, 1], with the formula `to_unit_range` uses.

    Works on any device, so a training loop can move the uint8 batch of
    `CacheDataset(..., as_uint8=True)` to the GPU first and normalise it there; the result is
    bit-identical to the float samples `CacheDataset` returns by default.
    """
    return (image.to(torch.float32) / 255.0 - 0.5) * 2.0


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


class _Failure:
    """An error raised by the source dataset in a loader worker, carried back to the writer."""

    def __init__(self, error: SlotlabError) -> None:
        self.error = error


class _Encoder(Dataset):
    """The first `count` items of `source`, encoded for the cache inside the loader workers.

    Items: a dict with `image` uint8 [H, W, 3], `mask` uint16 [H, W], `target` float32 [K, 19]
    (the keys the source sample has), or a `_Failure`.
    """

    def __init__(self, source: Dataset, count: int) -> None:
        self.source = source
        self.count = count

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, index: int) -> dict[str, np.ndarray] | _Failure:
        try:
            return self._encode(index, self.source[index])
        except SlotlabError as exc:  # re-raised as is by the writer, not wrapped by torch
            return _Failure(exc)

    def _encode(self, index: int, sample: Any) -> dict[str, np.ndarray]:
        where = f"item {index} of the source dataset"
        if not isinstance(sample, Mapping) or "image" not in sample:
            raise DataError(f"{where} is not a sample dict with an 'image' (got {type(sample)})")
        unknown = sorted(set(sample) - set(SAMPLE_KEYS))
        if unknown:
            raise DataError(f"{where} has keys {unknown} that a cache cannot store")
        out: dict[str, np.ndarray] = {}
        image = sample["image"]
        if (
            not isinstance(image, torch.Tensor)
            or not image.is_floating_point()
            or image.ndim != 3
            or image.shape[0] != 3
        ):
            raise DataError(f"{where}: image must be a float tensor [3, H, W], got {_desc(image)}")
        if not bool(torch.isfinite(image).all()):
            raise DataError(f"{where}: image holds NaN or infinite values")
        out["image"] = quantize(image).numpy()
        if "mask" in sample:
            mask = sample["mask"]
            if (
                not isinstance(mask, torch.Tensor)
                or mask.is_floating_point()
                or mask.is_complex()
                or mask.ndim != 2
            ):
                raise DataError(
                    f"{where}: mask must be an integer tensor [H, W], got {_desc(mask)}"
                )
            low, high = int(mask.min()), int(mask.max())
            if low < 0 or high > MAX_MASK_ID:
                raise DataError(
                    f"{where}: mask ids must lie in 0..{MAX_MASK_ID}, got {low}..{high}"
                )
            out["mask"] = mask.numpy().astype(np.uint16)
        if "target" in sample:
            target = sample["target"]
            if (
                not isinstance(target, torch.Tensor)
                or target.ndim != 2
                or target.shape[1] != TARGET_DIM
            ):
                raise DataError(f"{where}: target must be a tensor [K, 19], got {_desc(target)}")
            out["target"] = target.to(torch.float32).numpy()
        return out


def _desc(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{value.dtype} {list(value.shape)}"
    return type(value).__name__


def _as_list(batch: list[Any]) -> list[Any]:
    """Collate function that keeps the items of a batch as they are."""
    return batch


def _one_thread(worker_id: int) -> None:
    torch.set_num_threads(1)


class _Layout:
    """Shapes fixed by the first item; every later item must match them."""

    def __init__(self, item: Mapping[str, np.ndarray]) -> None:
        self.image = tuple(item["image"].shape)
        self.mask = tuple(item["mask"].shape) if "mask" in item else None
        self.target = tuple(item["target"].shape) if "target" in item else None

    def check(self, index: int, item: Mapping[str, np.ndarray]) -> None:
        where = f"item {index} of the source dataset"
        if tuple(item["image"].shape) != self.image:
            raise DataError(
                f"{where} has a {_hw(item['image'].shape)} image but item 0 has "
                f"{_hw(self.image)}; a cache needs one resolution (pass resolution=)"
            )
        for key, shape in (("mask", self.mask), ("target", self.target)):
            if (key in item) != (shape is not None):
                have = "has" if key in item else "has no"
                first = "has none" if shape is None else "has one"
                raise DataError(f"{where} {have} {key!r} but item 0 {first}")
            if shape is not None and tuple(item[key].shape) != shape:
                raise DataError(
                    f"{where} has a {key} of shape {list(item[key].shape)} but item 0 has "
                    f"{list(shape)}"
                )


def _hw(shape: Sequence[int]) -> str:
    return f"{shape[0]}x{shape[1]}"


class _Shard:
    """One shard being written: its .npy files of a cache, filled item by item."""

    def __init__(self, writer: ShardWriter, index: int, rows: int, layout: _Layout) -> None:
        self.rows = rows
        self.filled = 0
        self.names = {"images": f"images-{index:05d}.npy"}
        self.images = writer.rows(self.names["images"], layout.image, np.uint8)
        self.masks: NpyRows | None = None
        if layout.mask is not None:
            self.names["masks"] = f"masks-{index:05d}.npy"
            self.masks = writer.rows(self.names["masks"], layout.mask, np.uint8)
        self.targets: NpyRows | None = None
        if layout.target is not None:
            self.names["targets"] = f"targets-{index:05d}.npy"
            self.targets = writer.rows(self.names["targets"], layout.target, np.float32)

    def put(self, item: Mapping[str, np.ndarray]) -> None:
        self.images.append(item["image"])
        if self.masks is not None:
            mask = item["mask"]
            if self.masks.dtype == np.uint8 and int(mask.max()) > 255:
                self.masks.widen(np.uint16)  # an id above 255 arrived: keep the rows so far
            self.masks.append(mask)
        if self.targets is not None:
            self.targets.append(item["target"])
        self.filled += 1

    def close(self) -> dict[str, Any]:
        """Finish the files; return this shard's entry of meta.json."""
        for rows in (self.images, self.masks, self.targets):
            if rows is not None:
                rows.close()
        entry: dict[str, Any] = {"count": self.filled, **self.names}
        if self.masks is not None:
            entry["mask_dtype"] = self.masks.dtype.name
        return entry


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, paths -> strings, recursively (what JSON keeps of an option)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return repr(value)


def write_cache(
    dataset: Dataset,
    out_dir: str | os.PathLike[str],
    split: str = "train",
    task: str = "object_discovery",
    num: int | None = None,
    workers: int | None = None,
    shard_size: int = DEFAULT_SHARD_SIZE,
    *,
    source: str | None = None,
    source_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> Path:
    """Write the first `num` items of `dataset` as the cache `out_dir/<split>/`; return that path.

    Args:
        dataset: any map-style dataset of slotlab `Sample` dicts (image float [3, H, W] in
            [-1, 1], optional integer mask [H, W] with ids 0..65535, optional target [K, 19]),
            all of one resolution.
        out_dir: the cache root; created if missing. Other splits in it are left alone.
        split: the split name, a directory under `out_dir` ("validation" is stored as "val").
        task: "object_discovery" or "set_prediction"; set prediction needs targets.
        num: how many items, from item 0 (None = all of `len(dataset)`).
        workers: DataLoader worker processes running the source (None = 0 below 256 items,
            else min(2, usable cores)).
        shard_size: items per shard file.
        source: the spec the dataset was built from, recorded in meta.json (None = its repr).
        source_options: the options it was built with (e.g. resolution), recorded in meta.json;
            `CacheDataset` accepts exactly these again (with the same values).
        overwrite: replace an existing `out_dir/<split>` (else that is an error).
        progress: show a tqdm bar (None = when stderr is a terminal).
    Returns:
        the split directory, holding meta.json (format, version, slotlab version, creation time,
        source, source_options, split, task, count, resolution, shapes, dtypes, quantisation,
        shards, creation options) and the shard files.
    Raises:
        ConfigError for bad arguments; DataError for unusable samples, an existing cache
        (without `overwrite`) or a failed write. Whatever goes wrong (an exception, Ctrl-C, a
        killed process), no complete-looking cache is left at `out_dir/<split>`.
    """
    split = normalize_split(split, None)
    task = normalize_task(task)
    count, workers = _check_write_options(dataset, num, workers, shard_size)
    final, writer = _start_writer(Path(out_dir).expanduser(), split, overwrite)
    started = time.time()
    show = sys.stderr.isatty() if progress is None else progress
    batches = iter(_encoding_loader(dataset, count, workers))
    try:
        with tqdm(total=count, desc=f"caching {split}", unit="img", disable=not show) as bar:
            layout, shards = _write_shards(
                batches, writer, count, shard_size, task, source or dataset, bar
            )
        meta = _cache_meta(
            layout,
            shards,
            source=source if source is not None else repr(dataset),
            source_options=source_options,
            split=split,
            task=task,
            count=count,
            options={"num": num, "workers": workers, "shard_size": shard_size},
            started=started,
        )
        writer.commit(meta, if_exists="replace" if overwrite else "error")
    except BaseException as exc:
        _stop_workers(batches)
        writer.abort()
        if isinstance(exc, OSError):
            raise DataError(f"writing the cache {final} failed ({exc.strerror or exc})") from None
        raise
    return final


def _check_write_options(
    dataset: Dataset, num: int | None, workers: int | None, shard_size: int
) -> tuple[int, int]:
    """The checked item count and worker count of `write_cache`; ConfigError for a bad one."""
    from slotlab.data.build import default_num_workers

    try:
        available = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ConfigError("write_cache needs a map-style dataset with a length") from None
    count = available if num is None else num
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"num must be a positive integer, got {num!r}")
    if count > available:
        raise ConfigError(f"num={count} is more than the {available} items of the dataset")
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ConfigError(f"shard_size must be a positive integer, got {shard_size!r}")
    workers = default_num_workers(count) if workers is None else workers
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise ConfigError(f"workers must be a non-negative integer, got {workers!r}")
    return count, workers


def _start_writer(out_dir: Path, split: str, overwrite: bool) -> tuple[Path, ShardWriter]:
    """The final directory `out_dir/<split>` and the writer of its hidden partial directory."""
    final = out_dir / split
    try:
        if final.exists() and not overwrite:
            raise DataError(
                f"cache {final} already exists; pass overwrite=True (--overwrite on the command "
                "line) to replace it"
            )
        return final, ShardWriter(final)
    except OSError as exc:
        raise DataError(f"cannot write a cache in {out_dir} ({exc.strerror or exc})") from None


def _encoding_loader(dataset: Dataset, count: int, workers: int) -> DataLoader:
    """Batches (lists) of the first `count` items of `dataset`, encoded in `workers` processes."""
    return DataLoader(
        _Encoder(dataset, count),
        batch_size=WRITE_BATCH,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_list,
        worker_init_fn=_one_thread if workers > 0 else None,
        prefetch_factor=4 if workers > 0 else None,
    )


def _write_shards(
    batches: Iterator[list[Any]],
    writer: ShardWriter,
    count: int,
    shard_size: int,
    task: str,
    source: Any,
    bar: tqdm,
) -> tuple[_Layout, list[dict[str, Any]]]:
    """Write the encoded items as shards of `shard_size`; return their layout and meta entries.

    `source` (the spec, or the dataset) is only named in the error for a set-prediction
    cache of a source without targets.
    """
    shards: list[dict[str, Any]] = []
    shard: _Shard | None = None
    layout: _Layout | None = None
    index = 0
    for batch in batches:
        for item in batch:
            if isinstance(item, _Failure):
                raise item.error
            if layout is None:
                layout = _Layout(item)
                if task == "set_prediction" and layout.target is None:
                    raise DataError(
                        f"the source dataset has no set-prediction targets, so it "
                        f"cannot be cached for task set_prediction: {source!r}"
                    )
            layout.check(index, item)
            if shard is None:
                shard = _Shard(writer, len(shards), min(shard_size, count - index), layout)
            shard.put(item)
            index += 1
            if shard.filled == shard.rows:
                shards.append(shard.close())
                shard = None
        bar.update(len(batch))
    if index != count or layout is None:
        raise DataError(f"the source dataset gave {index} items, expected {count}")
    return layout, shards


def _cache_meta(
    layout: _Layout,
    shards: list[dict[str, Any]],
    *,
    source: str,
    source_options: Mapping[str, Any] | None,
    split: str,
    task: str,
    count: int,
    options: dict[str, Any],
    started: float,
) -> dict[str, Any]:
    """The contents of meta.json for a cache whose shards are all written."""
    from slotlab import __version__

    fields: dict[str, Any] = {
        "images": {"shape": list(layout.image), "dtype": "uint8"},
    }
    if layout.mask is not None:
        dtypes = {s["mask_dtype"] for s in shards}
        fields["masks"] = {"shape": list(layout.mask), "dtype": "/".join(sorted(dtypes))}
    if layout.target is not None:
        fields["targets"] = {"shape": list(layout.target), "dtype": "float32"}
    height, width = layout.image[:2]
    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "slotlab_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "source": source,
        "source_options": _jsonable(dict(source_options or {})),
        "split": split,
        "task": task,
        "count": count,
        "resolution": [height, width],
        "quantization": QUANTIZATION,
        "fields": fields,
        "shards": shards,
        "options": options,
        "seconds": round(time.time() - started, 3),
    }


def _stop_workers(batches: Iterator[Any]) -> None:
    """Stop the loader's workers now, after a failed write.

    The traceback of an error raised by a worker holds the loader's iterator, and if that is
    only collected later (in a reference cycle) its queues may be finalised first, so the workers
    miss the stop signal and each join waits 5 s.
    """
    stop_workers = getattr(batches, "_shutdown_workers", None)
    if stop_workers is not None:
        stop_workers()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def read_cache_meta(path: str | os.PathLike[str], split: str = "train") -> dict[str, Any]:
    """The checked meta.json of cache `path/<split>`; DataError naming the file otherwise."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DataError(f"cache directory {root} does not exist")
    split = normalize_split(split, None)
    folder = root / split
    if not folder.is_dir():
        found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        listed = ", ".join(found) if found else "none"
        raise DataError(f"cache {root} has no split {split!r} (splits there: {listed})")
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise DataError(
            f"{meta_path} is missing: {folder} is not a slotlab cache, or its write never finished"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{meta_path} is not readable JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != CACHE_FORMAT:
        raise DataError(f"{meta_path} is not the meta.json of a slotlab cache")
    if meta.get("version") != CACHE_VERSION:
        raise DataError(
            f"{meta_path} has cache format version {meta.get('version')!r}; this slotlab reads "
            f"version {CACHE_VERSION} (rebuild the cache with `slotlab data cache`)"
        )
    try:
        count = int(meta["count"])
        shards = meta["shards"]
        fields = meta["fields"]
        if count < 1 or sum(int(s["count"]) for s in shards) != count or "images" not in fields:
            raise ValueError("counts do not add up")
        for name, field in fields.items():
            if name not in ("images", "masks", "targets"):
                raise ValueError(f"unknown field {name!r}")
            if not all(isinstance(v, int) and v > 0 for v in field["shape"]):
                raise ValueError(f"bad shape {field['shape']!r} of {name}")
            for shard in shards:
                if not isinstance(shard[name], str) or "/" in shard[name]:
                    raise ValueError(f"bad file name {shard[name]!r}")
        if list(meta["resolution"]) != list(fields["images"]["shape"][:2]):
            raise ValueError("resolution and image shape differ")
        if meta["task"] not in ("object_discovery", "set_prediction"):
            raise ValueError(f"unknown task {meta['task']!r}")
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{meta_path} is damaged ({exc})") from None
    return meta


class CacheDataset(Dataset):
    """A cache written by `write_cache` / `slotlab data cache`, as `Sample` dicts.

    Args:
        path: the cache root (holding one directory per split).
        split: which split ("validation" = "val").
        task: must be the task the cache was written for (its preprocessing differs per task).
        as_uint8: return `image` as the stored uint8 [3, H, W] (normalise it on the GPU with
            `dequantize`, i.e. (x / 255 - 0.5) * 2) instead of float32 [3, H, W] in [-1, 1].
        resolution: optional (H, W) or one int; DataError unless it is the cache's resolution.
        num: optional; use only the first `num` items (DataError if the cache has fewer).
        **source_options: options of the source dataset (e.g. from a preset's data_options).
            The cache cannot apply them, so each must have been recorded in meta.json with the
            same value; anything else is a ConfigError rather than silently ignored.

    Items (read from read-only memory maps):
        image  float32 [3, H, W] in [-1, 1] (uint8 [3, H, W] with `as_uint8`)
        mask   int64 [H, W]          when the cache has masks
        target float32 [K, 19]       when the cache has targets
    Raises:
        DataError (one sentence naming the file) for a missing directory, split or meta.json, a
        cache written for another task, shard files missing, truncated or not matching meta.json.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        split: str = "train",
        task: str = "object_discovery",
        as_uint8: bool = False,
        resolution: Any = None,
        num: int | None = None,
        **source_options: Any,
    ) -> None:
        self.root = Path(path).expanduser()
        self.task = normalize_task(task)
        self.meta = read_cache_meta(self.root, split)
        self.split = normalize_split(split, None)
        self.folder = self.root / self.split
        self.as_uint8 = bool(as_uint8)
        meta_path = self.folder / META_FILE
        cached_task = self.meta["task"]
        if cached_task != self.task:
            detail = (
                "it has no set-prediction targets"
                if self.task == "set_prediction" and "targets" not in self.meta["fields"]
                else "its preprocessing differs per task"
            )
            raise DataError(
                f"{meta_path} is a cache for task {cached_task}, not {self.task} ({detail}); "
                f"build one with `slotlab data cache ... --task {self.task}`"
            )
        if self.task == "set_prediction" and "targets" not in self.meta["fields"]:
            raise DataError(f"{meta_path} is a set-prediction cache without targets")
        self.resolution = tuple(int(v) for v in self.meta["resolution"])
        if resolution is not None and parse_resolution(resolution) != self.resolution:
            want = parse_resolution(resolution)
            raise DataError(
                f"{meta_path}: the cache holds {_hw(self.resolution)} images but resolution "
                f"{_hw(want)} was asked for; rebuild it with --resolution {want[0]}x{want[1]}"
            )
        self._check_source_options(source_options, meta_path)
        self.count = int(self.meta["count"])
        if num is not None:
            if isinstance(num, bool) or not isinstance(num, int) or num < 1:
                raise ConfigError(f"num must be a positive integer, got {num!r}")
            if num > self.count:
                raise DataError(
                    f"{meta_path}: num={num} items were asked for but the cache holds only "
                    f"{self.count}"
                )
            self.count = num
        self.fields = tuple(self.meta["fields"])
        self._starts = [0]
        for shard in self.meta["shards"]:
            self._starts.append(self._starts[-1] + int(shard["count"]))
        self._shards: list[dict[str, np.ndarray]] | None = None
        self._open()

    def _check_source_options(self, options: Mapping[str, Any], meta_path: Path) -> None:
        recorded = self.meta.get("source_options") or {}
        for key, value in options.items():
            if key not in recorded:
                known = ", ".join(sorted(recorded)) or "none"
                raise ConfigError(
                    f"{meta_path}: a cache cannot apply the dataset option {key}={value!r} and "
                    f"its source was not built with it (recorded options: {known}); remove the "
                    f"option or rebuild the cache from a source built with it"
                )
            if _jsonable(value) != recorded[key]:
                raise DataError(
                    f"{meta_path}: the cache was built with {key}={recorded[key]!r}, not "
                    f"{value!r}; rebuild it with that option"
                )

    def _open(self) -> None:
        """Memory-map every shard and check it against meta.json."""
        shards = []
        fields = self.meta["fields"]
        for entry in self.meta["shards"]:
            arrays = {}
            for name, field in fields.items():
                file = self.folder / entry[name]
                arrays[name] = _open_shard(file, int(entry["count"]), field, entry, name)
            shards.append(arrays)
        self._shards = shards

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_shards"] = None  # memory maps are reopened in each loader worker
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return self.count

    @property
    def has_masks(self) -> bool:
        """Whether items carry a `mask`."""
        return "masks" in self.fields

    def _locate(self, item: int) -> tuple[dict[str, np.ndarray], int]:
        if isinstance(item, bool) or not isinstance(item, (int, np.integer)):
            raise TypeError(f"cache items are indexed by int, got {type(item).__name__}")
        if not -self.count <= item < self.count:
            raise IndexError(f"item {item} out of range for a cache of {self.count} items")
        item = int(item) % self.count
        shard = bisect.bisect_right(self._starts, item) - 1
        assert self._shards is not None
        return self._shards[shard], item - self._starts[shard]

    def __getitem__(self, item: int) -> Sample:
        arrays, row = self._locate(item)
        pixels = np.array(arrays["images"][row])  # a private copy of the memory-mapped row
        if self.as_uint8:
            image = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
        else:
            image = to_unit_range(pixels)
        sample: Sample = {"image": image}
        if "masks" in arrays:
            sample["mask"] = torch.from_numpy(arrays["masks"][row].astype(np.int64))
        if "targets" in arrays:
            sample["target"] = torch.from_numpy(np.array(arrays["targets"][row]))
        return sample

    def __getitems__(self, items: Sequence[int]) -> list[Sample]:
        """A batch of items (what DataLoader asks for): one gather per shard, one conversion."""
        rows = np.asarray(items, dtype=np.int64)
        if rows.ndim != 1 or len(rows) == 0:
            return [self[i] for i in items]
        if rows.min() < -self.count or rows.max() >= self.count:
            bad = next(int(i) for i in rows if not -self.count <= i < self.count)
            raise IndexError(f"item {bad} out of range for a cache of {self.count} items")
        rows %= self.count
        shard_of = np.searchsorted(self._starts, rows, side="right") - 1
        assert self._shards is not None
        first = self._shards[0]
        out = {
            name: np.empty((len(rows), *first[name].shape[1:]), first[name].dtype)
            for name in first
            if name != "masks"
        }
        if "masks" in first:
            out["masks"] = np.empty((len(rows), *first["masks"].shape[1:]), np.int64)
        for shard in np.unique(shard_of):
            where = np.flatnonzero(shard_of == shard)
            local = rows[where] - self._starts[shard]
            for name, array in self._shards[shard].items():
                out[name][where] = array[local]
        images = torch.from_numpy(out["images"]).permute(0, 3, 1, 2)
        images = images.contiguous()  # permute the uint8 pixels, 4x less to move than floats
        if not self.as_uint8:
            images = dequantize(images)
        masks = torch.from_numpy(out["masks"]) if "masks" in out else None
        targets = torch.from_numpy(out["targets"]) if "targets" in out else None
        batch: list[Sample] = []
        for i in range(len(rows)):
            sample: Sample = {"image": images[i]}
            if masks is not None:
                sample["mask"] = masks[i]
            if targets is not None:
                sample["target"] = targets[i]
            batch.append(sample)
        return batch

    def __repr__(self) -> str:
        return (
            f"CacheDataset(path={str(self.root)!r}, split={self.split!r}, task={self.task!r}, "
            f"items={self.count}, resolution={self.resolution}, fields={list(self.fields)}, "
            f"as_uint8={self.as_uint8})"
        )


def _open_shard(
    file: Path, count: int, field: Mapping[str, Any], entry: Mapping[str, Any], name: str
) -> np.ndarray:
    """Memory-map one shard file read-only; DataError naming it unless it matches meta.json."""
    if not file.is_file():
        raise DataError(f"cache file {file} is missing")
    try:
        array = np.load(file, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        text = str(exc) or type(exc).__name__
        reason = (
            "truncated" if ("size" in text or "EOF" in text or "No data" in text) else "unreadable"
        )
        raise DataError(f"cache file {file} is {reason} ({text}); rebuild the cache") from None
    want_shape = (count, *(int(v) for v in field["shape"]))
    if name == "images":
        want_dtype = {"uint8"}
    elif name == "masks":
        want_dtype = {str(entry.get("mask_dtype", "uint8"))}
    else:
        want_dtype = {"float32"}
    if tuple(array.shape) != want_shape or array.dtype.name not in want_dtype:
        raise DataError(
            f"cache file {file} holds {array.dtype.name} {list(array.shape)} but meta.json says "
            f"{'/'.join(sorted(want_dtype))} {list(want_shape)}; rebuild the cache"
        )
    return array
