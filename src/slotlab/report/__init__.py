"""An interactive report of a run: `slotlab report RUN --out DIR` writes DIR/index.html.

One self-contained page (no server, no network): the run's config, its evaluation beside the
untrained model's, the learning curves, and for the first N images the input, the
reconstruction, each slot, the segmentation against the ground truth and the attention of every
iteration (object discovery), or each slot's predicted object beside its matched ground truth
(set prediction), or the clips of a video model frame by frame. `build.py` computes the data
with the model; `page.py` writes the page, whose drawing and interaction are `report.js` and
`report.css` (package data, inlined).
"""

from slotlab.report.build import build_report, collect, pack, recombine, unpack
from slotlab.report.commands import register

__all__ = ["build_report", "collect", "pack", "recombine", "register", "unpack"]
