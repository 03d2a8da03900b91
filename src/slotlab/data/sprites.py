"""Procedural 2-D sprites (dataset spec `procedural-sprites`): fast data for CPU experiments.

Flat coloured shapes (triangles, squares, pentagons, hexagons, discs, ellipses, stars) of random
size, rotation and colour, painted one over the other on a plain background, with instance
masks (0 = background, i + 1 = object i, after occlusion). In the spirit of Multi-dSprites:
64x64 by default, 2-6 objects, hard edges, every object keeps a minimum number of visible
pixels. Deterministic per (seed, split, index); vectorised numpy, thousands of images/s.

    image, mask, objects = render_sprites(np.random.default_rng(0))
    ds = ProceduralSpritesDataset("train", num=10000)
"""

from __future__ import annotations

import json
import math
import multiprocessing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from slotlab.data.build import usable_cores
from slotlab.data.options import parse_resolution
from slotlab.data.preprocess import Sample, to_unit_range
from slotlab.data.procedural.scenes import split_seed
from slotlab.data.procedural.writer import prepare_output_dir
from slotlab.errors import ConfigError
from slotlab.io import atomic_write
from slotlab.tasks import normalize_task

__all__ = [
    "BACKGROUNDS",
    "SPRITE_SHAPES",
    "ProceduralSpritesDataset",
    "generate_sprites_dir",
    "render_sprites",
    "sprites_sample",
]

SPRITE_SHAPES = ("triangle", "square", "pentagon", "hexagon", "disc", "ellipse", "star")
BACKGROUNDS = ("random", "greyscale", "grey", "black")
_SIDES = {"triangle": 3, "square": 4, "pentagon": 5, "hexagon": 6, "star": 5}
# Circumradius multipliers that give the shapes roughly equal areas.
_SHAPE_SCALE = {
    "triangle": 1.3,
    "square": 1.1,
    "pentagon": 1.05,
    "hexagon": 1.0,
    "disc": 0.95,
    "ellipse": 1.15,
    "star": 1.35,
}
_STAR_INNER = 0.45  # inner / outer radius of a star
_MIN_COLOUR_DISTANCE = 80.0  # RGB distance between an object and the background


def _default_min_pixels(height: int, width: int) -> int:
    """15 visible pixels at 64x64, scaled by area (at least 4)."""
    return max(4, round(15 * height * width / 4096))


def _hsv_to_rgb(h: Any, s: Any, v: Any) -> np.ndarray:
    """HSV in [0, 1] -> RGB in [0, 1] (scalars, or arrays broadcasting against [..., 1])."""
    k = (np.array([5.0, 3.0, 1.0]) + np.asarray(h) * 6.0) % 6.0
    return v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)


def _random_colours(rng: np.random.Generator, num: int, background: np.ndarray) -> np.ndarray:
    """`num` saturated colours [num, 3] uint8, each far enough from `background`."""
    colours = np.zeros((num, 3), dtype=np.uint8)
    todo = np.arange(num)
    while todo.size:
        hsv = rng.uniform([0.0, 0.45, 0.5], [1.0, 1.0, 1.0], size=(todo.size, 3))
        rgb = np.round(_hsv_to_rgb(hsv[:, :1], hsv[:, 1:2], hsv[:, 2:]) * 255.0)
        far = np.sqrt(((rgb - background) ** 2).sum(-1)) >= _MIN_COLOUR_DISTANCE
        colours[todo[far]] = rgb[far].astype(np.uint8)
        todo = todo[~far]
    return colours


def _background_colour(rng: np.random.Generator, background: str) -> np.ndarray:
    if background == "greyscale":  # a random grey level, as Multi-dSprites colored_on_grayscale
        return np.full(3, rng.integers(0, 256), dtype=np.uint8)
    if background == "grey":
        return np.array([128, 128, 128], dtype=np.uint8)
    if background == "black":
        return np.zeros(3, dtype=np.uint8)
    rgb = _hsv_to_rgb(rng.uniform(), rng.uniform(0.0, 0.35), rng.uniform(0.15, 0.85))
    return np.round(rgb * 255.0).astype(np.uint8)


