"""Procedural CLEVR-style videos (dataset spec `procedural-video`): the 3-D scenes of
`slotlab.data.procedural` with their objects sliding on the floor over T frames, rendered frame
by frame by the same ray caster.

A scene is sampled as for the still images; each object gets a constant velocity on the floor
(world units per frame, random direction) and optionally a constant spin about the vertical
axis. Objects bounce off the walls of the [-3, 3]^2 placement area and off each other (equal
masses, elastic: the velocity components along the line of centres are exchanged when two
bounding circles touch while approaching). The camera and lights are static. Per frame: the
image, instance masks with identities kept over time (i + 1 = object i in every frame), boxes and
centre points, and the exact optical flow of the surface point seen at each pixel centre: the
camera ray's hit point P on object i moves rigidly with the object, P' = c' + R(theta' - theta)
(P - c) on the floor plane (z unchanged), and its projection in the other frame minus its
projection in this one is the flow (the floor does not move: flow 0). Deterministic per (seed,
split, index); the first frame shows every object with at least `min_pixels` pixels.

    clip = clevr_video(np.random.default_rng(0), num_frames=6)
    ds = ProceduralVideoDataset("train", num=1000)            # items: see slotlab.data.video
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from slotlab.data.clevr_vocab import NATIVE_SIZE
from slotlab.data.procedural import project, render_scene, sample_scene, split_seed
from slotlab.data.procedural.render import _primary, _Shape, _View
from slotlab.data.video import GeneratedVideoDataset, VideoClip, check_int, check_motion
from slotlab.errors import ConfigError

__all__ = ["DEFAULT_WINDOW", "ClevrClip", "ProceduralVideoDataset", "clevr_video"]

# The square middle of the 480x320 CLEVR frame (rows, cols in native pixels): the whole height.
DEFAULT_WINDOW = (0, 320, 80, 400)
FLOOR_LIMIT = 3.0  # object centres stay in [-3, 3]^2, the area scenes are placed in


@dataclass
class ClevrClip(VideoClip):
    """One CLEVR-style video (`VideoClip`) and the scene of every state from one step before the
    clip to one after (T + 2 scene dicts)."""

    scenes: list[dict[str, Any]]


def _simulate(scene: Mapping[str, Any], velocity: np.ndarray, spin: np.ndarray,
              steps: int) -> list[dict[str, Any]]:
    """`steps` scene states: positions move by `velocity` [n, 2] per step with wall and pairwise
    elastic bounces; rotations turn by `spin` [n] degrees per step."""
    objects = scene["objects"]
    pos = np.array([o["3d_coords"][:2] for o in objects], dtype=np.float64)
    radius = np.array([o["3d_coords"][2] * (math.sqrt(2.0) if o["shape"] == "cube" else 1.0)
                       for o in objects])
    rotation = np.array([float(o["rotation"]) for o in objects])
    vel = velocity.astype(np.float64).copy()
    states = []
    for step in range(steps):
        state = copy.deepcopy(dict(scene))
        for k, obj in enumerate(state["objects"]):
            obj["3d_coords"] = [float(pos[k, 0]), float(pos[k, 1]), obj["3d_coords"][2]]
            obj["rotation"] = float(rotation[k])
        state.pop("relationships", None)  # stale once objects move
        states.append(state)
        if step == steps - 1:
            break
        for i in range(len(objects)):  # pairwise bounces, before moving
            for j in range(i + 1, len(objects)):
                d = pos[j] - pos[i]
                dist = float(np.hypot(*d))
                if dist < radius[i] + radius[j] and dist > 0:
                    n = d / dist
                    approach = float((vel[i] - vel[j]) @ n)
                    if approach > 0:
                        vel[i] -= approach * n
                        vel[j] += approach * n
        pos = pos + vel
        for axis in range(2):  # walls
            low, high = pos[:, axis] < -FLOOR_LIMIT, pos[:, axis] > FLOOR_LIMIT
            pos[low, axis] = -2 * FLOOR_LIMIT - pos[low, axis]
            pos[high, axis] = 2 * FLOOR_LIMIT - pos[high, axis]
            vel[low | high, axis] *= -1
        rotation = rotation + spin
    return states


def _hits(scene: Mapping[str, Any], size: tuple[int, int],
          window: Sequence[float]) -> tuple[np.ndarray, np.ndarray, _View]:
    """Object ids [H, W] (0 floor) and hit points [H, W, 3] of the pixel-centre rays."""
    view = _View(scene, size[0], size[1], window)
    ids, t, _ = _primary(view, [_Shape(o) for o in scene["objects"]], want_normal=False)
    points = view.eye.astype(np.float64) + np.where(np.isfinite(t), t, 0.0)[..., None] * \
        view.dirs.astype(np.float64)
    return ids, points, view


def _to_pixels(scene: Mapping[str, Any], points: np.ndarray, view: _View) -> np.ndarray:
    """World points [M, 3] -> continuous (row, col) [M, 2] of the view's grid (pixel centres at
    index + 0.5)."""
    uvd = project(scene, points, NATIVE_SIZE)
    return np.stack([(uvd[:, 1] - view.box[0]) / view.pixel_h,
                     (uvd[:, 0] - view.box[2]) / view.pixel_w], axis=-1)


def _flow(ids: np.ndarray, points: np.ndarray, view: _View, here: Mapping[str, Any],
          there: Mapping[str, Any]) -> np.ndarray:
    """Flow [H, W, 2] (d_row, d_col) of the object pixels from state `here` to `there`."""
    flow = np.zeros((*ids.shape, 2), dtype=np.float64)
    for k, (a, b) in enumerate(zip(here["objects"], there["objects"], strict=True)):
        rows, cols = np.nonzero(ids == k + 1)
        if not rows.size:
            continue
        p = points[rows, cols]  # [m, 3]
        theta = math.radians(float(b["rotation"]) - float(a["rotation"]))
        cos, sin = math.cos(theta), math.sin(theta)
        rel = p[:, :2] - np.asarray(a["3d_coords"][:2])
        moved = np.stack([b["3d_coords"][0] + cos * rel[:, 0] - sin * rel[:, 1],
                          b["3d_coords"][1] + sin * rel[:, 0] + cos * rel[:, 1], p[:, 2]],
                         axis=-1)
        flow[rows, cols] = _to_pixels(here, moved, view) - _to_pixels(here, p, view)
    return flow.astype(np.float32)


def clevr_video(
    rng: np.random.Generator,
    size: tuple[int, int] = (64, 64),
    num_frames: int = 6,
    min_objects: int = 3,
    max_objects: int = 6,
    *,
    window: Sequence[float] = DEFAULT_WINDOW,
    supersample: int = 2,
    min_pixels: int | None = None,
    speed_range: tuple[float, float] = (0.05, 0.15),
    rotation_speed: float = 0.0,
    max_tries: int = 100,
) -> ClevrClip:
    """Draw one CLEVR-style video.

    Args:
        rng: the random generator (consumed).
        size: (height, width) of the frames.
        num_frames: T.
        min_objects, max_objects: the object count range of the scene.
        window: the part of the 480x320 CLEVR frame rendered, (r0, r1, c0, c1) native pixels.
        supersample: samples per pixel side at edges (as `render_scene`).
        min_pixels: visible pixels every object needs in the first frame (default: H * W / 800,
            at least 4).
        speed_range: floor speed in world units per frame (the floor area is 6 x 6).
        rotation_speed: the largest spin in degrees per frame (uniform in +-rotation_speed).
        max_tries: scene draws before giving up with a ConfigError.
    """
    height, width = size
    min_pixels = max(4, round(height * width / 800)) if min_pixels is None else int(min_pixels)
    for _ in range(max_tries):
        scene = sample_scene(rng, min_objects, max_objects)
        n = len(scene["objects"])
        speed = rng.uniform(*speed_range, size=n)
        direction = rng.uniform(0.0, 2.0 * math.pi, size=n)
        velocity = np.stack([speed * np.cos(direction), speed * np.sin(direction)], axis=-1)
        spin = rng.uniform(-rotation_speed, rotation_speed, size=n)
        # start one step before the clip, so the flow of frame 0 looks back at a real state
        states = _simulate(scene, velocity, spin, num_frames + 2)
        first = render_scene(states[1], width, height, window, supersample)
        counts = np.bincount(first[1].ravel(), minlength=n + 1)[1:]
        if np.all(counts >= min_pixels):
            break
    else:
        raise ConfigError(f"could not draw a scene of {min_objects}-{max_objects} objects that "
                          f"all show {min_pixels} pixels in the first {height}x{width} frame; "
                          f"lower min_pixels or max_objects")
    frames, masks, backward, forward = [first[0]], [first[1]], [], []
    for t in range(1, num_frames + 1):
        if t > 1:
            image, mask = render_scene(states[t], width, height, window, supersample)
            frames.append(image)
            masks.append(mask)
        ids, points, view = _hits(states[t], size, window)
        backward.append(_flow(ids, points, view, states[t], states[t - 1]))
        forward.append(_flow(ids, points, view, states[t], states[t + 1]))
    return ClevrClip(np.stack(frames), np.stack(masks), np.stack(backward), np.stack(forward),
                     states)


class ProceduralVideoDataset(GeneratedVideoDataset):
    """CLEVR-style videos rendered on the fly (no disk). Items: see `slotlab.data.video`.

    Args: those of `GeneratedVideoDataset` and
        min_objects, max_objects: object count range (default 3-6).
        window: (r0, r1, c0, c1) of the native 480x320 frame (default its square middle).
        supersample: samples per pixel side at edges.
        min_pixels: visible pixels per object in the first frame (default H * W / 800).
        min_speed, max_speed: floor speed range in world units per frame.
    """

    noun = "procedural videos"
    shown_options = ("window",)

    def __init__(
        self,
        split: str = "train",
        task: str = "video",
        num: int = 10000,
        seed: int = 0,
        resolution: int | tuple[int, int] = (64, 64),
        num_frames: int = 6,
        min_objects: int = 3,
        max_objects: int = 6,
        max_instances: int | None = None,
        window: Sequence[float] = DEFAULT_WINDOW,
        supersample: int = 2,
        min_pixels: int | None = None,
        min_speed: float = 0.05,
        max_speed: float = 0.15,
        rotation_speed: float = 0.0,
    ) -> None:
        super().__init__(split, task, num, seed, resolution, num_frames, min_objects, max_objects,
                         max_instances, object_limit=10, limit_reason="CLEVR scenes")
        try:
            box = tuple(float(v) for v in window)
        except (TypeError, ValueError):
            box = ()
        if len(box) != 4 or not (0 <= box[0] < box[1] <= NATIVE_SIZE[1]
                                 and 0 <= box[2] < box[3] <= NATIVE_SIZE[0]):
            raise ConfigError(f"window must be (r0, r1, c0, c1) inside the 320x480 frame with "
                              f"r0 < r1 and c0 < c1, got {window!r}")
        self.options["window"] = box
        self.options["supersample"] = check_int("supersample", supersample, 1)
        self.options.update(check_motion(min_pixels, min_speed, max_speed, rotation_speed))

    def clip(self, item: int) -> ClevrClip:
        """The clip of item `item` (deterministic in seed, split and item)."""
        rng = np.random.default_rng(split_seed(self.seed, f"{self.split}/video", item))
        return clevr_video(rng, self.resolution, self.num_frames, **self.options)
