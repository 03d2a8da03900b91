"""Throughput of slotlab's procedural data: generation and DataLoader images/s.

    python benchmarks/data_throughput.py [--num 200] [--batch-size 64]

Rows:
- CLEVR-style 128x128 (object discovery: the official crop rendered straight at 128x128, as
  `ProceduralClevrDataset` does), one process;
- CLEVR-style 480x320 full frame (what `slotlab data generate` renders), one process;
- sprites 64x64, one process;
- a DataLoader over `ProceduralClevrDataset` at 128x128, batch 64, with 0 and 2 workers.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import torch
from torch.utils.data import DataLoader

from slotlab.data.procedural import ProceduralClevrDataset, procedural_scene, render_scene
from slotlab.data.sprites import ProceduralSpritesDataset


def _rate(fn: Callable[[int], object], num: int) -> float:
    """Images/s of calling fn(i) for i in range(num)."""
    start = time.perf_counter()
    for i in range(num):
        fn(i)
    return num / (time.perf_counter() - start)


def _loader_rate(dataset: ProceduralClevrDataset, batch_size: int, workers: int) -> float:
    """Images/s of iterating a DataLoader over `dataset` (worker start-up included)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=workers, shuffle=False)
    start = time.perf_counter()
    seen = 0
    for batch in loader:
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=200, help="images per row (default 200)")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    num = max(args.num, 1)

    clevr = ProceduralClevrDataset("train", "object_discovery", num=num)
    sprites = ProceduralSpritesDataset("train", num=num * 10)

    def full_frame(i: int) -> object:
        return render_scene(procedural_scene(0, "bench", i), 480, 320)

    rows = [
        ("CLEVR-style 128x128 (dataset item)", "1 process", _rate(clevr.__getitem__, num)),
        ("CLEVR-style 480x320 (full render)", "1 process", _rate(full_frame, max(num // 4, 1))),
        ("sprites 64x64 (dataset item)", "1 process", _rate(sprites.__getitem__, num * 10)),
    ]
    loader_set = ProceduralClevrDataset("train", "object_discovery", num=max(num, args.batch_size))
    for workers in (0, 2):
        rate = _loader_rate(loader_set, args.batch_size, workers)
        rows.append(
            (f"DataLoader CLEVR-style 128x128, batch {args.batch_size}", f"{workers} workers", rate)
        )

    width = max(len(r[0]) for r in rows)
    print(f"{'what':<{width}}  {'how':<11}  {'images/s':>9}")
    print(f"{'-' * width}  {'-' * 11}  {'-' * 9}")
    for what, how, rate in rows:
        print(f"{what:<{width}}  {how:<11}  {rate:>9.1f}")


if __name__ == "__main__":
    main()
