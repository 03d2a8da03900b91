"""Procedural sprite videos (dataset spec `procedural-video-sprites`): the 2-D sprites of
`slotlab.data.sprites` moving over T frames.

Each object moves at a constant velocity (pixels per frame) and bounces off the image border
(its centre is reflected at radius from the edge), optionally spinning at a constant rate. The
depth order is fixed (object i + 1 covers object i), so occlusions change as objects pass each
other. Per frame: the image, instance masks with identities kept over time (i + 1 = object i in
every frame), boxes and centre points, and the exact optical flow: a pixel centre p of object i
at frame t moves rigidly to c_s + R(theta_s - theta_t)(p - c_t) in frame s (c the centre, theta
the angle), so the flow of every pixel follows from the objects' states. Deterministic per (seed,
split, index); the first frame shows every object with at least `min_pixels` pixels.

    clip = sprite_video(np.random.default_rng(0), num_frames=6)
    ds = ProceduralVideoSpritesDataset("train", num=1000)    # items: see slotlab.data.video
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from slotlab.data.procedural import split_seed
from slotlab.data.sprites import (
    _SHAPE_SCALE,
    BACKGROUNDS,
    SPRITE_SHAPES,
    _background_colour,
    _default_min_pixels,
    _inside,
    _random_colours,
)
from slotlab.data.video import GeneratedVideoDataset, VideoClip, check_motion
from slotlab.errors import ConfigError

__all__ = ["ProceduralVideoSpritesDataset", "SpriteClip", "sprite_video"]


@dataclass
class SpriteClip(VideoClip):
    """One sprite video (`VideoClip`) and the objects' states (centres [T + 2, n, 2] as (x, y)
    pixels and angles [T + 2, n] in degrees, from one step before the clip to one after)."""

    centres: np.ndarray
    angles: np.ndarray
    objects: list[dict[str, Any]]


def _trajectories(start: np.ndarray, velocity: np.ndarray, low: np.ndarray, high: np.ndarray,
                  steps: int) -> np.ndarray:
    """Positions [steps, n, 2] from `start` moving by `velocity` per step, reflected at `low` /
    `high` (per object and axis)."""
    pos, vel = start.copy(), velocity.copy()
    out = [pos.copy()]
    for _ in range(steps - 1):
        pos = pos + vel
        for _ in range(4):  # a fast object may reflect more than once per step
            below, above = pos < low, pos > high
            if not (below.any() or above.any()):
                break
            pos = np.where(below, 2 * low - pos, np.where(above, 2 * high - pos, pos))
            vel = np.where(below | above, -vel, vel)
        out.append(np.clip(pos, low, high))
    return np.stack(out)


def _paint(size: tuple[int, int], background: np.ndarray, objects: list[dict[str, Any]],
           colours: np.ndarray, centres: np.ndarray, angles: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """One frame: image uint8 [H, W, 3] and mask uint8 [H, W] (painter's order)."""
    height, width = size
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[:] = background
    mask = np.zeros((height, width), dtype=np.uint8)
    ys = np.arange(height, dtype=np.float64)[:, None] + 0.5
    xs = np.arange(width, dtype=np.float64)[None, :] + 0.5
    for k, obj in enumerate(objects):
        x, y = centres[k]
        radius = obj["radius"]
        r0, r1 = max(int(y - radius) - 1, 0), min(int(y + radius) + 2, height)
        c0, c1 = max(int(x - radius) - 1, 0), min(int(x + radius) + 2, width)
        if r0 >= r1 or c0 >= c1:
            continue
        dx, dy = xs[:, c0:c1] - x, ys[r0:r1, :] - y
        cos, sin = math.cos(math.radians(angles[k])), math.sin(math.radians(angles[k]))
        inside = _inside(obj["shape"], cos * dx + sin * dy, -sin * dx + cos * dy, radius,
                         obj["aspect"])
        image[r0:r1, c0:c1][inside] = colours[k]
        mask[r0:r1, c0:c1][inside] = k + 1
    return image, mask


def _flow(mask: np.ndarray, centres_t: np.ndarray, angles_t: np.ndarray,
          centres_s: np.ndarray, angles_s: np.ndarray) -> np.ndarray:
    """Flow [H, W, 2] (d_row, d_col) of the pixels of `mask` (frame t) towards frame s."""
    flow = np.zeros((*mask.shape, 2), dtype=np.float64)
    for k in range(len(centres_t)):
        rows, cols = np.nonzero(mask == k + 1)
        if not rows.size:
            continue
        px, py = cols + 0.5 - centres_t[k, 0], rows + 0.5 - centres_t[k, 1]
        theta = math.radians(angles_s[k] - angles_t[k])
        cos, sin = math.cos(theta), math.sin(theta)
        # same local coordinates in both frames: offset_s = R(theta_s - theta_t) offset_t
        qx = centres_s[k, 0] + cos * px - sin * py
        qy = centres_s[k, 1] + sin * px + cos * py
        flow[rows, cols, 0] = qy - (rows + 0.5)
        flow[rows, cols, 1] = qx - (cols + 0.5)
    return flow.astype(np.float32)


def sprite_video(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 64),
    num_frames: int = 6,
    min_objects: int = 2,
    max_objects: int = 5,
    *,
    background: str = "random",
    min_pixels: int | None = None,
    scale_range: tuple[float, float] = (0.09, 0.2),
    speed_range: tuple[float, float] = (0.02, 0.06),
    rotation_speed: float = 0.0,
    max_tries: int = 200,
) -> SpriteClip:
    """Draw one sprite video.

    Args:
        rng: the random generator (consumed).
        size: (height, width).
        num_frames: T.
        min_objects, max_objects: the object count is uniform in this inclusive range.
        background: as `render_sprites` ("random", "greyscale", "grey", "black").
        min_pixels: visible pixels every object keeps in the first frame (default: 15 at 64x64,
            scaled by area); later frames may hide an object.
        scale_range: object radius as a fraction of min(height, width).
        speed_range: speed in fractions of min(height, width) per frame (random direction).
        rotation_speed: the largest spin in degrees per frame (uniform in +-rotation_speed);
            0 = no rotation.
        max_tries: draws before giving up with a ConfigError.
    """
    height, width = size
    side = min(height, width)
    min_pixels = _default_min_pixels(height, width) if min_pixels is None else int(min_pixels)
    steps = num_frames + 2  # one step before the clip and one after, for the flow at its ends
    for _ in range(max_tries):
        bg = _background_colour(rng, background)
        num = int(rng.integers(min_objects, max_objects + 1))
        kinds = rng.integers(len(SPRITE_SHAPES), size=num)
        radii = rng.uniform(*scale_range, size=num) * side
        start = np.stack([rng.uniform(0.1 * width, 0.9 * width, size=num),
                          rng.uniform(0.1 * height, 0.9 * height, size=num)], axis=-1)
        rotations = rng.uniform(0.0, 360.0, size=num)
        aspects = rng.uniform(0.45, 0.75, size=num)
        colours = _random_colours(rng, num, bg)
        speeds = rng.uniform(*speed_range, size=num) * side
        directions = rng.uniform(0.0, 2.0 * math.pi, size=num)
        spins = rng.uniform(-rotation_speed, rotation_speed, size=num)
        objects = []
        for k in range(num):
            shape = SPRITE_SHAPES[int(kinds[k])]
            objects.append({
                "shape": shape,
                "color": colours[k].tolist(),
                "radius": float(radii[k]) * _SHAPE_SCALE[shape],
                "aspect": float(aspects[k]) if shape == "ellipse" else 1.0,
                "velocity": [float(speeds[k] * math.cos(directions[k])),
                             float(speeds[k] * math.sin(directions[k]))],
                "spin": float(spins[k]),
            })
        velocity = np.array([o["velocity"] for o in objects])
        # bounce: the centre stays at least min(radius, a third of the side) from the edges
        margin = np.minimum([o["radius"] for o in objects], side / 3.0)[:, None]
        low, high = margin, np.array([[width, height]]) - margin
        first = np.clip(start - velocity, low, high)  # the state one step before the clip
        centres = _trajectories(first, velocity, low, high, steps)  # [T + 2, n, 2]
        angles = rotations[None] + spins[None] * (np.arange(steps) - 1.0)[:, None]
        frames, masks = zip(*(_paint(size, bg, objects, colours, centres[s], angles[s])
                              for s in range(1, num_frames + 1)), strict=True)
        counts = np.bincount(masks[0].ravel(), minlength=num + 1)[1:]
        if np.all(counts >= min_pixels):
            break
    else:
        raise ConfigError(f"could not draw {min_objects}-{max_objects} moving sprites that each "
                          f"show {min_pixels} pixels in the first {height}x{width} frame; lower "
                          f"min_pixels or max_objects")
    backward = np.stack([_flow(masks[t], centres[t + 1], angles[t + 1], centres[t], angles[t])
                         for t in range(num_frames)])
    forward = np.stack([_flow(masks[t], centres[t + 1], angles[t + 1], centres[t + 2],
                              angles[t + 2]) for t in range(num_frames)])
    return SpriteClip(np.stack(frames), np.stack(masks), backward, forward, centres, angles,
                      objects)


