"""Raw CLEVR v1.0 (and the procedural generator's output, which uses the same layout).

Layout under `root` (as in CLEVR_v1.0.zip; `masks/` only exists for generated data)::

    images/{split}/CLEVR_{split}_{000000}.png      RGBA or RGB, 480x320 for real CLEVR
    scenes/CLEVR_{split}_scenes.json               {"info": ..., "scenes": [...]}; none for test
    masks/{split}/CLEVR_{split}_{000000}.png       uint8 ids: 0 = background, i + 1 = object i

The two official pipelines (google-research slot_attention `data.py`):

- object discovery: [-1, 1], crop rows 29:221 cols 64:256, bilinear resize to 128x128, keep
  scenes with <= 6 objects;
- set prediction: [-1, 1], no crop, resize, keep scenes with <= 10 objects, `target` [10, 19].
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slotlab.data.clevr_vocab import COLORS, MATERIALS, SHAPES, SIZES
from slotlab.data.io import read_id_mask, read_image, read_json
from slotlab.data.options import (
    CropOption,
    check_crop_fits,
    normalize_split,
    parse_crop,
    parse_resolution,
)
from slotlab.data.preprocess import (
    OFFICIAL_MAX_OBJECTS,
    OFFICIAL_RESOLUTION,
    Sample,
    clevr_preprocess,
    clevr_target,
    default_crop,
    resize_mask,
)
from slotlab.data.preprocess import crop as crop_tensor
from slotlab.errors import ConfigError, DataError
from slotlab.tasks import normalize_task

# Attribute name -> vocabulary, in the column order of `_ParsedScenes.labels`.
_LABEL_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("size", SIZES),
    ("material", MATERIALS),
    ("shape", SHAPES),
    ("color", COLORS),
)


def clevr_image_name(split: str, index: int) -> str:
    """File name of image `index` of `split`, e.g. CLEVR_val_000042.png."""
    return f"CLEVR_{split}_{index:06d}.png"


def _list_images(image_dir: Path, split: str) -> dict[int, Path]:
    """Map image index -> path for every CLEVR_{split}_NNNNNN.png in `image_dir`."""
    if not image_dir.is_dir():
        raise DataError(f"CLEVR image directory {image_dir} does not exist")
    pattern = re.compile(rf"CLEVR_{re.escape(split)}_(\d{{6}})\.png")
    images = {}
    for path in image_dir.iterdir():
        match = pattern.fullmatch(path.name)
        if match:
            images[int(match.group(1))] = path
    if not images:
        raise DataError(
            f"CLEVR image directory {image_dir} holds no CLEVR_{split}_NNNNNN.png images"
        )
    return images


class _ParsedScenes:
    """The few scene fields the pipelines need, for every scene of one scene file.

    Attributes (N scenes, M = largest object count in the file):
        num_objects: int64 [N]
        coords:      float32 [N, M, 3]   `3d_coords` of each object (rows past the count are 0)
        labels:      int8 [N, M, 4]      size, material, shape, colour indices (TFDS order)
        index_of:    image index -> row
    """

    def __init__(self, scenes_path: Path, split: str) -> None:
        data = read_json(scenes_path)
        scenes = data.get("scenes") if isinstance(data, Mapping) else None
        if not isinstance(scenes, list):
            raise DataError(f"scene file {scenes_path} has no 'scenes' list")
        parsed = [_parse_scene(scene, scenes_path, split, row) for row, scene in enumerate(scenes)]
        del data, scenes  # the raw JSON of real CLEVR is hundreds of MB: keep only the arrays

        self.index_of: dict[int, int] = {}
        for row, (image_index, _, _) in enumerate(parsed):
            if image_index in self.index_of:
                raise DataError(
                    f"scene file {scenes_path} lists image index {image_index} more than once"
                )
            self.index_of[image_index] = row
        n = len(parsed)
        self.num_objects = np.array([len(labels) for _, _, labels in parsed], dtype=np.int64)
        m = int(self.num_objects.max(initial=0))
        self.coords = np.zeros((n, m, 3), dtype=np.float32)
        self.labels = np.zeros((n, m, len(_LABEL_FIELDS)), dtype=np.int8)
        rows = np.repeat(np.arange(n), self.num_objects)
        slots = np.concatenate([np.arange(k) for k in self.num_objects]) if n else rows
        self.coords[rows, slots] = _coords_array(parsed, scenes_path)
        labels = [lab for _, _, labels in parsed for lab in labels]
        self.labels[rows, slots] = np.array(labels, np.int8).reshape(-1, len(_LABEL_FIELDS))

    def objects(self, row: int) -> list[dict[str, Any]]:
        """The objects of scene `row` in the form `clevr_target` takes (class indices)."""
        return [
            {
                "3d_coords": self.coords[row, i],
                **{
                    field: int(self.labels[row, i, j]) for j, (field, _) in enumerate(_LABEL_FIELDS)
                },
            }
            for i in range(int(self.num_objects[row]))
        ]


_LABEL_INDEX = {field: {name: i for i, name in enumerate(names)} for field, names in _LABEL_FIELDS}

_ParsedScene = tuple[int, list[list[Any]], list[list[int]]]


def _parse_scene(scene: Any, scenes_path: Path, split: str, row: int) -> _ParsedScene:
    """Validate one scene dict -> (image_index, 3d_coords per object, label indices per object).

    The coordinates are checked to be lists of 3 here and to be numbers in `_coords_array`.
    """
    where = f"scene file {scenes_path}, scene {row}"
    if not isinstance(scene, Mapping):
        raise DataError(f"{where} is not a JSON object")
    image_index = scene.get("image_index")
    if isinstance(image_index, bool) or not isinstance(image_index, int):
        raise DataError(f"{where} has no integer 'image_index'")
    where = f"scene file {scenes_path}, image index {image_index}"
    file_name = scene.get("image_filename")
    if file_name is not None and file_name != clevr_image_name(split, image_index):
        raise DataError(
            f"{where} names image_filename {file_name!r}, expected "
            f"{clevr_image_name(split, image_index)!r}"
        )
    objects = scene.get("objects")
    if not isinstance(objects, list):
        raise DataError(f"{where} has no 'objects' list")
    coords, labels = [], []
    for i, obj in enumerate(objects):
        if not isinstance(obj, Mapping):
            raise DataError(f"{where}: object {i} is not a JSON object")
        xyz = obj.get("3d_coords")
        if not isinstance(xyz, list) or len(xyz) != 3:
            raise DataError(f"{where}: object {i} has no '3d_coords' list of 3 numbers")
        indices = []
        for field, lookup in _LABEL_INDEX.items():
            if field not in obj:
                raise DataError(f"{where}: object {i} has no '{field}' field")
            value = obj[field]
            index = lookup.get(value) if isinstance(value, str) else None
            if index is None:
                raise DataError(
                    f"{where}: object {i} has unknown {field} {value!r} "
                    f"(expected one of {', '.join(lookup)})"
                )
            indices.append(index)
        coords.append(xyz)
        labels.append(indices)
    return image_index, coords, labels


def _coords_array(parsed: list[_ParsedScene], scenes_path: Path) -> np.ndarray:
    """All objects' 3d_coords as float32 [total objects, 3]; DataError naming a non-number."""
    flat = [xyz for _, coords, _ in parsed for xyz in coords]
    numbers = (int, float)
    try:
        array = np.array(flat).reshape(len(flat), 3)
        if array.dtype.kind in "iuf":  # a string or null anywhere makes it non-numeric
            return array.astype(np.float32)
    except (TypeError, ValueError):
        pass
    for image_index, coords, _ in parsed:
        for i, xyz in enumerate(coords):
            if not all(type(c) in numbers for c in xyz):
                raise DataError(
                    f"scene file {scenes_path}, image index {image_index}: object {i} has "
                    f"3d_coords {xyz!r}, which are not all numbers"
                )
    raise DataError(f"scene file {scenes_path} has 3d_coords that are not numbers")


