"""The dataset options every reader shares, each checked in one place: split, crop, resolution.

(Task names are checked by `slotlab.tasks.normalize_task`.)

* split: `normalize_split(split, choices)`: "validation" is an alias of "val"; each dataset says
  which names it has (CLEVR: train / val / test; `choices=None` takes any name that can be a
  directory name).
* crop: the option is called `crop` everywhere. None = no crop, a box (r0, r1, c0, c1) = rows
  r0:r1 and columns c0:c1 of the source image, or a name the dataset defines ("official" for
  the official pipeline's crop, "center" for the largest centred square of a folder image).
* resolution: always height first. One int N or "N" means N x N; (H, W), [H, W] or "HxW" means
  H rows and W columns, so "64x48" is 64 pixels high and 48 wide.

A bad value is a `ConfigError` naming the value and what is accepted; a crop that does not fit
an image is a `DataError` naming the image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from slotlab.errors import ConfigError, DataError, SlotlabError

__all__ = [
    "SPLITS",
    "SPLIT_ALIASES",
    "Box",
    "CropOption",
    "check_crop_fits",
    "normalize_split",
    "parse_crop",
    "parse_resolution",
]

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"validation": "val"}

Box = tuple[int, int, int, int]
CropOption = str | Sequence[int] | None


def normalize_split(split: str, choices: Sequence[str] | None = SPLITS) -> str:
    """The split name `split` stands for: itself if it is one of `choices`, else its alias
    ("validation" -> "val") if that is. `choices=None` accepts any name usable as a directory
    name (not empty, no path separator, not starting with '.'). ConfigError otherwise."""
    if choices is None:
        name = SPLIT_ALIASES.get(split, split) if isinstance(split, str) else split
        if (
            not isinstance(name, str)
            or not name
            or name.startswith(".")
            or "/" in name
            or os.sep in name
            or (os.altsep is not None and os.altsep in name)
        ):
            raise ConfigError(
                f"split name {split!r} cannot be a directory name; expected a name such as "
                "train, val or test (not empty, no '/', not starting with '.')"
            )
        return name
    if split in choices:
        return split
    alias = SPLIT_ALIASES.get(split) if isinstance(split, str) else None
    if alias in choices:
        return alias
    shown = ", ".join(
        f"{c} (or {a})" if (a := _alias_of(c)) is not None else c for c in choices
    )
    raise ConfigError(f"unknown split {split!r}; expected one of {shown}")


def _alias_of(name: str) -> str | None:
    return next((alias for alias, target in SPLIT_ALIASES.items() if target == name), None)


def _items(value: Any) -> tuple[Any, ...]:
    """The items of a sequence-like `value` (a tuple, list, array), else ()."""
    try:
        return tuple(value)
    except TypeError:
        return ()


def _int(value: Any) -> int | None:
    """`value` as an int when it is a whole number (not a bool), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.isdigit() else None
    try:
        as_int = int(value)
    except (TypeError, ValueError, OverflowError):
        return None
    return as_int if as_int == value else None


def parse_resolution(value: Any) -> tuple[int, int]:
    """A resolution option -> (height, width) of positive ints; ConfigError otherwise.

    Accepts N or "N" (N x N), (H, W) / [H, W], or "HxW" (height first: "64x48" is 64 high and
    48 wide; "64,48" and "64*48" are read the same way).
    """
    parts: Sequence[Any]
    if isinstance(value, str):
        parts = value.lower().replace("*", "x").replace(",", "x").split("x")
    else:
        parts = _items(value) or [value]
    numbers = [_int(v) for v in parts]
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or any(n is None or n < 1 for n in numbers):
        raise ConfigError(
            f"resolution must be N or HEIGHTxWIDTH of positive integers (height first), e.g. 64, "
            f"(64, 48) or '64x48'; got {value!r}"
        )
    return numbers[0], numbers[1]  # type: ignore[return-value]


def parse_crop(option: Any, named: Mapping[str, Any] | None = None) -> Any:
    """What a `crop` option asks for: None (no crop), a box (r0, r1, c0, c1) of source pixels
    with 0 <= r0 < r1 and 0 <= c0 < c1, or `named[option]` for a name the dataset defines (e.g.
    {"official": OFFICIAL_CROP}; names are case-insensitive). ConfigError otherwise."""
    named = named or {}
    if option is None:
        return None
    if isinstance(option, str):
        key = option.strip().lower()
        if key in named:
            return named[key]
        raise _crop_error(option, named)
    box = tuple(_int(v) for v in _items(option))
    if len(box) != 4 or None in box or not (0 <= box[0] < box[1] and 0 <= box[2] < box[3]):
        raise _crop_error(option, named)
    return box


def _crop_error(option: Any, named: Mapping[str, Any]) -> ConfigError:
    names = "".join(f"'{name}', " for name in named)
    return ConfigError(
        f"crop must be {names}None or a box (r0, r1, c0, c1) of source pixels with "
        f"0 <= r0 < r1 and 0 <= c0 < c1; got {option!r}"
    )


def check_crop_fits(
    box: Box | None,
    shape: Sequence[int],
    what: object,
    error: type[SlotlabError] = DataError,
) -> None:
    """Raise `error` naming `what` (e.g. "image file x.png") if crop `box` does not fit an image
    of `shape` (height, width, ...)."""
    if box is not None and (box[1] > shape[0] or box[3] > shape[1]):
        raise error(
            f"{what} is {shape[0]}x{shape[1]} (height x width), too small for the crop rows "
            f"{box[0]}:{box[1]}, cols {box[2]}:{box[3]}"
        )
