"""Reading images, instance-id masks and JSON files with one clear error per bad file.

Every function raises `slotlab.errors.DataError` with a single sentence naming the file and what
is wrong (missing, unreadable, corrupt, truncated, wrong kind of content) instead of letting a
Pillow or json traceback through. Nothing is ever silently skipped or half-decoded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from slotlab.errors import DataError

# Pillow errors that mean "this file is not a readable image": bad header, bad zlib stream,
# truncated data, bad chunk CRC, absurd dimensions.
_DECODE_ERRORS = (
    UnidentifiedImageError,
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    Image.DecompressionBombError,
)


def _check_file(path: Path, what: str) -> None:
    if not path.exists():
        raise DataError(f"{what} {path} does not exist")
    if not path.is_file():
        raise DataError(f"{what} {path} is not a file")


def _open_decoded(path: Path, what: str) -> Image.Image:
    """Open `path` with Pillow and decode every pixel now (so truncation is caught here)."""
    _check_file(path, what)
    try:
        with Image.open(path) as img:
            img.load()  # full decode: a truncated or corrupt stream fails here, not later
            return img.copy()
    except _DECODE_ERRORS as err:
        reason = str(err).strip() or type(err).__name__
        raise DataError(f"{what} {path} is corrupt or truncated ({reason})") from None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 RGB.

    Returns:
        uint8 array [H, W, 3]. RGBA / LA drop alpha, L / P / 1 / CMYK are converted to RGB, and
        16- or 32-bit greyscale is scaled down to 8 bits.
    Raises:
        DataError naming the file if it is missing, corrupt or truncated.
    """
    path = Path(path)
    img = _open_decoded(path, "image file")
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        values = np.asarray(img, dtype=np.float64)
        peak = 255.0 if values.max(initial=0) <= 255 else 65535.0
        grey = np.clip(np.rint(values * (255.0 / peak)), 0, 255).astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if img.mode != "RGB":
        img = img.convert("RGB")
    array = np.array(img, dtype=np.uint8)  # a writable copy
    if array.ndim != 3 or array.shape[2] != 3 or array.size == 0:
        raise DataError(f"image file {path} did not decode to an RGB image (got {array.shape})")
    return array


def read_id_mask(path: str | Path) -> np.ndarray:
    """Read a single-channel PNG of instance ids (0 = background).

    Returns:
        [H, W] array: uint8 for 8-bit (L, or the palette indices of a P image), int64 for 16/32-bit
        integer images. An RGB(A) file is accepted only when its three channels are equal.
    Raises:
        DataError naming the file if it is missing, corrupt, truncated or not an id map.
    """
    path = Path(path)
    img = _open_decoded(path, "mask file")
    if img.mode in ("L", "P", "1"):
        return np.asarray(img, dtype=np.uint8).copy()
    if img.mode in ("I", "I;16", "I;16B", "I;16L"):
        return np.asarray(img).astype(np.int64)
    if img.mode in ("RGB", "RGBA", "LA"):
        array = np.asarray(img, dtype=np.uint8)
        channels = array[:, :, :1] if img.mode == "LA" else array[:, :, :3]
        if channels.shape[2] == 3 and not (
            np.array_equal(channels[:, :, 0], channels[:, :, 1])
            and np.array_equal(channels[:, :, 0], channels[:, :, 2])
        ):
            raise DataError(
                f"mask file {path} is a colour image; expected a single-channel PNG of instance ids"
            )
        return channels[:, :, 0].copy()
    raise DataError(
        f"mask file {path} has pixel mode {img.mode}; expected a single-channel PNG of instance ids"
    )


def read_json(path: str | Path) -> Any:
    """Parse a JSON file; DataError naming the file (and line/column) if missing or invalid."""
    path = Path(path)
    _check_file(path, "JSON file")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as err:
        raise DataError(
            f"JSON file {path} is not valid JSON ({err.msg} at line {err.lineno}, "
            f"column {err.colno})"
        ) from None
    except UnicodeDecodeError:
        raise DataError(f"JSON file {path} is not UTF-8 text") from None
    except (ValueError, RecursionError) as err:  # an int too long to convert, nesting too deep
        raise DataError(f"JSON file {path} is not valid JSON ({err})") from None
    except OSError as err:
        raise DataError(f"JSON file {path} cannot be read ({err.strerror or err})") from None
