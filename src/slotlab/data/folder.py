"""Any folder of images (optionally with instance-id masks) as an object-discovery dataset.

Layouts::

    DIR/images/*.png | *.jpg | *.jpeg      any size, any count (sorted by file name)
    DIR/masks/<same stem>.png              optional; uint8 instance ids, 0 = background

    DIR/images/<split>/*.png ...           split directories (`slotlab data generate` writes
    DIR/masks/<split>/<same stem>.png      images/train, images/val, ...)

A folder without an `images/` subfolder but with image files directly inside it is read as
`DIR/*.png|jpg|jpeg` (no masks). If a masks directory exists, every image must have its mask.

Splits: with split directories, split `s` reads `images/s` ("all": every split directory). A flat
folder is split deterministically: an image is held out ("val") when the SHA-1 of its file name
falls in the first tenth of the hash range (at least one image is held out), the rest is "train";
the assignment of a file never depends on the other files, so adding images keeps it. "all"
reads every image.

Images are fitted to the model's resolution as `crop` says: "center" (default: the largest
centred box of the resolution's aspect ratio, then resized), "pad" (the whole image, padded with
its edge colour to that aspect ratio), "full" (the whole image resized, squashing a different
aspect ratio) or a box (r0, r1, c0, c1) of source pixels.
"""

from __future__ import annotations

import hashlib
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
CENTER, PAD, FULL = "center", "pad", "full"
HELD_OUT = 0.1  # the share of a flat folder's images in its "val" split


