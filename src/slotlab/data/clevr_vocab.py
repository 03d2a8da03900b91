"""CLEVR's vocabulary and camera, in one place for the data readers, the renderer and the plots.

The attribute names are in the class-label order of TFDS `clevr` (the order the official
set-prediction targets one-hot encode). The colours' RGB values are those CLEVR renders with
(its `properties.json`). The camera is CLEVR's nominal Blender camera (35 mm lens, 32 mm sensor
fitted to the width of the 480x320 frame) looking at the origin; CLEVR jitters its position by
up to +-0.5 per axis and scene.
"""

from __future__ import annotations

__all__ = [
    "CAMERA_LOCATION",
    "CLEVR_RGB",
    "COLORS",
    "FOCAL_OVER_SENSOR",
    "MATERIALS",
    "NATIVE_SIZE",
    "SHAPES",
    "SIZES",
    "SIZE_SCALE",
]

SIZES = ("small", "large")
MATERIALS = ("rubber", "metal")
SHAPES = ("cube", "sphere", "cylinder")
COLORS = ("gray", "blue", "brown", "yellow", "red", "green", "purple", "cyan")

CLEVR_RGB: dict[str, tuple[int, int, int]] = {
    "gray": (87, 87, 87),
    "red": (173, 35, 35),
    "blue": (42, 75, 215),
    "green": (29, 105, 20),
    "brown": (129, 74, 25),
    "purple": (129, 38, 192),
    "cyan": (41, 208, 208),
    "yellow": (255, 238, 51),
}
SIZE_SCALE = {"small": 0.35, "large": 0.7}  # half extent of an object of each size

CAMERA_LOCATION = (7.358891487121582, -6.925790786743164, 4.958309173583984)
FOCAL_OVER_SENSOR = 35.0 / 32.0
NATIVE_SIZE = (480, 320)  # (width, height) of CLEVR v1.0 images, the order Pillow uses
