"""`slotlab data ...` subcommands: procedural data on disk, a contact sheet, and data caches.

    slotlab data generate --out DIR [--split train] [--num N] [--seed S] [--resolution HxW]
                          [--style clevr|sprites] [--workers W] [--overwrite]
    slotlab data show DIR [--split train] --out sheet.png [--num 16]
    slotlab data cache SPEC --out DIR [--split train] [--task object_discovery|set_prediction]
                       [--num N] [--resolution 64] [--workers 2] [--shard-size N] [--overwrite]

`generate` writes the CLEVR v1.0 layout (images/, scenes/, plus masks/) and prints images/s; a
split that is already there, or a directory that is not a generated dataset, is written into only
with --overwrite (another split can be added to a dataset root without it);
`show` tiles images with their instance masks (as colour segmentations) beside them;
`cache` preprocesses any dataset spec once into memory-mappable shards (read back with the spec
`cache:DIR`, see `slotlab.data.cache`) and prints images/s.

Every argument is checked before anything is rendered or read: a bad one, an --out that cannot
be written, or a write that fails (disk full) is one `error:` line.

A --resolution is height first, as everywhere in slotlab: N means N x N and HEIGHTxWIDTH means
HEIGHT rows and WIDTH columns, so CLEVR's 480-wide, 320-high frame is 320x480.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from slotlab.cli import check_writable_dir, non_negative_int, positive_int
from slotlab.data.options import normalize_split, parse_resolution
from slotlab.errors import ConfigError, DataError
from slotlab.io import atomic_write, write_hint
from slotlab.tasks import TASKS, normalize_task

STYLES = ("clevr", "sprites")
DEFAULT_RESOLUTION = {"clevr": (320, 480), "sprites": (64, 64)}  # (height, width)
DEFAULT_OBJECTS = {"clevr": (3, 10), "sprites": (2, 6)}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TILE_HEIGHT = 160  # pixels of one image in the contact sheet
SHEET_COLUMNS = 4  # image/mask pairs per row


def _split(text: str) -> str:
    """argparse type of --split: a name usable as a directory ("validation" is stored as
    "val")."""
    try:
        return normalize_split(text, None)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _resolution(text: str) -> tuple[int, int]:
    """argparse type of --resolution: `parse_resolution`, its error as a usage error."""
    try:
        return parse_resolution(text)
    except ConfigError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def register(sub: argparse._SubParsersAction) -> None:
    """Add `slotlab data generate|show|cache` to the top-level subparsers `sub`."""
    parser = sub.add_parser("data", help="generate, inspect and cache datasets")
    data_sub = parser.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")

    gen = data_sub.add_parser(
        "generate",
        help="write procedural scenes in the CLEVR v1.0 layout (with instance masks)",
        description="Write procedural scenes: images/{split}/, scenes/, masks/{split}/ "
        "(the CLEVR v1.0 layout plus uint8 instance masks).",
    )
    gen.add_argument(
        "--out", required=True, type=Path, metavar="DIR",
        help="dataset root to write (new, empty, or a generated dataset to add a split to)",
    )
    gen.add_argument(
        "--split", type=_split, default="train",
        help="split name: train, val, test, ... (default: train)",
    )
    gen.add_argument(
        "--num", type=positive_int, default=1000, help="number of images (default: 1000)"
    )
    gen.add_argument(
        "--seed", type=non_negative_int, default=0, help="dataset seed, >= 0 (default: 0)"
    )
    gen.add_argument(
        "--resolution",
        type=_resolution,
        default=None,
        help="N or HEIGHTxWIDTH, height first (default: 320x480 for clevr, 64 for sprites)",
    )
    gen.add_argument(
        "--style", choices=STYLES, default="clevr",
        help="clevr: CLEVR-style 3-D scenes; sprites: flat 2-D shapes (default: clevr)",
    )
    gen.add_argument(
        "--workers", type=positive_int, default=None,
        help="processes rendering in parallel (default: all usable cores)",
    )
    gen.add_argument(
        "--min-objects", type=positive_int, default=None,
        help="fewest objects per scene (default: 3 clevr, 2 sprites)",
    )
    gen.add_argument(
        "--max-objects",
        type=positive_int,
        default=None,
        help="most objects per scene (default: 10 clevr as in CLEVR, 6 sprites; 6 gives "
        "CLEVR6-like data)",
    )
    gen.add_argument(
        "--overwrite", action="store_true",
        help="replace the split if --out already has it (or write into a directory that is "
        "not a generated dataset)",
    )
    gen.set_defaults(func=run_generate)

    show = data_sub.add_parser(
        "show",
        help="save a contact sheet of images and their masks",
        description="Tile the first images of a split (with their instance masks, when the "
        "dataset has masks/) into one PNG.",
    )
    show.add_argument("dir", type=Path, help="dataset root (holding images/)")
    show.add_argument("--split", type=_split, default="train",
                      help="split name (default: train)")
    show.add_argument("--out", required=True, type=Path, metavar="FILE.png",
                      help="PNG file to write (replaced if it exists)")
    show.add_argument("--num", type=positive_int, default=16,
                      help="number of images (default: 16)")
    show.set_defaults(func=run_show)

    cache = data_sub.add_parser(
        "cache",
        help="preprocess a dataset once into memory-mappable shards (spec cache:DIR)",
        description="Build the dataset SPEC (any build_dataset spec, e.g. procedural, "
        "procedural-sprites, clevr:PATH, folder:PATH) and write its preprocessed samples to "
        "DIR/<split>/ as uint8 image shards (quantised: within 1/255 of the source in [-1, 1], "
        "fine for training, not for bit-exact evaluation), masks and targets. Read it back "
        "with the spec cache:DIR. Several splits can share one DIR.",
    )
    cache.add_argument("spec", help="dataset spec to cache, e.g. procedural or clevr:PATH")
    cache.add_argument("--out", required=True, type=Path, metavar="DIR",
                       help="cache root directory (each split is a directory in it)")
    cache.add_argument("--split", default="train", help="split: train, val, test (default: train)")
    cache.add_argument(
        "--task",
        default="object_discovery",
        choices=(*TASKS, *(t.replace("_", "-") for t in TASKS)),
        help="task whose preprocessing the cache holds (default: object_discovery)",
    )
    cache.add_argument(
        "--num", type=positive_int, default=None, help="cache the first N items (default: all)"
    )
    cache.add_argument(
        "--resolution",
        type=_resolution,
        default=None,
        help="N or HEIGHTxWIDTH (height first) passed to the dataset (default: its own)",
    )
    cache.add_argument(
        "--workers",
        type=non_negative_int,
        default=None,
        help="loader processes running the source (default: min(2, cores); 0 below 256 items)",
    )
    cache.add_argument(
        "--shard-size", type=positive_int, default=None, help="items per shard (default: 4096)"
    )
    cache.add_argument(
        "--overwrite", action="store_true", help="replace an existing cache of this split"
    )
    cache.set_defaults(func=run_cache)


def run_generate(args: argparse.Namespace) -> int:
    """`slotlab data generate`: render, write, report the throughput."""
    resolution = args.resolution or DEFAULT_RESOLUTION[args.style]
    split = normalize_split(args.split, None)  # a folder name; "validation" is CLEVR's "val"
    low, high = DEFAULT_OBJECTS[args.style]
    low = args.min_objects or low
    high = args.max_objects or max(high, low)
    if low > high:
        raise ConfigError(f"--min-objects {low} is larger than --max-objects {high}")
    out = Path(args.out).expanduser()
    check_dataset_out(out, split, getattr(args, "overwrite", False))
    try:
        root, seconds = _generate(args, out, split, resolution, low, high)
    except OSError as exc:  # a failed image write (disk full, ...); the scene file is atomic
        hint = write_hint(exc.errno) or "fix that"
        raise DataError(f"could not write the dataset under {out} ({exc.strerror or exc}); "
                        f"split {split!r} is incomplete: {hint}, then run the same command "
                        "with --overwrite") from None
    print(
        f"wrote {args.num} {args.style} images ({resolution[0]}x{resolution[1]}, height x "
        f"width) of split {split!r} "
        f"to {root} in {seconds:.1f} s: {args.num / max(seconds, 1e-9):.1f} images/s"
    )
    return 0


def _generate(args: argparse.Namespace, out: Path, split: str, resolution: tuple[int, int],
              low: int, high: int) -> tuple[Path, float]:
    """Render and write the split; (dataset root, seconds)."""
    start = time.perf_counter()
    if args.style == "clevr":
        from slotlab.data.procedural import generate_clevr_dir

        root = generate_clevr_dir(
            out,
            split,
            args.num,
            args.seed,
            resolution,
            workers=args.workers,
            min_objects=low,
            max_objects=high,
            progress=sys.stderr.isatty(),
        )
    else:
        from slotlab.data.sprites import generate_sprites_dir

        root = generate_sprites_dir(
            out,
            split,
            args.num,
            args.seed,
            resolution,
            workers=args.workers,
            min_objects=low,
            max_objects=high,
        )
    return root, time.perf_counter() - start


DATASET_ENTRIES = {"images", "masks", "scenes"}


def check_dataset_out(out: Path, split: str, overwrite: bool) -> None:
    """Before rendering: --out must be a directory that can be written, and a split already in
    it, or a directory that is not a generated dataset, is written into only with
    `overwrite`. One `ConfigError` otherwise."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot write the dataset: --out {out} is a file; give a directory")
    if out.is_dir() and not overwrite:
        names = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
        others = [n for n in names if n not in DATASET_ENTRIES]
        if others:
            shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
            raise ConfigError(
                f"--out {out} is not empty and is not a generated dataset (it holds {shown}); "
                "give a new or empty directory, or pass --overwrite to write into it anyway")
        existing = [f"{sub}/{split}" for sub in ("images", "masks")
                    if (out / sub / split).is_dir() and any((out / sub / split).iterdir())]
        existing += [f"scenes/{p.name}" for p in sorted((out / "scenes").glob(
            f"*_{split}_scenes.json"))] if (out / "scenes").is_dir() else []
        if existing:
            raise ConfigError(
                f"--out {out} already holds split {split!r} ({', '.join(existing)}); pass "
                "--overwrite to replace it, or choose another --split or --out")
    check_writable_dir(out)


