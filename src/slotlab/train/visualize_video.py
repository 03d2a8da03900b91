"""Slot pictures of a video model (SAVi): a frames x slots sheet (PNG) and an animated GIF.

    sheet = video_sheet(video, output, target)            # PIL image
    frames = video_gif_frames(video, output, target)      # one PIL image per time step
    save_gif(frames, "slots.gif")

One row per frame (the sheet) or per video (each GIF frame), columns:

    frame | target | decoded | masks | attn | slot 0 ... slot K-1

`target` is what the model reconstructs (the flow as RGB, or the frame itself) and `decoded` its
reconstruction; `masks` colours every pixel by the slot with the largest alpha mask, `attn` by the
corrector's attention (mixed softly); `slot k` is the frame where slot k's mask is on, faded to
white where it is off, so an object that keeps its slot stays in one column over time. Slot k has
the same colour in its header bar, `masks` and `attn`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image

from slotlab.io import atomic_write
from slotlab.models.savi import SAViOutput
from slotlab.train.visualize import (
    _auto_scale,
    _Grid,
    _upscale,
    colour_segmentation,
    slot_colour,
    to_uint8,
)

__all__ = ["save_gif", "save_video_pictures", "video_columns", "video_gif_frames", "video_sheet"]

FIXED_COLUMNS = ("frame", "target", "decoded", "masks", "attn")


def video_columns(num_slots: int) -> list[str]:
    """Column labels: 5 + K."""
    return [*FIXED_COLUMNS, *(f"slot {k}" for k in range(num_slots))]


def _cells(video: torch.Tensor, output: SAViOutput, target: torch.Tensor, b: int,
           t: int) -> list:
    """The uint8 cells of video `b`, frame `t` (inputs in [0, 1])."""
    h, w = video.shape[-2:]
    frame = video[b, t].float().cpu()  # [3, H, W]
    masks = output.masks[b, t, :, 0].detach().float().cpu()  # [K, H, W]
    attention = output.attention[b, t].detach().float().cpu().reshape(-1, h, w)  # [K, H, W]
    faded = frame[None] * masks[:, None] + (1.0 - masks[:, None])  # [K, 3, H, W]
    return [to_uint8(frame * 2 - 1), to_uint8(target[b, t].float().cpu() * 2 - 1),
            to_uint8(output.target[b, t].detach().float().cpu() * 2 - 1),
            colour_segmentation(masks), colour_segmentation(attention, hard=False),
            *to_uint8(faded * 2 - 1)]


def _grid(video: torch.Tensor, output: SAViOutput, target: torch.Tensor,
          rows: list[tuple[int, int]], scale: int | None) -> Image.Image:
    h, w = video.shape[-2:]
    s = _auto_scale(h, w, scale)
    labels = video_columns(output.masks.shape[2])
    grid = _Grid([w * s] * len(labels), h * s, len(rows))
    for col, label in enumerate(labels):
        k = col - len(FIXED_COLUMNS)
        grid.header(col, label, slot_colour(k) if k >= 0 else None)
    for row, (b, t) in enumerate(rows):
        for col, pixels in enumerate(_cells(video, output, target, b, t)):
            grid.paste(row, col, _upscale(pixels, s))
    return grid.canvas


def _check(video: torch.Tensor, output: SAViOutput, target: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[2] != 3:
        raise ValueError(f"expected a video [B, T, 3, H, W], got {tuple(video.shape)}")
    if tuple(target.shape) != tuple(output.target.shape):
        raise ValueError(f"target {tuple(target.shape)} and the decoded target "
                         f"{tuple(output.target.shape)} differ in shape")


def video_sheet(video: torch.Tensor, output: SAViOutput, target: torch.Tensor,
                num: int = 1, scale: int | None = None) -> Image.Image:
    """The frames x slots sheet of the first `num` videos: video [B, T, 3, H, W] in [0, 1], the
    model's `output` and its `target` [B, T, C, H, W] in [0, 1]; rows frame by frame, one video
    after the other."""
    _check(video, output, target)
    rows = [(b, t) for b in range(min(num, video.shape[0])) for t in range(video.shape[1])]
    return _grid(video, output, target, rows, scale)


def video_gif_frames(video: torch.Tensor, output: SAViOutput, target: torch.Tensor,
                     num: int = 4, scale: int | None = None) -> list[Image.Image]:
    """One picture per time step, a row per video (the first `num`): the sheet's columns
    animated."""
    _check(video, output, target)
    videos = range(min(num, video.shape[0]))
    return [_grid(video, output, target, [(b, t) for b in videos], scale)
            for t in range(video.shape[1])]


def save_gif(frames: list[Image.Image], path: str | Path, frame_ms: int = 400) -> Path:
    """An animated GIF of `frames` (looping), written to `path`."""
    path = Path(path)
    atomic_write(path, lambda f: frames[0].save(f, format="GIF", save_all=True,
                                                 append_images=frames[1:], duration=frame_ms,
                                                 loop=0), "animation")
    return path


@torch.no_grad()
def save_video_pictures(model: torch.nn.Module, batch: dict[str, torch.Tensor], seed: int,
                        path: Path, gif_num: int = 4) -> Path:
    """A video model on a batch (on the model's device): the frames x slots sheet of the first
    video at `path` (PNG) and the animation of the first `gif_num` videos beside it (`path` with
    the suffix .gif, returned). The starting-slot noise is seeded with `seed`; the model is left
    in the mode it was in."""
    from slotlab.train.evaluate import _to_cpu, slot_noise
    from slotlab.train.step import video_forward, video_target

    device = batch["video"].device
    noise = slot_noise(model, batch["video"].shape[0],
                       torch.Generator().manual_seed(seed)).to(device)
    was_training = model.training
    model.eval()
    output = _to_cpu(video_forward(model, batch, noise))
    model.train(was_training)
    video, target = batch["video"].cpu(), video_target(model, batch).cpu()
    path.parent.mkdir(parents=True, exist_ok=True)
    video_sheet(video, output, target).save(path, format="PNG")
    return save_gif(video_gif_frames(video, output, target, num=gif_num), path.with_suffix(".gif"))
