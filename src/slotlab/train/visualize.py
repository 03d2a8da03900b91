"""Slot pictures: what a model sees, reconstructs and predicts (`slotlab visualize`).

    fig = object_discovery_figure(image, model(image, return_all_attention=True))
    fig = set_prediction_figure(image, output.predictions, targets)
    visualize("runs/clevr6", "procedural", "slots.png")     # model + data -> PNG

Object discovery, one row per example:

    input | recon | slot 0 ... slot K-1 | masks | attn 1 ... attn T

`slot k` is slot k's reconstruction where its mask is on, faded to white where it is off
(recons * masks + white * (1 - masks)); `masks` colours every pixel by the slot with the largest
mask (argmax), and `attn t` colours every pixel by the attention of iteration t, mixed softly
(sum_k attention_k * colour_k, so a pixel that is shared between slots shows a mixed colour).
Slot k has the same colour everywhere: in the bar under its column header, in `masks` and in the
attention maps.

Set prediction, one row per example: the input with a numbered marker at each predicted object
(slots with objectness > threshold), the list of those objects ("3: large red metal cube
p=0.97", numbered by slot), then the same for the ground truth (numbered by target row).
Markers are filled with the object's CLEVR colour. See `clevr_camera_projection` for how 3-D
coordinates are placed in the image.
"""

from __future__ import annotations

import argparse
import functools
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from slotlab.data.clevr_vocab import CAMERA_LOCATION as CLEVR_CAMERA_LOCATION
from slotlab.data.clevr_vocab import CLEVR_RGB as CLEVR_COLOUR_RGB
from slotlab.data.clevr_vocab import COLORS, MATERIALS, SHAPES, SIZES
from slotlab.data.clevr_vocab import FOCAL_OVER_SENSOR as CLEVR_FOCAL_OVER_SENSOR
from slotlab.data.clevr_vocab import NATIVE_SIZE as CLEVR_FRAME
from slotlab.errors import ConfigError, DataError
from slotlab.models.object_discovery import (
    ObjectDiscoveryOutput,
    cells_to_pixels,
    config_cell_pixels,
)

# Layout (pixels): gap between cells, height of the column-header strip, smallest cell side.
PAD = 4
HEADER_HEIGHT = 18
MIN_CELL = 96
LINE_HEIGHT = 13
FONT_SIZE = 11
BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)

# Slot colours: Kelly's colours of maximum contrast without white and black; cycled after 20.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (243, 195, 0), (135, 86, 146), (243, 132, 0), (161, 202, 241), (190, 0, 50),
    (194, 178, 128), (132, 132, 130), (0, 136, 86), (230, 143, 172), (0, 103, 165),
    (249, 147, 121), (96, 78, 151), (246, 166, 0), (179, 68, 108), (220, 211, 0),
    (136, 45, 23), (141, 182, 0), (101, 69, 34), (226, 88, 34), (43, 61, 38),
)

Projection = Callable[[torch.Tensor], torch.Tensor]


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def to_uint8(image: torch.Tensor) -> np.ndarray:
    """Images in [-1, 1], channels first [..., 3, H, W] -> uint8 [..., H, W, 3] (clamped)."""
    x = image.detach().float().cpu().clamp(-1.0, 1.0)
    x = ((x + 1.0) * 127.5).round().to(torch.uint8)
    return x.movedim(-3, -1).numpy()


def slot_colour(k: int) -> tuple[int, int, int]:
    """The palette colour of slot `k`."""
    return PALETTE[k % len(PALETTE)]


def _palette(num: int) -> torch.Tensor:
    """[num, 3] float palette in [0, 255]."""
    return torch.tensor([slot_colour(k) for k in range(num)], dtype=torch.float32)


def colour_segmentation(weights: torch.Tensor, hard: bool = True) -> np.ndarray:
    """Per-slot weights [K, H, W] -> uint8 [H, W, 3].

    hard: colour each pixel by its argmax slot; else mix the slot colours with the weights
    (which should sum to 1 over slots, as softmax masks and attention do).
    """
    weights = weights.detach().float().cpu()
    palette = _palette(weights.shape[0])
    if hard:
        rgb = palette[weights.argmax(dim=0)]  # [H, W, 3]
    else:
        rgb = torch.einsum("khw,kc->hwc", weights, palette)
    return rgb.clamp(0, 255).round().to(torch.uint8).numpy()


