"""CLEVR's camera for the procedural scenes: its basis, position and projection to pixels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from slotlab.data.clevr_vocab import CAMERA_LOCATION, FOCAL_OVER_SENSOR, NATIVE_SIZE

__all__ = ["camera_basis", "camera_location", "normalize", "project"]


def normalize(v: np.ndarray) -> np.ndarray:
    """Unit vectors along the last axis (of size 3)."""
    return v / np.sqrt(v[..., 0] ** 2 + v[..., 1] ** 2 + v[..., 2] ** 2)[..., None]


def camera_basis(
    location: Sequence[float], look_at: Sequence[float] = (0.0, 0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(eye, forward, right, up) unit vectors of a camera at `location` looking at `look_at`."""
    eye = np.asarray(location, dtype=np.float64)
    forward = normalize(np.asarray(look_at, dtype=np.float64) - eye)
    right = normalize(np.cross(forward, [0.0, 0.0, 1.0]))
    up = np.cross(right, forward)
    return eye, forward, right, up


def camera_location(scene: Mapping[str, Any]) -> list[float]:
    """The camera position of `scene` (its `render` entry; CLEVR's camera when it has none)."""
    camera = (scene.get("render") or {}).get("camera") or {}
    return list(camera.get("location", CAMERA_LOCATION))


def project(
    scene: Mapping[str, Any],
    points: np.ndarray,
    image_size: tuple[int, int] = NATIVE_SIZE,
) -> np.ndarray:
    """Project world points [M, 3] to [M, 3] = (u, v, depth) in an image of (width, height).

    u, v are continuous pixel coordinates (pixel centres at +0.5) of the full frame scaled to
    `image_size`; depth is the distance along the camera axis.
    """
    eye, forward, right, up = camera_basis(camera_location(scene))
    rel = np.asarray(points, dtype=np.float64).reshape(-1, 3) - eye
    depth = rel @ forward
    fx = NATIVE_SIZE[0] * FOCAL_OVER_SENSOR
    u = NATIVE_SIZE[0] / 2 + fx * (rel @ right) / depth
    v = NATIVE_SIZE[1] / 2 - fx * (rel @ up) / depth
    sx, sy = image_size[0] / NATIVE_SIZE[0], image_size[1] / NATIVE_SIZE[1]
    return np.stack([u * sx, v * sy, depth], axis=-1)