def _inside(shape: str, u: np.ndarray, v: np.ndarray, radius: float, aspect: float) -> np.ndarray:
    """Boolean mask of local points (u, v) (object frame, pixels) inside the shape."""
    if shape == "disc":
        return u * u + v * v <= radius * radius
    if shape == "ellipse":
        return (u / radius) ** 2 + (v / (aspect * radius)) ** 2 <= 1.0
    n = _SIDES[shape]
    inner = radius * (_STAR_INNER if shape == "star" else math.cos(math.pi / n))
    # Fold the angle into [0, pi/n]: 0 points at a tip, pi/n at the next inner vertex; the
    # point is inside if it is on the centre's side of the edge tip -> inner vertex.
    sector = 2.0 * math.pi / n
    theta = np.mod(np.arctan2(v, u), sector)
    phi = np.minimum(theta, sector - theta)
    r = np.sqrt(u * u + v * v)
    px, py = r * np.cos(phi), r * np.sin(phi)
    ax, ay = radius, 0.0
    bx, by = inner * math.cos(math.pi / n), inner * math.sin(math.pi / n)
    # cross((B - A), (P - A)) >= 0 on the centre's side (the centre gives a positive value).
    return (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0.0


def render_sprites(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 64),
    min_objects: int = 2,
    max_objects: int = 6,
    *,
    background: str = "random",
    min_pixels: int | None = None,
    scale_range: tuple[float, float] = (0.09, 0.2),
    max_tries: int = 200,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Paint one sprites image.

    Args:
        rng: the random generator (consumed).
        size: (height, width) in pixels.
        min_objects, max_objects: the object count is uniform in this inclusive range.
        background: "random" (a random low-saturation colour), "greyscale" (a random grey
            level, as Multi-dSprites colored_on_grayscale), "grey" (128) or "black".
        min_pixels: visible pixels every object must keep after occlusion (default: 15 at
            64x64, scaled by area); scenes that fail are re-drawn.
        scale_range: object radius as a fraction of min(height, width).
        max_tries: scene draws before giving up with a ConfigError.
    Returns:
        image uint8 [H, W, 3], mask uint8 [H, W] (0 = background, i + 1 = object i; later
        objects cover earlier ones) and the objects (shape, color [r, g, b], position [x, y] in
        pixels, radius in pixels, rotation in degrees, aspect, visible_pixels).
    """
    height, width = int(size[0]), int(size[1])
    if height < 4 or width < 4:
        raise ConfigError(f"sprites need an image of at least 4x4 pixels, got {size}")
    if not 1 <= min_objects <= max_objects:
        raise ConfigError(f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}")
    if max_objects > 255:
        raise ConfigError(f"at most 255 objects fit a uint8 mask, got max_objects={max_objects}")
    if background not in BACKGROUNDS:
        raise ConfigError(f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}")
    min_pixels = _default_min_pixels(height, width) if min_pixels is None else int(min_pixels)
    side = min(height, width)
    ys = np.arange(height, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float32)[None, :] + 0.5

    for _ in range(max_tries):
        bg = _background_colour(rng, background)
        image = np.empty((height, width, 3), dtype=np.uint8)
        image[:] = bg
        mask = np.zeros((height, width), dtype=np.uint8)
        num = int(rng.integers(min_objects, max_objects + 1))
        # All random draws of the scene at once (scalar draws dominate the cost otherwise).
        kinds = rng.integers(len(SPRITE_SHAPES), size=num)
        radii = rng.uniform(*scale_range, size=num) * side
        centres_x = rng.uniform(0.1 * width, 0.9 * width, size=num)
        centres_y = rng.uniform(0.1 * height, 0.9 * height, size=num)
        rotations = rng.uniform(0.0, 360.0, size=num)
        aspects = rng.uniform(0.45, 0.75, size=num)
        colours = _random_colours(rng, num, bg)
        objects: list[dict[str, Any]] = []
        for k in range(num):
            shape = SPRITE_SHAPES[int(kinds[k])]
            radius = float(radii[k]) * _SHAPE_SCALE[shape]
            x, y, rotation = float(centres_x[k]), float(centres_y[k]), float(rotations[k])
            aspect = float(aspects[k]) if shape == "ellipse" else 1.0
            # Paint inside the bounding box only.
            r0, r1 = max(int(y - radius) - 1, 0), min(int(y + radius) + 2, height)
            c0, c1 = max(int(x - radius) - 1, 0), min(int(x + radius) + 2, width)
            if r0 < r1 and c0 < c1:
                dx, dy = xs[:, c0:c1] - x, ys[r0:r1, :] - y
                cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
                u = cos * dx + sin * dy
                v = -sin * dx + cos * dy
                inside = _inside(shape, u, v, radius, aspect)
                image[r0:r1, c0:c1][inside] = colours[k]
                mask[r0:r1, c0:c1][inside] = k + 1
            objects.append(
                {
                    "shape": shape,
                    "color": colours[k].tolist(),
                    "position": [x, y],
                    "radius": radius,
                    "rotation": rotation,
                    "aspect": aspect,
                }
            )
        counts = np.bincount(mask.ravel(), minlength=num + 1)[1:]
        if np.all(counts >= min_pixels):
            for obj, count in zip(objects, counts):
                obj["visible_pixels"] = int(count)
            return image, mask, objects
    raise ConfigError(
        f"could not draw {min_objects}-{max_objects} sprites that each keep {min_pixels} "
        f"visible pixels in {height}x{width}; lower min_pixels or max_objects"
    )


def sprites_sample(
    seed: int, split: str, index: int, size: tuple[int, int] = (64, 64), **options: Any
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """`render_sprites` for sample `index` of `split`: deterministic in (seed, split, index)."""
    rng = np.random.default_rng(split_seed(seed, split, index))
    return render_sprites(rng, size, **options)


class ProceduralSpritesDataset(Dataset):
    """2-D sprites made on the fly, as `Sample` dicts (object discovery only).

    Args:
        split: any split name; it only seeds the images.
        task: must be "object_discovery" (sprites have no set-prediction targets).
        num: the number of items.
        seed: the dataset seed.
        resolution: (H, W) or one int.
        min_objects, max_objects: object count range (default 2-6).
        background: "random", "greyscale", "grey" or "black".
        min_pixels: visible pixels per object (default 15 at 64x64, scaled by area).

    Items: image float32 [3, H, W] in [-1, 1]; mask int64 [H, W] (0 = background).
    """

    def __init__(
        self,
        split: str = "train",
        task: str = "object_discovery",
        num: int = 10000,
        seed: int = 0,
        resolution: tuple[int, int] = (64, 64),
        min_objects: int = 2,
        max_objects: int = 6,
        background: str = "random",
        min_pixels: int | None = None,
    ) -> None:
        task = normalize_task(task)
        if task != "object_discovery":
            raise ConfigError(
                "procedural sprites support only task object_discovery (they have no "
                "set-prediction attributes); use the procedural CLEVR-style data for set prediction"
            )
        if isinstance(num, bool) or not isinstance(num, int) or num < 0:
            raise ConfigError(f"num must be a non-negative integer, got {num!r}")
        if not 1 <= min_objects <= max_objects:
            raise ConfigError(
                f"need 1 <= min_objects <= max_objects, got {min_objects}, {max_objects}"
            )
        if background not in BACKGROUNDS:
            raise ConfigError(
                f"background must be one of {', '.join(BACKGROUNDS)}, got {background!r}"
            )
        self.split, self.task, self.num, self.seed = str(split), task, num, int(seed)
        self.resolution = parse_resolution(resolution)
        if min(self.resolution) < 4:
            raise ConfigError(f"resolution must be at least 4x4, got {resolution!r}")
        self.options = {
            "min_objects": int(min_objects),
            "max_objects": int(max_objects),
            "background": background,
            "min_pixels": min_pixels,
        }

    def __len__(self) -> int:
        return self.num

    def render(self, item: int) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
        """(image uint8, mask uint8, objects) of item `item`."""
        return sprites_sample(self.seed, self.split, item, self.resolution, **self.options)

    def __getitem__(self, item: int) -> Sample:
        if not -self.num <= item < self.num:
            raise IndexError(f"item {item} out of range for {self.num} sprite images")
        image, mask, _ = self.render(item % self.num)
        return {
            "image": to_unit_range(image),
            "mask": torch.from_numpy(mask.astype(np.int64)),
        }

    def __iter__(self) -> Iterator[Sample]:
        for i in range(self.num):
            yield self[i]

    def __repr__(self) -> str:
        return (
            f"ProceduralSpritesDataset(split={self.split!r}, num={self.num}, seed={self.seed}, "
            f"resolution={self.resolution}, objects={self.options['min_objects']}-"
            f"{self.options['max_objects']}, background={self.options['background']!r})"
        )


def _write_one(job: tuple[str, str, int, int, tuple[int, int], dict[str, Any]]) -> dict[str, Any]:
    root, split, index, seed, hw, options = job
    image, mask, objects = sprites_sample(seed, split, index, hw, **options)
    name = f"SPRITES_{split}_{index:06d}.png"
    Image.fromarray(image, "RGB").save(Path(root, "images", split, name), compress_level=3)
    Image.fromarray(mask, "L").save(Path(root, "masks", split, name), compress_level=3)
    return {"split": split, "image_index": index, "image_filename": name, "objects": objects}


def generate_sprites_dir(
    out: str | Path,
    split: str = "train",
    num: int = 1000,
    seed: int = 0,
    resolution: tuple[int, int] | int | str = (64, 64),
    workers: int | None = None,
    *,
    min_objects: int = 2,
    max_objects: int = 6,
) -> Path:
    """Write `num` sprite images in the CLEVR-like layout under `out`.

    images/{split}/SPRITES_{split}_{000000}.png (RGB), masks/{split}/... (uint8 ids) and
    scenes/SPRITES_{split}_scenes.json ({"info": ..., "scenes": [{..., "objects": [...]}]}).
    `resolution` is (height, width) or one int, like `generate_clevr_dir`; image i is
    `sprites_sample(seed, split, i, resolution, min_objects=..., max_objects=...)`.
    """
    root = Path(out).expanduser()
    height, width = parse_resolution(resolution)
    if width < 4 or height < 4:
        raise ConfigError(f"sprites need an image of at least 4x4 pixels, got {resolution!r}")
    prepare_output_dir(root, split, f"SPRITES_{split}_", num)
    options = {"min_objects": int(min_objects), "max_objects": int(max_objects)}
    jobs = [(str(root), split, i, int(seed), (height, width), options) for i in range(num)]
    workers = usable_cores() if workers is None else workers
    workers = max(1, min(int(workers), num // 256 + 1))  # small jobs: no pool start-up
    if workers == 1:
        scenes = [_write_one(job) for job in jobs]
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            scenes = pool.map(_write_one, jobs, chunksize=64)
    info = {"split": split, "version": "1.0", "note": f"procedural slotlab sprites, seed {seed}"}
    text = json.dumps({"info": info, "scenes": scenes})
    atomic_write(root / "scenes" / f"SPRITES_{split}_scenes.json", lambda f: f.write(text.encode()))
    return root
