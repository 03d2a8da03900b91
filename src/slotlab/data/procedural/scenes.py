"""Sampling CLEVR-style scenes, deterministic in (seed, split, index), as CLEVR scene dicts."""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slotlab.data.clevr_vocab import (
    CAMERA_LOCATION,
    COLORS,
    MATERIALS,
    NATIVE_SIZE,
    SHAPES,
    SIZE_SCALE,
    SIZES,
)
from slotlab.data.procedural.camera import camera_basis, normalize, project
from slotlab.data.procedural.render import KEY_LIGHT, render_ids
from slotlab.errors import ConfigError

__all__ = [
    "CHECK_SIZE",
    "MIN_PIXELS",
    "procedural_scene",
    "sample_scene",
    "scene_to_json",
    "split_seed",
    "visible_pixels",
]

# CLEVR generator defaults (render_images.py): edge distance and directional margin between
# objects, placement tries per object, visible pixels per object at 480x320, jitters.
MIN_DIST = 0.25
MARGIN = 0.4
MAX_TRIES = 50
MIN_PIXELS = 200
CAMERA_JITTER = 0.5
LIGHT_JITTER = 1.0
RELATION_EPS = 0.2

# The visibility test renders instance ids at this size, whatever size the image is rendered
# at, so a scene (and thus the sample of an index) never depends on the output size.
CHECK_SIZE = (240, 160)


def split_seed(seed: int, split: str, index: int) -> np.random.SeedSequence:
    """The seed sequence of sample `index` of `split`: [seed, crc32(split), index]."""
    return np.random.SeedSequence([int(seed), zlib.crc32(split.encode("utf-8")), int(index)])



def _directions(camera_location: Sequence[float]) -> dict[str, list[float]]:
    """CLEVR's `directions`: camera behind/left projected on the ground, plus up/down."""
    _, forward, right, _ = camera_basis(camera_location)
    behind = normalize(np.array([forward[0], forward[1], 0.0]))
    left = normalize(np.array([-right[0], -right[1], 0.0]))
    vec = {
        "behind": behind,
        "front": -behind,
        "left": left,
        "right": -left,
        "above": np.array([0.0, 0.0, 1.0]),
        "below": np.array([0.0, 0.0, -1.0]),
    }
    return {k: [float(x) + 0.0 for x in v] for k, v in vec.items()}


def _relationships(
    objects: Sequence[Mapping[str, Any]], directions: Mapping[str, Sequence[float]]
) -> dict[str, list[list[int]]]:
    """CLEVR's `relationships[name][i]`: the objects j that are `name` of object i."""
    coords = np.array([o["3d_coords"] for o in objects], dtype=np.float64).reshape(-1, 3)
    result = {}
    for name in ("right", "behind", "front", "left"):
        # dot[i, j] = (c_j - c_i) . direction
        dot = (coords[None, :, :] - coords[:, None, :]) @ np.asarray(directions[name])
        result[name] = [
            [j for j in range(len(objects)) if j != i and dot[i, j] > RELATION_EPS]
            for i in range(len(objects))
        ]
    return result



def _pixel_coords(scene: Mapping[str, Any], image_size: tuple[int, int]) -> list[list[float]]:
    """CLEVR `pixel_coords` of every object: [round(u), round(v), depth] in `image_size`."""
    if not scene["objects"]:
        return []
    uvd = project(scene, np.array([o["3d_coords"] for o in scene["objects"]]), image_size)
    return [[int(round(u)), int(round(v)), float(d)] for u, v, d in uvd]


