"""The official CLEVR preprocessing, the common sample format, and resizing helpers.

Official pipeline (google-research `slot_attention/data.py`, `preprocess_clevr`):

    x = float32(uint8 image) / 255; x = (x - 0.5) * 2          # [-1, 1]
    object discovery only: x = x[29:221, 64:256]               # 192x192 "centre" crop
    x = tf.image.resize(x, (128, 128), BILINEAR)                # half-pixel centres, no antialias
    x = clip(x, -1, 1)

Set-prediction targets: per object (3d_coords + 3) / 6, one-hot size(2), material(2), shape(3),
colour(8), objectness 1 -> 19 dims, zero-padded to `max_objects` rows.

Every dataset in `slotlab.data` yields the same sample, a plain dict (so the default DataLoader
collate works):

    image  float32 [3, H, W] in [-1, 1]
    mask   int64 [H, W] instance ids, 0 = background            (only when the source has masks)
    target float32 [K, 19] set-prediction targets               (only for task "set_prediction")
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F

from slotlab.data.clevr_vocab import COLORS, MATERIALS, SHAPES, SIZES
from slotlab.data.options import Box, CropOption, parse_crop
from slotlab.errors import DataError
from slotlab.tasks import normalize_task

TARGET_DIM = 19  # 3 coords + 2 size + 2 material + 3 shape + 8 colour + 1 objectness

OFFICIAL_RESOLUTION = (128, 128)
OFFICIAL_CROP = (29, 221, 64, 256)  # rows 29:221, cols 64:256 (object discovery only)
OFFICIAL_MAX_OBJECTS = {"object_discovery": 6, "set_prediction": 10}


class Sample(TypedDict, total=False):
    """One training/evaluation example (see the module docstring for shapes)."""

    image: torch.Tensor
    mask: torch.Tensor
    target: torch.Tensor


def to_unit_range(image_uint8: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, C] -> float32 [C, H, W] in [-1, 1], exactly as the official code scales."""
    x = torch.as_tensor(np.asarray(image_uint8))
    if x.dtype != torch.uint8 or x.ndim != 3:
        raise ValueError(f"expected a uint8 [H, W, C] image, got {x.dtype} {tuple(x.shape)}")
    x = x.to(torch.float32)
    x = ((x / 255.0) - 0.5) * 2.0
    return x.permute(2, 0, 1).contiguous()


def normalize_batch_image(image: torch.Tensor) -> torch.Tensor:
    """A batch image as float in [-1, 1]: uint8 (e.g. from `cache:` data with `as_uint8=True`,
    normalised on the GPU) becomes x / 127.5 - 1; float input is returned unchanged."""
    if image.dtype == torch.uint8:
        return image.float().div_(127.5).sub_(1.0)
    return image


def resize_image(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear resize of [C, H, W] (or [B, C, H, W]) like TF2 `tf.image.resize` (no antialias)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    batched = image.ndim == 4
    x = image if batched else image[None]
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=False)
    return x if batched else x[0]


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize an integer id map [H, W] as `resize_image` resizes its image: each id's indicator
    map is resized bilinearly (half-pixel centres, no antialias) and each pixel takes the id of
    the largest weight, so a pixel's label is the id that makes up most of its colour (a 2x
    reduction: the majority of each 2x2 block; a single source pixel's id would sit half a pixel
    off the image's box average). Ties go to the nearest source pixel's id. No id is invented."""
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    ids = mask.unique()  # sorted
    index = torch.searchsorted(ids, mask.contiguous())  # [H, W] in 0..len(ids) - 1
    one_hot = F.one_hot(index, len(ids)).permute(2, 0, 1)[None].float()  # [1, G, H, W]
    weights = F.interpolate(one_hot, size=size, mode="bilinear", align_corners=False)[0]
    nearest = F.interpolate(index[None, None].float(), size=size, mode="nearest-exact")
    weights.scatter_add_(0, nearest[0].long(), torch.full_like(weights[:1], 1e-3))  # ties
    return ids[weights.argmax(dim=0)].to(mask.dtype)


def crop(x: torch.Tensor, box: Box | None) -> torch.Tensor:
    """Crop the last two axes to rows box[0]:box[1], cols box[2]:box[3] (None = no crop)."""
    if box is None:
        return x
    r0, r1, c0, c1 = box
    h, w = x.shape[-2:]
    if not (0 <= r0 < r1 <= h and 0 <= c0 < c1 <= w):
        raise ValueError(f"crop box {box} does not fit an image of {h}x{w}")
    return x[..., r0:r1, c0:c1]


_crop_tensor = crop  # `clevr_preprocess` has an option of the same name


def default_crop(task: str) -> Box | None:
    """The official crop for `task`: rows 29:221, cols 64:256 for object discovery, none else."""
    return OFFICIAL_CROP if normalize_task(task) == "object_discovery" else None


def clevr_preprocess(
    image_uint8: np.ndarray | torch.Tensor,
    task: str,
    resolution: tuple[int, int] = OFFICIAL_RESOLUTION,
    crop: CropOption = "official",
) -> torch.Tensor:
    """The official CLEVR image pipeline: uint8 [H, W, 3] -> float32 [3, *resolution] in [-1, 1].

    `crop`: "official" (the official crop for `task`: object discovery only), None or a box
    (r0, r1, c0, c1); see `slotlab.data.options`. `resolution` is (height, width).
    """
    box = parse_crop(crop, {"official": default_crop(task)})
    x = to_unit_range(image_uint8)
    x = _crop_tensor(x, box)
    x = resize_image(x, resolution)
    return x.clamp(-1.0, 1.0)


def _label_index(value: Any, names: Sequence[str], field: str) -> int:
    if isinstance(value, str):
        if value not in names:
            raise DataError(f"unknown {field} {value!r}; expected one of {', '.join(names)}")
        return names.index(value)
    index = int(value)
    if not 0 <= index < len(names):
        raise DataError(f"{field} index {index} out of range 0..{len(names) - 1}")
    return index


def clevr_target(objects: Sequence[Mapping[str, Any]], max_objects: int = 10) -> torch.Tensor:
    """Official set-prediction target [max_objects, 19] from CLEVR objects.

    Each object has `3d_coords` (3 floats) and `size`, `material`, `shape`, `color` as CLEVR
    names or TFDS class indices. Rows past the objects are zero.
    """
    if len(objects) > max_objects:
        raise DataError(f"scene has {len(objects)} objects, more than max_objects={max_objects}")
    target = np.zeros((max_objects, TARGET_DIM), dtype=np.float32)
    for i, obj in enumerate(objects):
        coords = np.asarray(obj["3d_coords"], dtype=np.float32)
        if coords.shape != (3,):
            raise DataError(f"object {i}: 3d_coords must have 3 values, got {coords.shape}")
        target[i, 0:3] = (coords + np.float32(3.0)) / np.float32(6.0)
        target[i, 3 + _label_index(obj["size"], SIZES, "size")] = 1.0
        target[i, 5 + _label_index(obj["material"], MATERIALS, "material")] = 1.0
        target[i, 7 + _label_index(obj["shape"], SHAPES, "shape")] = 1.0
        target[i, 10 + _label_index(obj["color"], COLORS, "color")] = 1.0
        target[i, 18] = 1.0
    return torch.from_numpy(target)
