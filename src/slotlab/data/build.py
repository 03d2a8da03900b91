"""One entry point for every dataset (`build_dataset`) and DataLoader settings (`make_loader`).

Spec strings:

    procedural                 CLEVR-style scenes generated on the fly (no download)
    procedural-sprites         2-D sprites generated on the fly (no download)
    procedural-video           CLEVR-style videos (objects sliding on the floor) for SAVi
    procedural-video-sprites   sprite videos (moving, bouncing, occluding) for SAVi
    clevr:PATH                 raw CLEVR v1.0 directory (or the procedural generator's output)
    clevr-with-masks:PATH      DeepMind multi_object_datasets TFRecord
    multi-dsprites:PATH        DeepMind TFRecord (variant from `variant=` or the file name)
    tetrominoes:PATH           DeepMind TFRecord
    objects-room:PATH          DeepMind TFRecord
    tfds-clevr:PATH            TFDS `clevr` 3.1.0 directory
    folder:PATH                DIR/images/*.png|jpg|jpeg (+ optional DIR/masks); ignores the split
    cache:PATH                 a preprocessed cache written by `slotlab data cache`

The dataset classes other than ClevrDataset and ImageFolderDataset are imported only when asked
for, so a module that is missing (or needs an absent package) gives one clear error here.
"""

from __future__ import annotations

import importlib
import inspect
import os
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from slotlab.data.options import SPLITS, normalize_split
from slotlab.errors import ConfigError, DataError
from slotlab.tasks import normalize_task

NO_PATH_KINDS = ("procedural", "procedural-sprites", "procedural-video", "procedural-video-sprites")
VIDEO_KINDS = ("procedural-video", "procedural-video-sprites")
PATH_KINDS = (
    "clevr",
    "clevr-with-masks",
    "multi-dsprites",
    "tetrominoes",
    "objects-room",
    "tfds-clevr",
    "folder",
    "cache",
)
MULTI_OBJECT_NAMES = {
    "clevr-with-masks": "clevr_with_masks",
    "tetrominoes": "tetrominoes",
    "objects-room": "objects_room",
}
MULTI_DSPRITES_VARIANTS = (
    "multi_dsprites_binarized",
    "multi_dsprites_colored_on_grayscale",
    "multi_dsprites_colored_on_colored",
)  # Split names some kinds accept besides train / val / test.
EXTRA_SPLITS = {"tfds-clevr": ("train_eval", "train_all"), "folder": ("all",)}

# kind -> (module, class) of its dataset.
_CLASSES = {
    "procedural": ("slotlab.data.procedural", "ProceduralClevrDataset"),
    "procedural-sprites": ("slotlab.data.sprites", "ProceduralSpritesDataset"),
    "procedural-video": ("slotlab.data.video_clevr", "ProceduralVideoDataset"),
    "procedural-video-sprites": ("slotlab.data.video_sprites", "ProceduralVideoSpritesDataset"),
    "clevr": ("slotlab.data.clevr", "ClevrDataset"),
    "clevr-with-masks": ("slotlab.data.multi_object", "MultiObjectDataset"),
    "multi-dsprites": ("slotlab.data.multi_object", "MultiObjectDataset"),
    "tetrominoes": ("slotlab.data.multi_object", "MultiObjectDataset"),
    "objects-room": ("slotlab.data.multi_object", "MultiObjectDataset"),
    "tfds-clevr": ("slotlab.data.tfds_clevr", "TFDSClevrDataset"),
    "folder": ("slotlab.data.folder", "ImageFolderDataset"),
    "cache": ("slotlab.data.cache", "CacheDataset"),
}

SPEC_FORMS = ", ".join([*NO_PATH_KINDS, *(f"{kind}:PATH" for kind in PATH_KINDS)])

# Below this many examples a loader uses no worker processes (start-up would dominate).
TINY_DATASET = 256