def feature_grid(num_positions: int, height: int, width: int) -> tuple[int, int]:
    """The (h', w') of a feature map with `num_positions` cells and the image's aspect ratio."""
    h = round(math.sqrt(num_positions * height / width))
    if h < 1 or num_positions % h:
        raise ValueError(
            f"cannot lay {num_positions} attention positions out on a grid with the aspect "
            f"ratio of a {height}x{width} image; pass feature_size=(h, w)"
        )
    return h, num_positions // h


def attention_images(
    attention: torch.Tensor, size: tuple[int, int], feature_size: tuple[int, int] | None = None,
    cell_pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Attention [B, K, N] -> [B, K, H, W]: reshaped to the feature grid and resized to the
    image. With `cell_pixels` (the pixels each encoder cell is centred on, per axis:
    `encoder_cell_pixels`) it is interpolated linearly between the cell centres, so that each
    cell's value lands where the cell looks; without, resized bilinearly as if the cells spread
    evenly over the image."""
    b, k, n = attention.shape
    if cell_pixels is not None:
        feature_size = (len(cell_pixels[0]), len(cell_pixels[1]))
    h, w = feature_size or feature_grid(n, *size)
    if h * w != n:
        raise ValueError(f"feature_size {(h, w)} does not hold {n} attention positions")
    maps = attention.detach().float().cpu().reshape(b * k, 1, h, w)
    if cell_pixels is not None:
        maps = cells_to_pixels(maps, cell_pixels, size)
    elif (h, w) != tuple(size):
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)
    return maps.reshape(b, k, *size)


@functools.lru_cache(maxsize=4)
def _font(size: int = FONT_SIZE) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1 or no FreeType: the fixed bitmap font
        return ImageFont.load_default()


def _fit_text(draw: ImageDraw.ImageDraw, text: str, width: int) -> str:
    """`text`, shortened with '…' until it fits `width` pixels."""
    font = _font()
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _auto_scale(height: int, width: int, scale: int | None) -> int:
    """The integer upscaling of every cell: enough for MIN_CELL pixels unless given."""
    if scale is None:
        return max(1, math.ceil(MIN_CELL / max(height, width)))
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    return int(scale)


def _upscale(pixels: np.ndarray, scale: int) -> Image.Image:
    """uint8 [H, W, 3] -> PIL image upscaled `scale` times (nearest: pixels stay exact)."""
    image = Image.fromarray(np.ascontiguousarray(pixels), "RGB")
    if scale == 1:
        return image
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


class _Grid:
    """Cells in rows and columns of given widths under a header strip, PAD pixels apart."""

    def __init__(self, col_widths: Sequence[int], row_height: int, rows: int) -> None:
        self.col_widths, self.row_height, self.rows = list(col_widths), row_height, rows
        self.col_x = [PAD + sum(w + PAD for w in self.col_widths[:c])
                      for c in range(len(self.col_widths))]
        width = PAD + sum(w + PAD for w in self.col_widths)
        height = HEADER_HEIGHT + PAD + rows * (row_height + PAD)
        self.canvas = Image.new("RGB", (width, height), BACKGROUND)
        self.draw = ImageDraw.Draw(self.canvas)

    def origin(self, row: int, col: int) -> tuple[int, int]:
        return self.col_x[col], HEADER_HEIGHT + PAD + row * (self.row_height + PAD)

    def header(self, col: int, label: str, bar: tuple[int, int, int] | None = None) -> None:
        """Write `label` over column `col`; a colour bar under it when `bar` is given."""
        x, width = self.col_x[col], self.col_widths[col]
        self.draw.text((x + 1, 2), _fit_text(self.draw, label, width - 2), fill=TEXT_COLOUR,
                       font=_font())
        if bar is not None:
            self.draw.rectangle([x, HEADER_HEIGHT - 3, x + width - 1, HEADER_HEIGHT - 1], fill=bar)

    def paste(self, row: int, col: int, image: Image.Image) -> None:
        self.canvas.paste(image, self.origin(row, col))


def _check_images(image: torch.Tensor) -> None:
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W], got {tuple(image.shape)}")


# ------------------------------------------------------------------------------------------------
# Object discovery
# ------------------------------------------------------------------------------------------------
def object_discovery_columns(num_slots: int, num_iterations: int) -> list[str]:
    """Column labels of `object_discovery_figure`: 2 + K + 1 + T columns."""
    return [
        "input",
        "recon",
        *(f"slot {k}" for k in range(num_slots)),
        "masks",
        *(f"attn {t + 1}" for t in range(num_iterations)),
    ]


def object_discovery_figure(
    image: torch.Tensor,
    output: ObjectDiscoveryOutput,
    num: int = 8,
    feature_size: tuple[int, int] | None = None,
    scale: int | None = None,
    cell_pixels: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> Image.Image:
    """A grid of the first `num` examples: input, reconstruction, slots, masks, attention.

    Args:
        image: [B, 3, H, W] in [-1, 1], the model's input.
        output: the model's output for `image`; its `attention_per_iteration` (T x [B, K, N])
            gives one attention column per iteration, else the last `attention` [B, K, N] is
            shown alone.
        num: at most this many rows.
        feature_size: (h', w') of the encoder feature map (N = h' * w'); None = the square-ish
            grid with the image's aspect ratio.
        scale: integer upscaling of every cell (nearest); None = enough for MIN_CELL pixels.
        cell_pixels: where the encoder's cells sit on the pixels, per axis
            (`config_cell_pixels(model.config)`): the attention is drawn there. None = spread
            evenly over the image (right for stride 1; up to half a pixel off with strides).
    Returns:
        an RGB image of min(B, num) rows and 2 + K + 1 + T columns of cells of (H*scale,
        W*scale) pixels, PAD pixels apart, under a HEADER_HEIGHT strip of column labels.
    """
    _check_images(image)
    b = min(image.shape[0], num)
    if b < 1:
        raise ValueError("no examples to draw (num < 1 or an empty batch)")
    h, w = image.shape[-2:]
    k = output.masks.shape[1]
    attention = output.attention_per_iteration or [output.attention]
    s = _auto_scale(h, w, scale)

    labels = object_discovery_columns(k, len(attention))
    grid = _Grid([w * s] * len(labels), h * s, b)
    for col, label in enumerate(labels):
        bar = slot_colour(col - 2) if 2 <= col < 2 + k else None
        grid.header(col, label, bar)

    masks = output.masks[:b, :, 0].detach().float().cpu()  # [b, K, H, W]
    slot_pictures = output.recons[:b].detach().float().cpu() * masks[:, :, None] + (
        1.0 - masks[:, :, None]
    )
    inputs, recons, slots = to_uint8(image[:b]), to_uint8(output.recon_combined[:b]), to_uint8(
        slot_pictures
    )
    attention_maps = [attention_images(a[:b], (h, w), feature_size, cell_pixels) for a in attention]
    for row in range(b):
        cells = [inputs[row], recons[row], *slots[row], colour_segmentation(masks[row])]
        cells += [colour_segmentation(a[row], hard=False) for a in attention_maps]
        for col, pixels in enumerate(cells):
            grid.paste(row, col, _upscale(pixels, s))
    return grid.canvas


# ------------------------------------------------------------------------------------------------
# Set prediction
# ------------------------------------------------------------------------------------------------
def clevr_camera_projection(coords: torch.Tensor) -> torch.Tensor:
    """Normalised CLEVR coordinates [M, 3] ((x, y, z) + 3) / 6 -> image positions [M, 2] (u, v).

    u, v are fractions of the image width and height (0 = left / top edge), as seen by the
    nominal CLEVR camera in the full 480x320 frame, which the set-prediction pipeline resizes
    to H x W without cropping. The approximation: CLEVR jitters the camera by up to +-0.5 per
    axis and per scene, which this ignores: against the procedural renderer's jittered cameras
    the error is about 1 pixel on average and up to ~4 pixels at 128x128.
    z is the object's half height (its centre above the floor).
    """
    world = coords.detach().double().cpu().reshape(-1, 3) * 6.0 - 3.0
    eye = torch.tensor(CLEVR_CAMERA_LOCATION, dtype=torch.float64)
    forward = -eye / eye.norm()
    right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    right = right / right.norm()
    up = torch.linalg.cross(right, forward)
    rel = world - eye
    depth = (rel @ forward).clamp_min(1e-6)
    focal = CLEVR_FRAME[0] * CLEVR_FOCAL_OVER_SENSOR  # pixels of the 480-wide frame
    u = 0.5 + focal * (rel @ right) / depth / CLEVR_FRAME[0]
    v = 0.5 - focal * (rel @ up) / depth / CLEVR_FRAME[1]
    return torch.stack([u, v], dim=-1).float()


def describe_object(row: torch.Tensor) -> str:
    """A 19-dim target/prediction row -> "large red metal cube" (argmax of each attribute)."""
    size = SIZES[int(row[3:5].argmax())]
    material = MATERIALS[int(row[5:7].argmax())]
    shape = SHAPES[int(row[7:10].argmax())]
    colour = COLORS[int(row[10:18].argmax())]
    return f"{size} {colour} {material} {shape}"


def _object_colour(row: torch.Tensor) -> tuple[int, int, int]:
    return CLEVR_COLOUR_RGB[COLORS[int(row[10:18].argmax())]]


def _draw_markers(
    picture: Image.Image,
    rows: torch.Tensor,
    numbers: Sequence[int],
    project: Projection,
) -> None:
    """Draw a numbered disc, filled with the object's colour, at each object of `rows` [M, 19]."""
    if len(numbers) == 0:
        return
    draw = ImageDraw.Draw(picture)
    font = _font(max(8, FONT_SIZE - 1))
    radius = max(6, min(picture.size) // 16)
    uv = project(rows[:, 0:3])
    for (u, v), row, number in zip(uv.tolist(), rows, numbers):
        x, y = u * picture.width, v * picture.height
        fill = _object_colour(row)
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill,
                     outline=(255, 255, 255), width=2)
        light = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 140
        draw.text((x, y), str(number), fill=(0, 0, 0) if light else (255, 255, 255), font=font,
                  anchor="mm")


def _object_lines(
    rows: torch.Tensor, numbers: Sequence[int], with_probability: bool
) -> list[tuple[str, tuple[int, int, int]]]:
    """(text, colour) per object: "3: large red metal cube p=0.97"."""
    lines = []
    for row, number in zip(rows, numbers):
        text = f"{number}: {describe_object(row)}"
        if with_probability:
            text += f"  p={float(row[18]):.2f}"
        lines.append((text, _object_colour(row)))
    return lines


def _draw_lines(
    draw: ImageDraw.ImageDraw, origin: tuple[int, int], lines: list[tuple[str, Any]]
) -> None:
    """Text lines, each after a small swatch of its colour."""
    x, y = origin
    for i, (text, colour) in enumerate(lines):
        top = y + i * LINE_HEIGHT
        if colour is not None:
            draw.rectangle([x, top + 3, x + 7, top + 10], fill=colour, outline=(0, 0, 0))
        draw.text((x + 11, top), text, fill=TEXT_COLOUR, font=_font())


def set_prediction_figure(
    image: torch.Tensor,
    predictions: torch.Tensor,
    targets: torch.Tensor | None = None,
    num: int = 8,
    threshold: float = 0.5,
    project: Projection | None = None,
    scale: int | None = None,
) -> Image.Image:
    """Predicted objects (and the ground truth) drawn on the first `num` input images.

    Args:
        image: [B, 3, H, W] in [-1, 1].
        predictions: [B, K, 19] model outputs (sigmoid); slots with objectness [18] > threshold
            are drawn, numbered by slot index.
        targets: optional [B, K', 19] ground truth (rows with objectness > 0.5 are objects),
            drawn the same way beside the predictions, numbered by row.
        num: at most this many rows.
        threshold: objectness threshold of a predicted object.
        project: maps normalised coords [M, 3] (layout of `slotlab.data.preprocess`) to image
            positions [M, 2] as fractions (u, v) of width and height; default
            `clevr_camera_projection`.
        scale: integer upscaling of the pictures (nearest); None = enough for MIN_CELL pixels.
    Returns:
        an RGB image, one row per example: [picture + predicted markers | list of predicted
        objects | picture + true markers | list of true objects] (the last two only with
        `targets`).
    """
    _check_images(image)
    if predictions.ndim != 3 or predictions.shape[-1] < 19:
        raise ValueError(f"expected predictions [B, K, 19], got {tuple(predictions.shape)}")
    b = min(image.shape[0], num)
    if b < 1:
        raise ValueError("no examples to draw (num < 1 or an empty batch)")
    project = project or clevr_camera_projection
    h, w = image.shape[-2:]
    s = _auto_scale(h, w, scale)
    predictions = predictions[:b].detach().float().cpu()
    targets = None if targets is None else targets[:b].detach().float().cpu()

    # Per example: the objects drawn (rows, numbers) and their text lines.
    panels: list[list[tuple[torch.Tensor, list[int], list]]] = []
    for i in range(b):
        keep = (predictions[i, :, 18] > threshold).nonzero().flatten().tolist()
        kept = predictions[i, keep]
        row_panels = [(kept, keep, _object_lines(kept, keep, True))]
        if not keep:
            row_panels[0][2].append((f"(no slot has objectness > {threshold:.2f})", None))
        if targets is not None:
            real = (targets[i, :, 18] > 0.5).nonzero().flatten().tolist()
            true_rows = targets[i, real]
            row_panels.append((true_rows, real, _object_lines(true_rows, real, False)))
        panels.append(row_panels)

    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_width = 11 + max(
        int(math.ceil(measure.textlength(text, font=_font())))
        for row_panels in panels for _, _, lines in row_panels for text, _ in lines
    )
    text_width = max(text_width, 150)
    most_lines = max(len(lines) for row_panels in panels for _, _, lines in row_panels)
    row_height = max(h * s, most_lines * LINE_HEIGHT)

    labels = ["prediction", f"predicted objects (p > {threshold:.2f})"]
    if targets is not None:
        labels += ["ground truth", "true objects"]
    grid = _Grid([w * s, text_width] * (len(labels) // 2), row_height, b)
    for col, label in enumerate(labels):
        grid.header(col, label)

    pictures = to_uint8(image[:b])
    for i, row_panels in enumerate(panels):
        for p, (rows, numbers, lines) in enumerate(row_panels):
            picture = _upscale(pictures[i], s)
            _draw_markers(picture, rows, numbers, project)
            grid.paste(i, 2 * p, picture)
            _draw_lines(grid.draw, grid.origin(i, 2 * p + 1), lines)
    return grid.canvas


# ------------------------------------------------------------------------------------------------
# Model + data -> PNG
# ------------------------------------------------------------------------------------------------
def checked_device(name: str) -> torch.device:
    """The torch device `name`; ConfigError if torch does not know it or it is CUDA without CUDA."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} asked for, but CUDA is not available")
    return device


def open_dataset(spec: str, split: str, task: str, options: dict[str, Any],
                 note_file: TextIO | None = None) -> tuple[Any, str]:
    """build_dataset(spec, split, task, **options), the "train" split where `split` is missing
    or empty (with a note printed to `note_file`, default stdout)."""
    from slotlab.data import build_dataset

    try:
        dataset = build_dataset(spec, split, task, **options)
        if len(dataset) > 0:
            return dataset, split
        first: Exception = DataError(f"split {split!r} of {spec!r} is empty")
    except DataError as exc:
        first = exc
    if split == "train":
        raise first
    try:
        dataset = build_dataset(spec, "train", task, **options)
    except DataError:
        raise first from None
    if len(dataset) == 0:
        raise first
    print(f"note: no usable split {split!r} in {spec!r} ({first}); using 'train'", file=note_file)
    return dataset, "train"


def visualize(
    path: str | Path,
    data_spec: str | None,
    out_file: str | Path,
    num: int = 8,
    split: str | None = None,
    seed: int = 0,
    device: str = "cpu",
    num_iterations: int | None = None,
) -> Path:
    """Run a model on the first `num` examples of a dataset and write its figure as a PNG.

    Args:
        path: a RUN_DIR (training run) or a MODEL_DIR (config.json + model.safetensors).
        data_spec: a `build_dataset` spec; None = the run's training data.
        out_file: where the PNG goes (parent directories are created).
        num: examples (rows).
        split: the split to draw from (default: "val"; a folder given as `data_spec`: "all");
            "train" is used (with a note) when it does not exist.
        seed: seeds the slot-initialisation noise [B, K, D], so a figure is reproducible.
        device: where the model runs.
        num_iterations: Slot Attention iterations (default: the model's, in eval mode).
    Returns:
        the path written.
    """
    from slotlab.train.checkpoint import load_model
    from slotlab.train.evaluate import slot_noise

    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ConfigError(f"--num must be a positive integer, got {num!r}")
    device_obj = checked_device(device)

    from slotlab.data.build import options_for, parse_spec

    model, info = load_model(path, device=device_obj)
    task = info["task"]
    if split is None:
        split = "all" if data_spec and parse_spec(data_spec)[0] == "folder" else "val"
    options: dict[str, Any] = {}
    if data_spec is None:
        data_spec = info.get("data")
        if data_spec is None:
            raise ConfigError(f"{path} does not record its training data; pass --data SPEC")
        options.update({k: v for k, v in ((info.get("config") or {}).get("data_options")
                                          or {}).items() if v is not None})
    resolution = getattr(model, "resolution", None)
    if resolution is not None:
        options["resolution"] = tuple(resolution)
    options, _ = options_for(data_spec, options)

    dataset, split = open_dataset(data_spec, split, task, options)
    samples = [dataset[i] for i in range(min(num, len(dataset)))]
    if task == "video":
        return _visualize_video(model, samples, Path(out_file), seed, device_obj)
    images = torch.stack([s["image"] for s in samples]).to(device_obj)
    if resolution is not None and tuple(images.shape[-2:]) != tuple(resolution):
        from slotlab.data.preprocess import resize_image

        images = resize_image(images, tuple(resolution)).clamp(-1.0, 1.0)

    noise = slot_noise(model, len(samples), torch.Generator().manual_seed(seed)).to(device_obj)
    with torch.no_grad():
        output = model(images, noise=noise, return_all_attention=True,
                       num_iterations=num_iterations)

    if task == "object_discovery":
        figure = object_discovery_figure(images, output, num=num,
                                         cell_pixels=config_cell_pixels(model.config))
    else:
        targets = None
        if all("target" in s for s in samples):
            targets = torch.stack([s["target"] for s in samples])
        figure = set_prediction_figure(images, output.predictions, targets, num=num)

    out = Path(out_file)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        figure.save(out, format="PNG")
    except OSError as err:
        raise ConfigError(f"cannot write the figure to {out} ({err.strerror or err})") from None
    return out


def _visualize_video(model: torch.nn.Module, samples: list[dict[str, torch.Tensor]],
                     out: Path, seed: int, device: torch.device) -> Path:
    """A video model on `samples`: the frames x slots sheet of the first video at `out` (PNG)
    and the animation of all of them beside it (`out` with the suffix .gif)."""
    from slotlab.train.visualize_video import save_video_pictures

    batch = {k: torch.stack([s[k] for s in samples]).to(device) for k in samples[0]}
    try:
        gif = save_video_pictures(model, batch, seed, out, gif_num=len(samples))
    except OSError as err:
        raise ConfigError(f"cannot write the figure to {out} ({err.strerror or err})") from None
    print(f"wrote {gif}")
    return out


def register(sub: argparse._SubParsersAction) -> None:
    """Add `slotlab visualize` to the CLI's sub-parsers."""
    from slotlab.cli import output_file, positive_int

    p = sub.add_parser(
        "visualize",
        help="draw a model's slots (object discovery, video) or predicted objects as a PNG",
        description="Run a model on the first examples of a dataset and write a PNG: input, "
        "reconstruction, per-slot reconstructions, masks and attention per iteration (object "
        "discovery), or predicted and true objects on the image (set prediction); a video "
        "model: a frames x slots sheet of the first video and an animated GIF of all beside "
        "the PNG (FILE.gif).",
    )
    p.add_argument("path", metavar="RUN_DIR|MODEL_DIR",
                   help="training run directory or model directory")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="dataset spec (default: the run's training data)")
    p.add_argument("--out", required=True, type=output_file, metavar="FILE.png",
                   help="PNG file to write (replaced if it exists)")
    p.add_argument("--num", type=positive_int, default=8,
                   help="number of examples, one row each (default 8)")
    p.add_argument("--split", default=None,
                   help="split (default val, train if absent; a folder given with --data: all)")
    p.add_argument("--num-iterations", type=positive_int, default=None,
                   help="Slot Attention iterations (default: the model's in eval mode)")
    p.add_argument("--seed", type=int, default=0, help="slot-initialisation noise seed")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = visualize(args.path, args.data, args.out, num=args.num, split=args.split,
                    seed=args.seed, device=args.device, num_iterations=args.num_iterations)
    print(f"wrote {out}")
    return 0
