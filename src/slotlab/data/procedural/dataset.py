"""`ProceduralClevrDataset`: CLEVR-style scenes rendered on the fly as `Sample` dicts."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from slotlab.data.options import CropOption, parse_crop, parse_resolution
from slotlab.data.preprocess import (
    OFFICIAL_CROP,
    OFFICIAL_MAX_OBJECTS,
    OFFICIAL_RESOLUTION,
    Sample,
    clevr_preprocess,
    clevr_target,
)
from slotlab.data.procedural.render import render_scene
from slotlab.data.procedural.scenes import MIN_PIXELS, procedural_scene
from slotlab.errors import ConfigError
from slotlab.tasks import normalize_task

__all__ = ["ProceduralClevrDataset"]


class ProceduralClevrDataset(Dataset):
    """CLEVR-style scenes rendered on the fly, as `Sample` dicts (no disk, no download).

    Item `i` is the scene `procedural_scene(seed, split, i, min_objects, max_objects)` (the
    scene `generate_clevr_dir` writes as image `i` given the same seed and object range),
    rendered straight at `resolution` through the requested crop of the 480x320 frame, so the
    object-discovery sample equals the official preprocessing of the 480x320 image up to
    anti-aliasing, at a fraction of the cost.

    Args:
        split: any split name ("train", "val", "test", ...); it only seeds the scenes.
        task: "object_discovery" or "set_prediction".
        num: the number of items.
        seed: the dataset seed.
        resolution: output (H, W) or one int.
        min_objects, max_objects: object count range; max_objects None = official filter (6 for
            object discovery, 10 for set prediction), also the number of target rows.
        crop: "official" (rows 29:221, cols 64:256 of the 320x480 frame for object discovery,
            none for set prediction), None (whole frame) or (r0, r1, c0, c1) native pixels.
        supersample: samples per pixel side (2 = 4 samples per pixel).
        min_pixels: visible pixels each object needs in the 480x320 frame.

    Items: image float32 [3, H, W] in [-1, 1]; mask int64 [H, W] (0 = background, i + 1 =
    object i; objects outside the crop are absent); target float32 [max_objects, 19] for set
    prediction.
    """

    def __init__(
        self,
        split: str = "train",
        task: str = "object_discovery",
        num: int = 10000,
        seed: int = 0,
        resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
        min_objects: int = 3,
        max_objects: int | None = None,
        crop: CropOption = "official",
        supersample: int = 2,
        min_pixels: int = MIN_PIXELS,
    ) -> None:
        self.task = normalize_task(task)
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ConfigError(f"num must be a non-negative integer, got {num!r}")
        self.split, self.num, self.seed = str(split), num, int(seed)
        self.resolution = parse_resolution(resolution)
        self.min_objects = int(min_objects)
        self.max_objects = (
            OFFICIAL_MAX_OBJECTS[self.task] if max_objects is None else int(max_objects)
        )
        if not 1 <= self.min_objects <= self.max_objects:
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects, got {self.min_objects}, {self.max_objects}"
            )
        official = OFFICIAL_CROP if self.task == "object_discovery" else None
        self.crop = parse_crop(crop, {"official": official})
        self.supersample = int(supersample)
        self.min_pixels = int(min_pixels)

    def __len__(self) -> int:
        return self.num

    def scene(self, item: int) -> dict[str, Any]:
        """The scene dict of item `item` (CLEVR fields plus the renderer's `render` entry)."""
        return procedural_scene(
            self.seed,
            self.split,
            item,
            self.min_objects,
            self.max_objects,
            min_pixels=self.min_pixels,
        )

    def __getitem__(self, item: int) -> Sample:
        if not -self.num <= item < self.num:
            raise IndexError(f"item {item} out of range for {self.num} procedural scenes")
        item = item % self.num
        scene = self.scene(item)
        h, w = self.resolution
        image, mask = render_scene(scene, w, h, self.crop, self.supersample)
        sample: Sample = {
            "image": clevr_preprocess(image, self.task, self.resolution, crop=None),
            "mask": torch.from_numpy(mask.astype(np.int64)),
        }
        if self.task == "set_prediction":
            sample["target"] = clevr_target(scene["objects"], self.max_objects)
        return sample

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.num):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"ProceduralClevrDataset(split={self.split!r}, task={self.task!r}, num={self.num}, "
            f"seed={self.seed}, resolution={self.resolution}, objects={self.min_objects}-"
            f"{self.max_objects}, crop={self.crop})"
        )