def run_cache(args: argparse.Namespace) -> int:
    """`slotlab data cache`: build the dataset, write its cache, report the throughput."""
    from slotlab.data.build import NO_PATH_KINDS, build_dataset
    from slotlab.data.cache import DEFAULT_SHARD_SIZE, read_cache_meta, write_cache

    options = {} if args.resolution is None else {"resolution": args.resolution}
    task = normalize_task(args.task)
    out = Path(args.out).expanduser()
    split = normalize_split(args.split, None)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"cannot write the cache: --out {out} is a file; give a directory")
    if (out / split).exists() and not args.overwrite:
        raise DataError(f"cache {out / split} already exists; pass --overwrite to replace it, "
                        "or choose another --split or --out")
    check_writable_dir(out)
    build_options = dict(options)
    if args.num and args.spec in NO_PATH_KINDS:  # generated data: as many items as asked for
        build_options["num"] = args.num
    dataset = build_dataset(args.spec, args.split, task, **build_options)
    start = time.perf_counter()
    path = write_cache(
        dataset,
        args.out,
        args.split,
        task,
        num=args.num,
        workers=args.workers,
        shard_size=args.shard_size or DEFAULT_SHARD_SIZE,
        source=args.spec,
        source_options=options,
        overwrite=args.overwrite,
    )
    seconds = time.perf_counter() - start
    meta = read_cache_meta(args.out, path.name)
    count = meta["count"]
    height, width = meta["resolution"]
    print(
        f"cached {count} {height}x{width} images of {args.spec} (split {path.name!r}, {task}) "
        f"to {path} in {seconds:.1f} s: {count / max(seconds, 1e-9):.1f} images/s; read it "
        f"with the spec cache:{args.out}"
    )
    return 0


