"""Video samples for SAVi: the item layout every video dataset of slotlab returns, and the pieces
the generators share (boxes and points from instance masks, the flow-as-RGB target).

An item (a dict of tensors) of a clip of T frames with at most M objects:

    video         float32 [T, 3, H, W] in [0, 1]
    masks         int64 [T, H, W]: 0 background, i + 1 object i (the same i in every frame)
    boxes         float32 [T, M, 4]: (ymin, xmin, ymax, xmax) in [0, 1] of the visible pixels of
                  object i (pixel edges: ymin = row / H, ymax = (last row + 1) / H); an object that
                  is absent or fully hidden is (0, 0, 0, 0), MOVi's NOTRACK_BOX
    points        float32 [T, M, 2]: (y, x) centres of the boxes (the official SAVi points are
                  box centres); absent objects (0, 0)
    flow          float32 [T, H, W, 2]: backward optical flow in pixels, (d_row, d_col): where the
                  surface point seen at pixel centre (r + 0.5, c + 0.5) of frame t was in frame
                  t - 1 (frame 0: one simulated step before the clip). MOVi's `backward_flow`,
                  which the official SAVi trains on. The static background has flow 0. (In a
                  3-D render the mask of a silhouette pixel is the majority of its samples, the
                  flow that of the surface at its centre: the two can disagree there.)
    forward_flow  float32 [T, H, W, 2]: the same towards frame t + 1
    flow_rgb      float32 [T, 3, H, W]: `flow_to_rgb(flow)`, the official SAVi target (3 channels)

A reader of Kubric's MOVi TFDS shards can return the same keys (its `segmentations`, `boxes`,
`backward_flow` / `forward_flow` and `video`), so the model, the loss and the metrics do not care
where a video comes from.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset

from slotlab.data.options import parse_resolution
from slotlab.errors import ConfigError

__all__ = [
    "FLOW_SCALING_FACTOR",
    "VIDEO_KEYS",
    "GeneratedVideoDataset",
    "VideoClip",
    "box_centres",
    "boxes_from_masks",
    "check_float",
    "check_int",
    "check_motion",
    "check_resolution",
    "check_task",
    "flow_to_rgb",
    "video_sample",
]

VIDEO_KEYS = ("video", "masks", "boxes", "points", "flow", "forward_flow", "flow_rgb")
FLOW_SCALING_FACTOR = 50.0


def boxes_from_masks(masks: np.ndarray, num_instances: int) -> np.ndarray:
    """Boxes [T, M, 4] (ymin, xmin, ymax, xmax) in [0, 1] of ids 1..M in masks [T, H, W];
    (0, 0, 0, 0) where an object has no pixel."""
    t, h, w = masks.shape
    boxes = np.zeros((t, num_instances, 4), dtype=np.float32)
    for frame in range(t):
        for i in range(num_instances):
            rows, cols = np.nonzero(masks[frame] == i + 1)
            if rows.size:
                boxes[frame, i] = (rows.min() / h, cols.min() / w, (rows.max() + 1) / h,
                                   (cols.max() + 1) / w)
    return boxes


def box_centres(boxes: np.ndarray) -> np.ndarray:
    """Centres (y, x) [..., 2] of boxes [..., 4]; an empty box (0, 0, 0, 0) gives (0, 0)."""
    return np.stack([(boxes[..., 0] + boxes[..., 2]) / 2, (boxes[..., 1] + boxes[..., 3]) / 2],
                    axis=-1).astype(np.float32)


def flow_to_rgb(flow: np.ndarray | torch.Tensor,
                scaling_factor: float = FLOW_SCALING_FACTOR) -> np.ndarray:
    """Optical flow [..., H, W, 2] -> the official SAVi target [..., H, W, 3] in [0, 1].

    As the official `flow_to_rgb()` preprocessing: x = flow[..., 0], y = flow[..., 1];
    hue = (atan2(y, x) / pi + 1) / 2, saturation = clip(|flow| * scaling_factor / hypot(H, W),
    0, 1), value 1; HSV -> RGB; quantised to uint8 as `tf.image.convert_image_dtype` does
    (floor(x * 255.5)) and returned as k / 255.
    """
    flow = np.asarray(flow, dtype=np.float32)
    if flow.ndim < 3 or flow.shape[-1] != 2:
        raise ValueError(f"flow must be [..., H, W, 2], got {flow.shape}")
    h, w = flow.shape[-3:-1]
    scaling = scaling_factor / math.hypot(h, w)
    x, y = flow[..., 0], flow[..., 1]
    hue = (np.arctan2(y, x) / np.pi + 1.0) / 2.0
    saturation = np.clip(np.hypot(x, y) * scaling, 0.0, 1.0)
    k = (np.array([5.0, 3.0, 1.0], dtype=np.float32) + hue[..., None] * 6.0) % 6.0
    rgb = 1.0 - saturation[..., None] * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)  # value 1
    quantised = np.minimum(np.floor(rgb * 255.5), 255.0)
    return (quantised / 255.0).astype(np.float32)


def video_sample(frames: np.ndarray, masks: np.ndarray, backward: np.ndarray,
                 forward: np.ndarray, num_instances: int) -> dict[str, torch.Tensor]:
    """The item of a clip: frames uint8 [T, H, W, 3], masks [T, H, W] (ids 0..M), backward and
    forward flow float [T, H, W, 2] (d_row, d_col); `num_instances` M rows of boxes/points."""
    boxes = boxes_from_masks(masks, num_instances)
    return {
        "video": torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float()
        / 255.0,
        "masks": torch.from_numpy(masks.astype(np.int64)),
        "boxes": torch.from_numpy(boxes),
        "points": torch.from_numpy(box_centres(boxes)),
        "flow": torch.from_numpy(backward.astype(np.float32)),
        "forward_flow": torch.from_numpy(forward.astype(np.float32)),
        "flow_rgb": torch.from_numpy(np.ascontiguousarray(
            flow_to_rgb(backward).transpose(0, 3, 1, 2))),
    }


def check_int(name: str, value: Any, minimum: int) -> int:
    """`value` as an int >= minimum, else a ConfigError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_float(name: str, value: Any, minimum: float = 0.0) -> float:
    """`value` as a float >= minimum, else a ConfigError naming the option."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or \
            not math.isfinite(value) or value < minimum:
        raise ConfigError(f"{name} must be a number >= {minimum}, got {value!r}")
    return float(value)


def check_resolution(value: Any, minimum: int = 4) -> tuple[int, int]:
    """(H, W) from N, (H, W) or "HxW" (`slotlab.data.options.parse_resolution`), each >= minimum,
    else a ConfigError naming `resolution`."""
    h, w = parse_resolution(value)
    if h < minimum or w < minimum:
        raise ConfigError(f"resolution must be at least {minimum}x{minimum}, got {value!r}")
    return h, w


def check_task(task: str) -> str:
    """Video data serves the video task only."""
    name = str(task).strip().lower().replace("-", "_")
    if name != "video":
        raise ConfigError(f"procedural video serves the video task, got task {task!r}")
    return "video"


def check_motion(min_pixels: int | None, min_speed: Any, max_speed: Any,
                 rotation_speed: Any) -> dict[str, Any]:
    """The checked motion options of a video generator: `min_pixels`, `speed_range` (low, high)
    and `rotation_speed`, else a ConfigError naming the option."""
    if min_pixels is not None:
        min_pixels = check_int("min_pixels", min_pixels, 0)
    low, high = check_float("min_speed", min_speed), check_float("max_speed", max_speed)
    if low > high:
        raise ConfigError(f"min_speed ({low}) must be <= max_speed ({high})")
    return {"min_pixels": min_pixels, "speed_range": (low, high),
            "rotation_speed": check_float("rotation_speed", rotation_speed)}


@dataclass
class VideoClip:
    """One generated video: frames uint8 [T, H, W, 3], masks uint8 [T, H, W], backward and
    forward flow float32 [T, H, W, 2] (d_row, d_col). Generators add their own state."""

    frames: np.ndarray
    masks: np.ndarray
    backward_flow: np.ndarray
    forward_flow: np.ndarray


class GeneratedVideoDataset(Dataset):
    """What every procedural video dataset shares: the options common to all of them, checked,
    and items made on the fly from `clip(item)` (see the module docstring for their layout).

    A subclass calls `__init__` with the common options and the largest object count it can
    draw, adds its own options to `self.options` (passed to its generator) and defines `clip`.

    Args (all but the last two are options of every subclass):
        split: any split name; it only seeds the videos.
        task: "video".
        num: the number of videos.
        seed: the dataset seed.
        resolution: (H, W) or one int.
        num_frames: T, frames per clip.
        min_objects, max_objects: object count range (each subclass has its defaults).
        max_instances: rows of boxes/points (default max_objects; MOVi pads to a fixed count).
        min_pixels, min_speed, max_speed: see the subclass.
        rotation_speed: largest spin in degrees per frame (0: none).
        object_limit, limit_reason: the largest max_objects the generator can draw, and why.
    """

    noun: ClassVar[str] = "videos"  # what an IndexError calls the items
    shown_options: ClassVar[tuple[str, ...]] = ()  # options of `self.options` in the repr

    def __init__(self, split: str, task: str, num: int, seed: int,
                 resolution: int | tuple[int, int], num_frames: int, min_objects: int,
                 max_objects: int, max_instances: int | None, *, object_limit: int,
                 limit_reason: str) -> None:
        self.task = check_task(task)
        self.split, self.num = str(split), check_int("num", num, 0)
        self.seed = check_int("seed", seed, 0)
        self.resolution = check_resolution(resolution)
        self.num_frames = check_int("num_frames", num_frames, 1)
        min_objects = check_int("min_objects", min_objects, 1)
        max_objects = check_int("max_objects", max_objects, 1)
        if min_objects > max_objects:
            raise ConfigError(f"min_objects ({min_objects}) must be <= max_objects "
                              f"({max_objects})")
        if max_objects > object_limit:
            raise ConfigError(f"max_objects must be <= {object_limit} ({limit_reason}), got "
                              f"{max_objects}")
        self.max_instances = max_objects if max_instances is None else check_int(
            "max_instances", max_instances, max_objects)
        self.options: dict[str, Any] = {"min_objects": min_objects, "max_objects": max_objects}

    def clip(self, item: int) -> VideoClip:
        """The clip of item `item` (deterministic in seed, split and item)."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        if not -self.num <= item < self.num:
            raise IndexError(f"item {item} out of range for {self.num} {self.noun}")
        clip = self.clip(item % self.num)
        return video_sample(clip.frames, clip.masks, clip.backward_flow, clip.forward_flow,
                            self.max_instances)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        for i in range(self.num):
            yield self[i]

    def __repr__(self) -> str:
        o = self.options
        shown = "".join(f", {key}={o[key]}" for key in self.shown_options)
        return (f"{type(self).__name__}(split={self.split!r}, num={self.num}, seed={self.seed}, "
                f"resolution={self.resolution}, num_frames={self.num_frames}, "
                f"objects={o['min_objects']}-{o['max_objects']}{shown})")