def held_out(name: str) -> float:
    """Where a file name falls in [0, 1) by its SHA-1: below HELD_OUT it is held out."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") / 2.0**64


def split_files(paths: list[Path], split: str) -> list[Path]:
    """The files of a flat folder in `split` ("train", "val" or "all"), in file-name order."""
    if split == "all":
        return paths
    if split not in ("train", "val"):
        raise DataError(f"a folder without split directories has the splits train, val (a "
                        f"held-out tenth) and all; {split!r} was asked for")
    val = {p for p in paths if held_out(p.name) < HELD_OUT}
    if not val and len(paths) > 1:  # a tiny folder: hold out the one nearest the range
        val = {min(paths, key=lambda p: held_out(p.name))}
    return [p for p in paths if (p in val) == (split == "val")]


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


def center_box(height: int, width: int, aspect: float) -> Box:
    """The largest centred box (r0, r1, c0, c1) of width / height `aspect` in an image of
    height x width."""
    h, w = height, round(height * aspect)
    if w > width:
        h, w = round(width / aspect), width
    r0, c0 = (height - h) // 2, (width - w) // 2
    return r0, r0 + h, c0, c0 + w


def pad_to_aspect(x: torch.Tensor, aspect: float) -> torch.Tensor:
    """[..., H, W] padded (edge values) on both sides to width / height `aspect`."""
    height, width = x.shape[-2:]
    if width < round(height * aspect):
        extra = round(height * aspect) - width
        pad = (extra // 2, extra - extra // 2, 0, 0)
    else:
        extra = round(width / aspect) - height
        pad = (0, 0, extra // 2, extra - extra // 2)
    if not any(pad):
        return x
    batch = x.reshape(-1, 1, height, width).float()
    return torch.nn.functional.pad(batch, pad, mode="replicate").reshape(
        *x.shape[:-2], height + pad[2] + pad[3], width + pad[0] + pad[1]).to(x.dtype)


class ImageFolderDataset(Dataset):
    """Images of a folder as `Sample` dicts, for object discovery (no set-prediction targets).

    Args:
        root: the folder (see the module docstring for the layouts and splits).
        split: "train", "val", "test" (split directories only) or "all".
        task: only "object_discovery" (a folder has no set-prediction targets).
        resolution: output (H, W) or one int; images are resized to it bilinearly, masks by
            `resize_mask` (each pixel: the id that makes up most of it).
        crop: "center" (default), "pad", "full" or a box (r0, r1, c0, c1) in source pixels
            applied to every image (module docstring).

    Items, in file-name order:
        image float32 [3, H, W] in [-1, 1]
        mask  int64 [H, W], 0 = background          (only when DIR/masks exists)
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        task: str = "object_discovery",
        resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
        crop: CropOption = CENTER,
    ) -> None:
        self.root = Path(root).expanduser()
        self.task = normalize_task(task)
        if self.task != "object_discovery":
            raise DataError(
                f"image folder {self.root} has no set-prediction targets; use task "
                f"object_discovery, or CLEVR / TFDS CLEVR data for set prediction"
            )
        self.resolution = parse_resolution(resolution)
        self.crop = parse_crop(crop, {"center": CENTER, "centre": CENTER, "pad": PAD,
                                      "full": FULL})
        self.split = split
        if not self.root.is_dir():
            raise DataError(f"image folder {self.root} does not exist")

        image_dir = self.root / "images"
        split_dirs = sorted(p.name for p in image_dir.iterdir() if p.is_dir()) \
            if image_dir.is_dir() else []
        if split_dirs:  # images/<split>/ as `slotlab data generate` writes
            names = split_dirs if split == "all" else [split]
            if split != "all" and split not in split_dirs:
                raise DataError(f"image folder {self.root} has the splits {', '.join(split_dirs)}"
                                f" (images/<split>/); {split!r} was asked for")
            self.image_paths, self.mask_paths = [], []
            for name in names:
                paths = _list_image_files(image_dir / name)
                self.image_paths += paths
                masks = self._find_masks(paths, image_dir / name, self.root / "masks" / name)
                self.mask_paths = None if masks is None or self.mask_paths is None \
                    else self.mask_paths + masks
            self.image_dir = image_dir / names[0]
        else:
            flat = image_dir.is_dir()
            self.image_dir = image_dir if flat else self.root
            paths = _list_image_files(self.image_dir)
            if not paths:
                raise DataError(
                    f"image folder {self.image_dir} holds no .png, .jpg or .jpeg files"
                    + ("" if flat else " and has no images/ subfolder"))
            if split == "test":
                raise DataError(f"image folder {self.root} has no split directories: its splits "
                                "are train, val (a held-out tenth) and all")
            self.image_paths = split_files(paths, split)
            self.mask_paths = self._find_masks(self.image_paths, self.image_dir,
                                               self.root / "masks") if flat else None
        if not self.image_paths:
            raise DataError(f"image folder {self.root} has no images in split {split!r}")

    def _find_masks(self, image_paths: list[Path], image_dir: Path,
                    mask_dir: Path) -> list[Path] | None:
        if not mask_dir.is_dir():
            return None
        stems: dict[str, Path] = {}
        for path in image_paths:
            if path.stem in stems:
                raise DataError(
                    f"images {stems[path.stem].name} and {path.name} in {image_dir} share "
                    f"the stem {path.stem!r}, so {mask_dir / (path.stem + '.png')} is ambiguous"
                )
            stems[path.stem] = path
        present = {p.name for p in mask_dir.iterdir()}
        for path in image_paths:
            if path.stem + ".png" not in present:
                raise DataError(
                    f"mask file {mask_dir / (path.stem + '.png')} is missing (image {path.name} "
                    f"exists and {mask_dir} is present)"
                )
        return [mask_dir / (p.stem + ".png") for p in image_paths]

    @property
    def has_masks(self) -> bool:
        """Whether items carry a `mask` (DIR/masks exists)."""
        return self.mask_paths is not None

    def __len__(self) -> int:
        return len(self.image_paths)

    def _box(self, height: int, width: int, path: Path) -> Box | None:
        if self.crop in (None, FULL, PAD):
            return None
        if self.crop == CENTER:
            return center_box(height, width, self.resolution[1] / self.resolution[0])
        check_crop_fits(self.crop, (height, width), f"image file {path}")
        return self.crop  # type: ignore[return-value]

    def _fit(self, x: torch.Tensor, box: Box | None) -> torch.Tensor:
        """Crop (or pad) [..., H, W] to what is then resized to the resolution."""
        if self.crop == PAD:
            return pad_to_aspect(x, self.resolution[1] / self.resolution[0])
        return crop_tensor(x, box)

    def __getitem__(self, item: int) -> Sample:
        if not -len(self) <= item < len(self):
            raise IndexError(f"item {item} out of range for {len(self)} images")
        item = item % len(self)
        path = self.image_paths[item]
        pixels = read_image(path)
        height, width = pixels.shape[:2]
        box = self._box(height, width, path)
        image = resize_image(self._fit(to_unit_range(pixels), box), self.resolution)
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
            sample["mask"] = resize_mask(self._fit(mask, box), self.resolution)
        return sample

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(root={str(self.root)!r}, split={self.split!r}, "
            f"items={len(self)}, masks={self.has_masks}, crop={self.crop!r})"
        )