def parse_spec(spec: str) -> tuple[str, Path | None]:
    """Split a dataset spec into (kind, path); path is None for the procedural kinds.

    Only the text before the first ':' is the kind, so paths may contain ':'. The path is not
    checked here (see `build_dataset`). Raises DataError listing the valid forms.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise DataError(f"empty dataset spec; expected one of: {SPEC_FORMS}")
    kind, sep, path = spec.strip().partition(":")
    kind = kind.strip().lower().replace("_", "-")
    if kind in NO_PATH_KINDS:
        if sep:
            raise DataError(f"dataset spec {spec!r}: {kind} takes no path; expected {kind}")
        return kind, None
    if kind in PATH_KINDS:
        if not path.strip():
            raise DataError(f"dataset spec {spec!r} has no path; expected {kind}:PATH")
        return kind, Path(path.strip()).expanduser()
    raise DataError(f"unknown dataset spec {spec!r}; expected one of: {SPEC_FORMS}")


def _load_class(kind: str) -> type:
    """Import the dataset class of `kind`, turning a missing module into one clear error."""
    module_name, class_name = _CLASSES[kind]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        if err.name and (module_name.startswith(err.name) or err.name.startswith("slotlab.")):
            raise DataError(
                f"dataset kind {kind!r} is not available yet in this installation "
                f"(module {err.name} is missing)"
            ) from None
        raise DataError(
            f"dataset kind {kind!r} needs the Python package {err.name!r}, which is not "
            f"installed (pip install {err.name})"
        ) from None
    cls = getattr(module, class_name, None)
    if cls is None:
        raise DataError(
            f"dataset kind {kind!r} is not available yet in this installation "
            f"({module_name} has no {class_name})"
        )
    return cls


def _multi_dsprites_variant(path: Path, options: dict[str, Any]) -> str:
    """The multi-dSprites variant from option `variant` (popped) or else from the file name."""
    variant = options.pop("variant", None)
    if variant is not None:
        name = str(variant).lower().replace("-", "_")
        name = name if name.startswith("multi_dsprites_") else f"multi_dsprites_{name}"
        if name not in MULTI_DSPRITES_VARIANTS:
            raise ConfigError(
                f"unknown multi-dSprites variant {variant!r}; expected one of "
                f"{', '.join(MULTI_DSPRITES_VARIANTS)}"
            )
        return name
    stem = path.name.lower().replace("-", "_")
    for name in MULTI_DSPRITES_VARIANTS:
        if name.removeprefix("multi_dsprites_") in stem:
            return name
    raise DataError(
        f"cannot tell the multi-dSprites variant of {path}: its name contains none of binarized, "
        f"colored_on_grayscale, colored_on_colored; pass variant=... (one of "
        f"{', '.join(MULTI_DSPRITES_VARIANTS)})"
    )


# Arguments a dataset class takes that are not user options.
_NOT_OPTIONS = {"self", "root", "path", "data_dir", "name", "split", "task", "split_ranges",
                "progress", "source_options"}


def kind_options(spec_or_kind: str) -> tuple[str, ...]:
    """The options a dataset kind takes (e.g. folder: resolution, crop)."""
    kind = spec_or_kind if spec_or_kind in _CLASSES else parse_spec(spec_or_kind)[0]
    params = inspect.signature(_load_class(kind).__init__).parameters
    names = [n for n, p in params.items() if n not in _NOT_OPTIONS
             and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return tuple(names) + (("variant",) if kind == "multi-dsprites" else ())


def check_options(spec: str, options: dict[str, Any]) -> None:
    """One ConfigError line naming an option that the kind of `spec` does not take."""
    kind, _ = parse_spec(spec)
    accepted = kind_options(kind)
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ConfigError(
            f"dataset kind {kind!r} does not take the option {unknown[0]!r}; it takes: "
            f"{', '.join(accepted)}"
        )


def options_for(spec: str, options: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """`options` split into those the kind of `spec` takes and the names of the others (for
    options written for other data, e.g. a preset's generator settings used with a folder)."""
    accepted = set(kind_options(spec))
    return ({k: v for k, v in options.items() if k in accepted},
            sorted(k for k in options if k not in accepted))


def _construct(kind: str, cls: type, args: tuple, kwargs: dict[str, Any]) -> Dataset:
    """Call `cls(*args, **kwargs)` after checking the options fit its signature."""
    try:
        inspect.signature(cls).bind(*args, **kwargs)
    except TypeError:
        given = set(kwargs) - _NOT_OPTIONS
        accepted = kind_options(kind)
        unknown = sorted(given - set(accepted))
        raise ConfigError(
            f"dataset kind {kind!r} does not take the option {unknown[0]!r}; it takes: "
            f"{', '.join(accepted)}" if unknown else
            f"bad options for dataset kind {kind!r}: {sorted(given)}"
        ) from None
    except ValueError:  # no signature available: let the call itself decide
        pass
    return cls(*args, **kwargs)


def build_dataset(
    spec: str, split: str = "train", task: str | None = None, **options: Any
) -> Dataset:
    """Build the dataset named by `spec` (see the module docstring for the forms).

    Args:
        spec: e.g. "procedural", "clevr:~/data/CLEVR_v1.0", "folder:photos".
        split: "train", "val" (alias "validation") or "test"; passed on as "train"/"val"/"test".
            tfds-clevr also takes "train_eval" and "train_all" (see `TFDSClevrDataset`). A folder
            takes "all" too (`ImageFolderDataset`: its split directories, or a fixed held-out
            part of a flat folder).
        task: "object_discovery", "set_prediction" or "video" (dashes allowed); default the
            kind's own: video for the video kinds, else object_discovery. Images for the video
            task, or videos for another, are a ConfigError.
        **options: passed to the dataset class (e.g. resolution=(128, 128) as (height, width)
            or one int, crop=None, max_objects=6; `variant=` for multi-dsprites).
    Returns:
        a torch Dataset whose items are `Sample` dicts (image [3, H, W] in [-1, 1], optional
        mask [H, W] int64, target [K, 19] for set prediction).
    Raises:
        DataError for an unknown spec, a missing path or unreadable data; ConfigError for options
        that do not fit.
    """
    kind, path = parse_spec(spec)
    split = normalize_split(split, (*SPLITS, *EXTRA_SPLITS.get(kind, ())))
    task = normalize_task(task or ("video" if kind in VIDEO_KINDS else "object_discovery"))
    if (task == "video") != (kind in VIDEO_KINDS):
        raise ConfigError(
            f"{kind} data holds videos: it serves the video task, not {task}" if task != "video"
            else f"{kind} data holds images, not videos: a video model needs video data "
            f"({', '.join(VIDEO_KINDS)})")
    if path is not None and not path.exists():
        raise DataError(
            f"dataset path {path} (from spec {spec!r}) does not exist; expected one of: "
            f"{SPEC_FORMS}"
        )
    options = dict(options)
    cls = _load_class(kind)
    if kind in NO_PATH_KINDS:
        return _construct(kind, cls, (), {"split": split, "task": task, **options})
    if kind == "folder":
        return _construct(kind, cls, (path,), {"split": split, "task": task, **options})
    if kind == "multi-dsprites":
        name = _multi_dsprites_variant(path, options)
        return _construct(kind, cls, (path, name), {"split": split, "task": task, **options})
    if kind in MULTI_OBJECT_NAMES:
        name = MULTI_OBJECT_NAMES[kind]
        return _construct(kind, cls, (path, name), {"split": split, "task": task, **options})
    return _construct(kind, cls, (path,), {"split": split, "task": task, **options})


def usable_cores() -> int:
    """The CPU cores this process may run on (at least 1)."""
    try:
        return max(len(os.sched_getaffinity(0)), 1)
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_num_workers(dataset_size: int) -> int:
    """Worker processes for a loader: 0 for a tiny dataset, else min(2, usable CPU cores)."""
    if dataset_size < TINY_DATASET:
        return 0
    return min(2, usable_cores())


def _worker_init(worker_id: int) -> None:
    """One torch thread per worker, so workers do not fight over the few cores."""
    torch.set_num_threads(1)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool,
    device: str | torch.device | None = None,
    num_workers: int | None = None,
    drop_last: bool | None = None,
    seed: int = 0,
) -> DataLoader:
    """A DataLoader with settings that suit a small machine.

    Args:
        dataset: a map-style dataset of `Sample` dicts.
        batch_size: examples per batch.
        shuffle: reshuffle every epoch, in an order fixed by `seed`.
        device: where batches go; pinned memory is used only for CUDA.
        num_workers: None = `default_num_workers(len(dataset))`; workers persist across epochs.
        drop_last: drop the last incomplete batch; None = same as `shuffle` (training loaders
            drop it, as the official code does; evaluation loaders keep every example).
        seed: seeds the shuffle order (and the workers' base seed).
    Raises:
        ConfigError if batch_size < 1, or batch_size > len(dataset) with drop_last (no batch).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch size must be a positive integer, got {batch_size!r}")
    drop_last = shuffle if drop_last is None else drop_last
    size = len(dataset)  # type: ignore[arg-type]
    if size == 0:
        raise DataError(f"dataset {dataset!r} is empty")
    if drop_last and batch_size > size:
        raise ConfigError(
            f"batch size {batch_size} is larger than the dataset ({size} examples), so dropping "
            f"the last incomplete batch leaves no batches; use a batch size <= {size}"
        )
    if num_workers is None:
        num_workers = default_num_workers(size)
    if num_workers < 0:
        raise ConfigError(f"num_workers must be >= 0, got {num_workers}")
    on_cuda = device is not None and torch.device(device).type == "cuda"
    generator = torch.Generator()
    generator.manual_seed(int(seed))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        pin_memory=on_cuda,
        drop_last=drop_last,
        generator=generator,
        persistent_workers=num_workers > 0,
        worker_init_fn=_worker_init if num_workers > 0 else None,
    )