def run_show(args: argparse.Namespace) -> int:
    """`slotlab data show`: write a contact sheet PNG."""
    out = Path(args.out).expanduser()
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the PNG file to write, e.g. "
                          f"{out / 'sheet.png'}")
    check_writable_dir(out.parent)
    sheet = contact_sheet(args.dir, args.split, args.num)
    atomic_write(out, lambda f: Image.fromarray(sheet).save(f, format="PNG"), "contact sheet")
    print(f"wrote {out} ({sheet.shape[1]}x{sheet.shape[0]})")
    return 0


def mask_palette(n: int = 256) -> np.ndarray:
    """A fixed palette [n, 3] uint8 for instance ids: black background, distinct hues after."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    golden = 0.618033988749895
    for i in range(1, n):
        hue = (i * golden) % 1.0
        value = 1.0 if (i // 8) % 2 == 0 else 0.7
        palette[i] = _hsv_to_rgb(hue, 0.75, value)
    return palette


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    k = (np.array([5.0, 3.0, 1.0]) + h * 6.0) % 6.0
    rgb = v - v * s * np.clip(np.minimum(k, 4.0 - k), 0.0, 1.0)
    return np.round(rgb * 255.0).astype(np.uint8)


def _tile(array: np.ndarray, height: int, nearest: bool) -> np.ndarray:
    """Resize an image array to `height` rows, keeping the aspect ratio."""
    h, w = array.shape[:2]
    width = max(1, round(w * height / h))
    if (h, w) == (height, width):
        return array
    resample = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(array).resize((width, height), resample))


def contact_sheet(root: str | Path, split: str = "train", num: int = 16) -> np.ndarray:
    """A uint8 [H, W, 3] grid of the first `num` images of `split` with their coloured masks.

    Reads root/images/{split}/*.png (sorted) and, when present, root/masks/{split}/<same name>.
    Raises DataError for a missing directory or one without images.
    """
    from slotlab.data.io import read_id_mask, read_image

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"dataset directory {root} does not exist")
    image_dir = root / "images" / split
    if not image_dir.is_dir():
        raise DataError(f"{root} has no images/{split} directory (is it a generated dataset?)")
    paths = sorted(p for p in image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:num]
    if not paths:
        raise DataError(f"image directory {image_dir} holds no PNG or JPEG images")
    mask_dir = root / "masks" / split
    with_masks = mask_dir.is_dir()
    palette = mask_palette()

    tiles = []
    for path in paths:
        image = read_image(path)
        height = TILE_HEIGHT
        parts = [_tile(image, height, nearest=image.shape[0] < height)]  # crisp when enlarged
        if with_masks:
            mask_path = mask_dir / path.name
            if not mask_path.is_file():
                raise DataError(f"mask file {mask_path} is missing (its image exists)")
            ids = read_id_mask(mask_path)
            colour = palette[np.clip(ids, 0, len(palette) - 1)]
            parts.append(_tile(colour, height, nearest=True))
        tiles.append(np.concatenate(parts, axis=1))

    gap = 4
    tile_h = max(t.shape[0] for t in tiles)
    tile_w = max(t.shape[1] for t in tiles)
    cols = min(SHEET_COLUMNS, len(tiles))
    rows = math.ceil(len(tiles) / cols)
    sheet = np.full(
        (rows * tile_h + (rows + 1) * gap, cols * tile_w + (cols + 1) * gap, 3), 255, np.uint8
    )
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        y, x = gap + r * (tile_h + gap), gap + c * (tile_w + gap)
        sheet[y : y + tile.shape[0], x : x + tile.shape[1]] = tile
    return sheet