class ClevrDataset(Dataset):
    """Raw CLEVR v1.0 images (+ scenes, + masks when present) as `Sample` dicts.

    Args:
        root: the CLEVR_v1.0 directory (holding images/ and scenes/).
        split: "train", "val" (alias "validation") or "test".
        task: "object_discovery" or "set_prediction" (chooses the official pipeline).
        resolution: output (H, W) or one int; the official value is (128, 128).
        max_objects: keep scenes with at most this many objects; None = official (6 for object
            discovery, 10 for set prediction; no filtering on test, which has no scenes). For set
            prediction it is also the number of target rows.
        crop: "official" (rows 29:221, cols 64:256 for object discovery, none for set
            prediction), None (no crop) or a box (r0, r1, c0, c1) in source pixels.

    Items, in image-index order:
        image  float32 [3, H, W] in [-1, 1]
        mask   int64 [H, W], 0 = background, i + 1 = object i      (only if masks/{split} exists)
        target float32 [max_objects, 19]                          (set prediction only)
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        task: str = "object_discovery",
        resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
        max_objects: int | None = None,
        crop: CropOption = "official",
    ) -> None:
        self.root = Path(root).expanduser()
        self.split = normalize_split(split)
        self.task = normalize_task(task)
        self.resolution = parse_resolution(resolution)
        self.crop = parse_crop(crop, {"official": default_crop(self.task)})
        if not self.root.is_dir():
            raise DataError(f"CLEVR directory {self.root} does not exist")

        images = _list_images(self.root / "images" / self.split, self.split)
        self.scenes_path = self.root / "scenes" / f"CLEVR_{self.split}_scenes.json"
        self._scenes = self._load_scenes(images)
        self.max_objects = self._resolve_max_objects(max_objects)

        order = sorted(images)
        if self._scenes is not None and self.max_objects is not None:
            counts = self._scenes.num_objects
            order = [i for i in order if counts[self._scenes.index_of[i]] <= self.max_objects]
            if not order:
                raise DataError(
                    f"no scene in {self.scenes_path} has <= {self.max_objects} objects, so the "
                    f"{self.split} split is empty after filtering"
                )
        self.image_indices: list[int] = order
        self.image_paths: list[Path] = [images[i] for i in order]
        self.mask_paths: list[Path] | None = self._find_masks()

    # ------------------------------------------------------------------------------------------
    def _load_scenes(self, images: dict[int, Path]) -> _ParsedScenes | None:
        if not self.scenes_path.is_file():
            if self.split == "test":
                if self.task == "set_prediction":
                    raise DataError(
                        f"set prediction needs scenes, and the CLEVR test split has none "
                        f"({self.scenes_path} does not exist); use split train or val"
                    )
                return None
            raise DataError(f"CLEVR scene file {self.scenes_path} does not exist")
        scenes = _ParsedScenes(self.scenes_path, self.split)
        missing_scenes = sorted(set(images) - set(scenes.index_of))
        missing_images = sorted(set(scenes.index_of) - set(images))
        if missing_scenes or missing_images:
            example = (
                f"no scene for image {clevr_image_name(self.split, missing_scenes[0])}"
                if missing_scenes
                else f"no image {clevr_image_name(self.split, missing_images[0])}"
            )
            raise DataError(
                f"{self.scenes_path} describes {len(scenes.index_of)} scenes but "
                f"{self.root / 'images' / self.split} holds {len(images)} images ({example})"
            )
        return scenes

    def _resolve_max_objects(self, max_objects: int | None) -> int | None:
        if max_objects is not None and (isinstance(max_objects, bool) or max_objects < 1):
            raise ConfigError(f"max_objects must be a positive integer, got {max_objects!r}")
        if self._scenes is None:
            if max_objects is not None:
                raise DataError(
                    f"cannot keep scenes with <= {max_objects} objects: {self.scenes_path} "
                    f"does not exist (the CLEVR test split has no scenes); use max_objects=None"
                )
            return None
        return OFFICIAL_MAX_OBJECTS[self.task] if max_objects is None else int(max_objects)

    def _find_masks(self) -> list[Path] | None:
        mask_dir = self.root / "masks" / self.split
        if not mask_dir.is_dir():
            return None
        present = {p.name for p in mask_dir.iterdir()}
        for path in self.image_paths:
            if path.name not in present:
                raise DataError(f"mask file {mask_dir / path.name} is missing (its image exists)")
        return [mask_dir / p.name for p in self.image_paths]

    # ------------------------------------------------------------------------------------------
    @property
    def has_masks(self) -> bool:
        """Whether items carry a `mask` (masks/{split} exists)."""
        return self.mask_paths is not None

    def num_objects(self, item: int) -> int | None:
        """Object count of item `item` (None on the test split, which has no scenes)."""
        if self._scenes is None:
            return None
        return int(self._scenes.num_objects[self._scenes.index_of[self.image_indices[item]]])

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, item: int) -> Sample:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} CLEVR images")
        item = item % len(self)
        path = self.image_paths[item]
        pixels = read_image(path)
        check_crop_fits(self.crop, pixels.shape[:2], f"image file {path}")
        sample: Sample = {"image": clevr_preprocess(pixels, self.task, self.resolution, self.crop)}
        if self.mask_paths is not None:
            sample["mask"] = self._read_mask(item, pixels.shape[:2])
        if self.task == "set_prediction":
            assert self._scenes is not None and self.max_objects is not None
            row = self._scenes.index_of[self.image_indices[item]]
            sample["target"] = clevr_target(self._scenes.objects(row), self.max_objects)
        return sample

    def _read_mask(self, item: int, image_shape: tuple[int, ...]) -> torch.Tensor:
        assert self.mask_paths is not None
        path = self.mask_paths[item]
        ids = read_id_mask(path)
        if ids.shape != tuple(image_shape):
            raise DataError(
                f"mask file {path} is {ids.shape[0]}x{ids.shape[1]} but its image is "
                f"{image_shape[0]}x{image_shape[1]} (height x width)"
            )
        count = self.num_objects(item)
        if count is not None and int(ids.max(initial=0)) > count:
            raise DataError(
                f"mask file {path} holds instance id {int(ids.max())} but its scene has only "
                f"{count} objects"
            )
        mask = torch.from_numpy(ids.astype(np.int64))
        return resize_mask(crop_tensor(mask, self.crop), self.resolution)

    def __repr__(self) -> str:
        return (
            f"ClevrDataset(root={str(self.root)!r}, split={self.split!r}, task={self.task!r}, "
            f"items={len(self)}, max_objects={self.max_objects}, masks={self.has_masks})"
        )