class ProceduralVideoSpritesDataset(GeneratedVideoDataset):
    """Sprite videos made on the fly (no disk). Items: see `slotlab.data.video`.

    Args: those of `GeneratedVideoDataset` and
        min_objects, max_objects: object count range (default 2-5).
        background: "random", "greyscale", "grey" or "black".
        min_pixels: visible pixels per object in the first frame (default 15 at 64x64, scaled).
        min_speed, max_speed: speed range as fractions of min(H, W) per frame.
    """

    noun = "sprite videos"

    def __init__(
        self,
        split: str = "train",
        task: str = "video",
        num: int = 10000,
        seed: int = 0,
        resolution: int | tuple[int, int] = (64, 64),
        num_frames: int = 6,
        min_objects: int = 2,
        max_objects: int = 5,
        max_instances: int | None = None,
        background: str = "random",
        min_pixels: int | None = None,
        min_speed: float = 0.02,
        max_speed: float = 0.06,
        rotation_speed: float = 0.0,
    ) -> None:
        super().__init__(split, task, num, seed, resolution, num_frames, min_objects, max_objects,
                         max_instances, object_limit=255, limit_reason="uint8 masks")
        if background not in BACKGROUNDS:
            raise ConfigError(f"background must be one of {', '.join(BACKGROUNDS)}, got "
                              f"{background!r}")
        self.options["background"] = background
        self.options.update(check_motion(min_pixels, min_speed, max_speed, rotation_speed))

    def clip(self, item: int) -> SpriteClip:
        """The clip of item `item` (deterministic in seed, split and item)."""
        rng = np.random.default_rng(split_seed(self.seed, self.split, item))
        return sprite_video(rng, self.resolution, self.num_frames, **self.options)
