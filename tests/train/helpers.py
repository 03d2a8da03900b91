"""Tiny data and model settings shared by the training tests."""

from pathlib import Path

import numpy as np
from PIL import Image

TINY_MODEL = {
    "resolution": [32, 32],
    "num_slots": 4,
    "slot_size": 16,
    "mlp_hidden_size": 32,
    "encoder_channels": [16, 16, 16, 16],
    "decoder_channels": [16, 16, 16],
    "decoder_strides": [2, 2, 1],
}

TINY_ARGS = [
    "--steps", "6", "--batch-size", "4", "--log-every", "1", "--checkpoint-every", "2",
    "--eval-every", "3", "--eval-num", "8", "--image-every", "3", "--warmup-steps", "2",
    "--no-progress", "--num-workers", "0",
]


def write_folder(root: Path, num: int = 16, size: int = 32, seed: int = 0) -> Path:
    """A `folder:` dataset of coloured rectangles on grey with instance-id masks."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for i in range(num):
        image = np.full((size, size, 3), 128, np.uint8)
        mask = np.zeros((size, size), np.uint8)
        for obj in range(1, rng.integers(2, 4) + 1):
            h, w = rng.integers(6, 14, size=2)
            r, c = rng.integers(0, size - h), rng.integers(0, size - w)
            image[r : r + h, c : c + w] = rng.integers(0, 256, size=3)
            mask[r : r + h, c : c + w] = obj
        Image.fromarray(image).save(root / "images" / f"{i:04d}.png")
        Image.fromarray(mask).save(root / "masks" / f"{i:04d}.png")
    return root


def write_preset(path: Path, task: str = "object_discovery", model: dict | None = None) -> Path:
    import yaml

    path.write_text(yaml.safe_dump({
        "task": task, "model": model or TINY_MODEL, "data_options": {"resolution": [32, 32]},
    }))
    return path
