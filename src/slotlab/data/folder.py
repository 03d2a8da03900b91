"""Any folder of images (optionally with instance-id masks) as an object-discovery dataset.

Layout::

    DIR/images/*.png | *.jpg | *.jpeg      any size, any count (sorted by file name)
    DIR/masks/<same stem>.png              optional; uint8 instance ids, 0 = background

A folder without an `images/` subfolder but with image files directly inside it is read as
`DIR/*.png|jpg|jpeg` (no masks). If `masks/` exists, every image must have its mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from slotlab.data.io import read_id_mask, read_image
from slotlab.data.options import Box, CropOption, check_crop_fits, parse_crop, parse_resolution
from slotlab.data.preprocess import (
    OFFICIAL_RESOLUTION,
    Sample,
    resize_image,
    resize_mask,
    to_unit_range,
)
from slotlab.data.preprocess import crop as crop_tensor
from slotlab.errors import DataError
from slotlab.tasks import normalize_task

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
CENTER = "center"


def _list_image_files(directory: Path) -> list[Path]:
    """Image files (by suffix, case-insensitive, no hidden files) in `directory`, sorted by name."""
    return sorted(
        (
            p
            for p in directory.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
        ),
        key=lambda p: p.name,
    )


def center_square(height: int, width: int) -> Box:
    """The largest centred square (r0, r1, c0, c1) of an image of height x width."""
    side = min(height, width)
    r0 = (height - side) // 2
    c0 = (width - side) // 2
    return r0, r0 + side, c0, c0 + side


class ImageFolderDataset(Dataset):
    """Images of a folder as `Sample` dicts, for object discovery (no set-prediction targets).

    Args:
        root: the folder (see the module docstring for the layout).
        task: only "object_discovery" (a folder has no set-prediction targets).
        resolution: output (H, W) or one int; images are resized to it bilinearly (masks
            nearest).
        crop: None (resize the whole image), "center" (the largest centred square, per image) or
            a box (r0, r1, c0, c1) in source pixels applied to every image.

    Items, in file-name order:
        image float32 [3, H, W] in [-1, 1]
        mask  int64 [H, W], 0 = background          (only when DIR/masks exists)
    """

    def __init__(
        self,
        root: str | Path,
        task: str = "object_discovery",
        resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
        crop: CropOption = None,
    ) -> None:
        self.root = Path(root).expanduser()
        self.task = normalize_task(task)
        if self.task != "object_discovery":
            raise DataError(
                f"image folder {self.root} has no set-prediction targets; use task "
                f"object_discovery, or CLEVR / TFDS CLEVR data for set prediction"
            )
        self.resolution = parse_resolution(resolution)
        self.crop = parse_crop(crop, {"center": CENTER, "centre": CENTER})
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")

        image_dir = self.root / "images"
        if image_dir.is_dir():
            self.image_paths = _list_image_files(image_dir)
            if not self.image_paths:
                raise DataError(f"image folder {image_dir} holds no .png, .jpg or .jpeg files")
        else:
            self.image_paths = _list_image_files(self.root)
            if not self.image_paths:
                raise DataError(
                    f"image folder {self.root} has no images/ subfolder and no .png, .jpg or "
                    f".jpeg files"
                )
            image_dir = self.root
        self.image_dir = image_dir
        self.mask_paths = self._find_masks() if image_dir != self.root else None

    def _find_masks(self) -> list[Path] | None:
        mask_dir = self.root / "masks"
        if not mask_dir.is_dir():
            return None
        stems: dict[str, Path] = {}
        for path in self.image_paths:
            if path.stem in stems:
                raise DataError(
                    f"images {stems[path.stem].name} and {path.name} in {self.image_dir} share "
                    f"the stem {path.stem!r}, so {mask_dir / (path.stem + '.png')} is ambiguous"
                )
            stems[path.stem] = path
        present = {p.name for p in mask_dir.iterdir()}
        for path in self.image_paths:
            if path.stem + ".png" not in present:
                raise DataError(
                    f"mask file {mask_dir / (path.stem + '.png')} is missing (image {path.name} "
                    f"exists and {mask_dir} is present)"
                )
        return [mask_dir / (p.stem + ".png") for p in self.image_paths]

    @property
    def has_masks(self) -> bool:
        """Whether items carry a `mask` (DIR/masks exists)."""
        return self.mask_paths is not None

    def __len__(self) -> int:
        return len(self.image_paths)

    def _box(self, height: int, width: int, path: Path) -> Box | None:
        if self.crop is None:
            return None
        if self.crop == CENTER:
            return center_square(height, width)
        check_crop_fits(self.crop, (height, width), f"image file {path}")
        return self.crop  # type: ignore[return-value]

    def __getitem__(self, item: int) -> Sample:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} images")
        item = item % len(self)
        path = self.image_paths[item]
        pixels = read_image(path)
        height, width = pixels.shape[:2]
        box = self._box(height, width, path)
        image = resize_image(crop_tensor(to_unit_range(pixels), box), self.resolution)
        sample: Sample = {"image": image.clamp(-1.0, 1.0)}
        if self.mask_paths is not None:
            mask_path = self.mask_paths[item]
            ids = read_id_mask(mask_path)
            if ids.shape != (height, width):
                raise DataError(
                    f"mask file {mask_path} is {ids.shape[0]}x{ids.shape[1]} but its image "
                    f"{path.name} is {height}x{width} (height x width)"
                )
            mask = torch.from_numpy(ids.astype(np.int64))
            sample["mask"] = resize_mask(crop_tensor(mask, box), self.resolution)
        return sample

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={str(self.root)!r}, items={len(self)}, "
            f"masks={self.has_masks}, crop={self.crop!r})"
        )

