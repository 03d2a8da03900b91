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
from typing import Any

import numpy as np
import torch

from slotlab.data.options import parse_resolution
from slotlab.errors import ConfigError

__all__ = [
    "FLOW_SCALING_FACTOR",
    "VIDEO_KEYS",
    "box_centres",
    "boxes_from_masks",
    "check_float",
    "check_int",
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
    """Video data serves the video task (and whatever `build_dataset` passes by default)."""
    name = str(task).strip().lower().replace("-", "_")
    if name not in ("video", "object_discovery"):
        raise ConfigError(f"procedural video supports task video, got task {task!r}")
    return "video"