def sample_scene(
    rng: np.random.Generator,
    min_objects: int = 3,
    max_objects: int = 10,
    *,
    min_dist: float = MIN_DIST,
    margin: float = MARGIN,
    camera_jitter: float = CAMERA_JITTER,
    light_jitter: float = LIGHT_JITTER,
    max_tries: int = MAX_TRIES,
    image_size: tuple[int, int] = NATIVE_SIZE,
) -> dict[str, Any]:
    """Sample one CLEVR-style scene (no visibility check; see `procedural_scene`).

    Args:
        rng: the random generator (consumed).
        min_objects, max_objects: the object count is uniform in this inclusive range.
        min_dist: minimum gap between the bounding circles of two objects (world units).
        margin: minimum separation of two objects along each of left/right/front/behind, as in
            CLEVR, so that every spatial relation is unambiguous.
        camera_jitter, light_jitter: uniform jitter (+-) of each coordinate of the camera and
            of the key light.
        max_tries: placement attempts for one object before the whole scene is restarted.
        image_size: (width, height) the `pixel_coords` refer to.
    Returns:
        a dict with the CLEVR scene fields `objects`, `directions`, `relationships` (no split or
        file name) and a `render` entry (camera and lights) that the renderer uses.
    """
    if not 1 <= min_objects <= max_objects:
        raise ConfigError(
            f"need 1 <= min_objects <= max_objects, got min_objects={min_objects}, "
            f"max_objects={max_objects}"
        )
    camera = np.array(CAMERA_LOCATION) + rng.uniform(-camera_jitter, camera_jitter, 3)
    directions = _directions(camera)
    num = int(rng.integers(min_objects, max_objects + 1))

    while True:  # restart the scene when an object cannot be placed
        placed: list[tuple[float, float, float]] = []  # (x, y, bounding radius)
        objects: list[dict[str, Any]] = []
        for _ in range(num):
            size = SIZES[int(rng.integers(len(SIZES)))]
            radius = SIZE_SCALE[size]
            for _ in range(max_tries):
                x, y = rng.uniform(-3.0, 3.0, 2)
                if _placement_ok(x, y, radius, placed, directions, min_dist, margin):
                    break
            else:
                break
            shape = SHAPES[int(rng.integers(len(SHAPES)))]
            half = radius / math.sqrt(2.0) if shape == "cube" else radius
            placed.append((float(x), float(y), half))
            objects.append(
                {
                    "color": COLORS[int(rng.integers(len(COLORS)))],
                    "size": size,
                    "rotation": float(rng.uniform(0.0, 360.0)),
                    "shape": shape,
                    "3d_coords": [float(x), float(y), half],
                    "material": MATERIALS[int(rng.integers(len(MATERIALS)))],
                }
            )
        if len(objects) == num:
            break

    key = np.array(KEY_LIGHT) + rng.uniform(-light_jitter, light_jitter, 3)
    scene: dict[str, Any] = {
        "objects": objects,
        "directions": directions,
        "relationships": _relationships(objects, directions),
        "render": {
            "camera": {"location": [float(c) for c in camera]},  # looking at the origin
            "key_light": [float(c) for c in key],
            "light_scale": float(rng.uniform(0.9, 1.1)),
        },
    }
    for obj, uvd in zip(objects, _pixel_coords(scene, image_size)):
        obj["pixel_coords"] = uvd
    return scene



def _placement_ok(
    x: float,
    y: float,
    radius: float,
    placed: Sequence[tuple[float, float, float]],
    directions: Mapping[str, Sequence[float]],
    min_dist: float,
    margin: float,
) -> bool:
    for xx, yy, rr in placed:
        dx, dy = x - xx, y - yy
        if math.hypot(dx, dy) - radius - rr < min_dist:
            return False
        for name in ("left", "right", "front", "behind"):
            vec = directions[name]
            if 0.0 < dx * vec[0] + dy * vec[1] < margin:
                return False
    return True


def visible_pixels(scene: Mapping[str, Any], size: tuple[int, int] = CHECK_SIZE) -> np.ndarray:
    """Visible pixel count of every object [n] in an id render of the full frame at `size`."""
    ids = render_ids(scene, size[0], size[1], None)
    return np.bincount(ids.ravel(), minlength=len(scene["objects"]) + 1)[1:]


def procedural_scene(
    seed: int,
    split: str,
    index: int,
    min_objects: int = 3,
    max_objects: int = 10,
    *,
    min_pixels: int = MIN_PIXELS,
    image_size: tuple[int, int] = NATIVE_SIZE,
    **sample_options: Any,
) -> dict[str, Any]:
    """The scene of sample `index` of `split`: deterministic in (seed, split, index).

    Scenes are sampled with `sample_scene` until every object shows at least `min_pixels`
    pixels in a 480x320 frame (checked on a 240x160 id render, threshold scaled by area), as
    the CLEVR generator does. The result has the CLEVR fields `split`, `image_index`,
    `image_filename` set as well.
    """
    rng = np.random.default_rng(split_seed(seed, split, index))
    scale = (CHECK_SIZE[0] * CHECK_SIZE[1]) / (NATIVE_SIZE[0] * NATIVE_SIZE[1])
    threshold = min_pixels * scale
    for _ in range(1000):
        scene = sample_scene(rng, min_objects, max_objects, image_size=image_size, **sample_options)
        if np.all(visible_pixels(scene) >= threshold):
            break
    else:  # pragma: no cover - practically unreachable with sane settings
        raise ConfigError(
            f"could not sample a scene with {min_objects}-{max_objects} objects that are all "
            f"visible with >= {min_pixels} pixels; lower min_pixels or max_objects"
        )
    return {
        "split": split,
        "image_index": int(index),
        "image_filename": f"CLEVR_{split}_{int(index):06d}.png",
        **scene,
    }


_JSON_SCENE_KEYS = (
    "split",
    "image_index",
    "image_filename",
    "objects",
    "relationships",
    "directions",
)
_JSON_OBJECT_KEYS = ("color", "size", "rotation", "shape", "3d_coords", "material", "pixel_coords")


def scene_to_json(scene: Mapping[str, Any]) -> dict[str, Any]:
    """The CLEVR scene-JSON fields of `scene` (drops the renderer's private `render` entry)."""
    out = {k: scene[k] for k in _JSON_SCENE_KEYS if k in scene}
    out["objects"] = [{k: o[k] for k in _JSON_OBJECT_KEYS if k in o} for o in scene["objects"]]
    return out


