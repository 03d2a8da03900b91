"""`slotlab report RUN --out DIR`: the interactive report of a run."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add `slotlab report` to the CLI's sub-parsers."""
    p = sub.add_parser(
        "report",
        help="write an interactive HTML report of a run (slots, masks, attention, curves)",
        description="Write one self-contained HTML page (DIR/index.html; no server, no network) "
        "of a run: its config, evaluation beside the untrained model's, learning curves, and "
        "for the first N images the input, reconstruction, each slot (hover to highlight it, "
        "click to drop it and see the image recombined without it), the segmentation against "
        "the ground truth and the attention of every iteration, for each asked number of "
        "test-time iterations; for set prediction each slot's predicted object beside its "
        "matched ground truth; for video (SAVi) the clips frame by frame with their slots.",
    )
    p.add_argument("path", metavar="RUN", help="training run directory (or a model directory "
                   "with --data)")
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--data", default=None, metavar="SPEC",
                   help="dataset spec (default: the run's training data)")
    p.add_argument("--split", default=None,
                   help="split of the images (default: the run's eval split; train if absent)")
    p.add_argument("--num", type=int, default=8, help="number of images (default 8)")
    p.add_argument("--iterations", default=None, metavar="T,T,...",
                   help="test-time Slot Attention iterations to precompute, e.g. 1,3,5 "
                   "(default: the model's)")
    p.add_argument("--seed", type=int, default=None,
                   help="slot-noise seed (default: the run's seed)")
    p.add_argument("--device", default="cpu", help="device (default cpu)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from slotlab.report.build import build_report

    out = build_report(args.path, args.out, data=args.data, num=args.num,
                       iterations=args.iterations, split=args.split, seed=args.seed,
                       device=args.device)
    print(f"wrote {out}")
    return 0
