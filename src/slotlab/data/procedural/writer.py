"""Writing procedural scenes to disk in the CLEVR v1.0 layout, with several processes."""

from __future__ import annotations

import datetime
import json
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from slotlab.data.build import usable_cores
from slotlab.data.clevr_vocab import NATIVE_SIZE
from slotlab.data.options import parse_resolution
from slotlab.data.procedural.render import render_scene
from slotlab.data.procedural.scenes import procedural_scene, scene_to_json
from slotlab.errors import ConfigError, DataError
from slotlab.io import atomic_write

__all__ = ["NATIVE_RESOLUTION", "generate_clevr_dir", "prepare_output_dir"]

NATIVE_RESOLUTION = (NATIVE_SIZE[1], NATIVE_SIZE[0])  # (height, width) of CLEVR v1.0 images


def prepare_output_dir(root: Path, split: str, prefix: str, num: int) -> None:
    """Create images/{split}, masks/{split} and scenes/ under `root`, and delete the images
    and masks `{prefix}NNNNNN.png` with index >= num left by an earlier, larger run (so the
    folders and the new scene file agree). DataError if `root` cannot be written."""
    try:
        for sub in ("images", "masks"):
            folder = root / sub / split
            folder.mkdir(parents=True, exist_ok=True)
            for path in folder.glob(f"{prefix}*.png"):
                stem = path.stem[len(prefix) :]
                if stem.isdigit() and int(stem) >= num:
                    path.unlink()
        (root / "scenes").mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write the dataset under {root}: {err.strerror or err}") from None


def _write_one(job: tuple[str, str, int, int, tuple[int, int], int, int, int]) -> dict[str, Any]:
    root, split, index, seed, size, min_objects, max_objects, supersample = job
    scene = procedural_scene(seed, split, index, min_objects, max_objects, image_size=size)
    image, mask = render_scene(scene, size[0], size[1], None, supersample)
    name = scene["image_filename"]
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(Path(root, "images", split, name), compress_level=3)
    Image.fromarray(mask, "L").save(Path(root, "masks", split, name), compress_level=3)
    return scene_to_json(scene)


def generate_clevr_dir(
    out: str | Path,
    split: str = "train",
    num: int = 1000,
    seed: int = 0,
    resolution: tuple[int, int] | int | str = NATIVE_RESOLUTION,
    workers: int | None = None,
    *,
    min_objects: int = 3,
    max_objects: int = 10,
    supersample: int = 2,
    progress: bool = False,
) -> Path:
    """Write `num` procedural scenes of `split` in the CLEVR v1.0 layout under `out`.

    Writes images/{split}/CLEVR_{split}_{000000}.png (RGBA, alpha 255, like CLEVR),
    masks/{split}/CLEVR_{split}_{000000}.png (uint8 ids: 0 = background, i + 1 = object i) and
    scenes/CLEVR_{split}_scenes.json ({"info": ..., "scenes": [...]} with CLEVR's fields).

    Args:
        out: the dataset root (created if needed; existing files of the split are replaced).
        split: the split name (e.g. "train", "val", "test").
        num: number of images.
        seed: dataset seed; image i is `procedural_scene(seed, split, i, ...)`.
        resolution: (height, width) of the images, or one int (default 320x480, CLEVR's);
            `pixel_coords` refer to this size.
        workers: processes to render with (None = the usable CPU cores).
        min_objects, max_objects: object count range (CLEVR: 3-10).
        supersample: samples per pixel side.
        progress: show a tqdm progress bar.
    Returns:
        the dataset root as a Path.
    """
    root = Path(out).expanduser()
    height, width = parse_resolution(resolution)
    if num < 0:
        raise ConfigError(f"num must be >= 0, got {num}")
    prepare_output_dir(root, split, f"CLEVR_{split}_", num)

    jobs = [
        (str(root), split, i, int(seed), (width, height), min_objects, max_objects, supersample)
        for i in range(num)
    ]
    workers = usable_cores() if workers is None else max(int(workers), 1)
    workers = min(workers, max(num, 1))
    if workers == 1:
        results = map(_write_one, jobs)
        pool = None
    else:
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = multiprocessing.get_context(method).Pool(workers)
        results = pool.imap(_write_one, jobs, chunksize=max(1, min(16, num // (4 * workers))))
    try:
        if progress:
            from tqdm import tqdm

            results = tqdm(results, total=num, desc=f"rendering {split}", unit="img")
        scenes = list(results)
    finally:
        if pool is not None:
            pool.close()
            pool.join()

    info = {
        "split": split,
        "version": "1.0",
        "date": datetime.date.today().strftime("%m/%d/%Y"),
        "license": "Creative Commons Attribution (CC BY 4.0)",
        "note": f"procedural slotlab scenes, seed {seed}, {width}x{height}",
    }
    text = json.dumps({"info": info, "scenes": scenes})
    atomic_write(root / "scenes" / f"CLEVR_{split}_scenes.json", lambda f: f.write(text.encode()))
    return root
