"""DataLoader images/s: a `cache:DIR` built with `write_cache` against the spec it was built from.

    python benchmarks/loader_throughput.py [--num 256] [--sprites-num 2048] [--batch-size 64]

Builds, in a temporary directory, caches of `procedural` at 128x128 (object discovery) and of
`procedural-sprites` at 64x64, then times the loader `slotlab train` reads its batches from
(`slotlab.train.batches.training_batches`) with 0 and 2 workers over: the source spec, the cache
(float samples) and the cache with `as_uint8=True` (uint8 samples, normalised later on the GPU).
Each loader first runs one untimed epoch (worker start-up, page cache), then timed epochs until
at least `--seconds` have passed, so the numbers are steady-state rates.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from slotlab.data import build_dataset
from slotlab.data.cache import CacheDataset, write_cache
from slotlab.train.batches import training_batches
from slotlab.train.config import TrainConfig


def loader_rate(dataset: Dataset, batch_size: int, workers: int, seconds: float) -> float:
    """Steady-state images/s of the training loader over `dataset` (batches in training's
    shuffled step order)."""
    cfg = TrainConfig(batch_size=batch_size, num_workers=workers)
    per_epoch = len(dataset) // batch_size
    with training_batches(cfg, dataset, 0, (0, batch_size), pin_memory=False) as batches:
        for _ in range(per_epoch):  # warm-up epoch: worker start-up, page cache
            next(batches)
        seen, start = 0, time.perf_counter()
        while True:
            for _ in range(per_epoch):
                seen += next(batches)["image"].shape[0]
            elapsed = time.perf_counter() - start
            if elapsed >= seconds:
                return seen / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=256, help="procedural images (default 256)")
    parser.add_argument(
        "--sprites-num", type=int, default=2048, help="sprite images (default 2048)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--seconds", type=float, default=1.0, help="minimum timed seconds per cache row"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    cases = [
        ("procedural", (128, 128), max(args.num, args.batch_size)),
        ("procedural-sprites", (64, 64), max(args.sprites_num, args.batch_size)),
    ]
    rows: list[tuple[str, str, str, int, float]] = []
    with tempfile.TemporaryDirectory(prefix="slotlab-bench-") as tmp:
        for spec, resolution, num in cases:
            size = f"{resolution[0]}x{resolution[1]}"
            source = build_dataset(spec, "train", resolution=resolution, num=num)
            root = Path(tmp) / spec
            start = time.perf_counter()
            write_cache(source, root, "train", num=num, workers=2, source=spec, progress=False)
            rows.append((spec, size, "write_cache", 2, num / (time.perf_counter() - start)))
            readers = [
                (spec, source, 0.0),  # one pass: the source costs the same every epoch
                (f"cache:{root.name}", CacheDataset(root), args.seconds),
                (f"cache:{root.name} uint8", CacheDataset(root, as_uint8=True), args.seconds),
            ]
            for name, dataset, seconds in readers:
                for workers in (0, 2):
                    rate = loader_rate(dataset, args.batch_size, workers, seconds)
                    rows.append((name, size, f"loader b{args.batch_size}", workers, rate))

    header = ("data", "size", "what", "workers", "images/s")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    print("  ".join(f"{h:<{w}}" for h, w in zip(header, widths)) + f"  {header[4]:>9}")
    print("  ".join("-" * w for w in widths) + "  " + "-" * 9)
    for row in rows:
        cells = "  ".join(f"{str(c):<{w}}" for c, w in zip(row[:4], widths))
        print(f"{cells}  {row[4]:>9.1f}")


if __name__ == "__main__":
    main()
