"""slotlab.data: every dataset yields the same `Sample` dict; `build_dataset` is the entry point.

    from slotlab.data import build_dataset, make_loader
    dataset = build_dataset("clevr:~/data/CLEVR_v1.0", "train", "object_discovery")
    loader = make_loader(dataset, batch_size=64, shuffle=True, device="cuda")

The readers of other formats (multi_object, tfds_clevr, procedural, sprites) are imported lazily,
on first access of their names, so `import slotlab.data` never depends on them.
"""

from __future__ import annotations

import importlib
from typing import Any

from slotlab.data.build import build_dataset, make_loader, parse_spec
from slotlab.data.clevr import ClevrDataset
from slotlab.data.folder import ImageFolderDataset
from slotlab.data.io import read_id_mask, read_image, read_json
from slotlab.data.preprocess import Sample, clevr_preprocess, clevr_target

__all__ = [
    "ClevrDataset",
    "ImageFolderDataset",
    "Sample",
    "build_dataset",
    "clevr_preprocess",
    "clevr_target",
    "make_loader",
    "parse_spec",
    "read_id_mask",
    "read_image",
    "read_json",
]

# name -> module defining it, imported on first access.
_LAZY = {
    "read_multi_object_tfrecord": "slotlab.data.multi_object",
    "MultiObjectDataset": "slotlab.data.multi_object",
    "read_tfds_clevr": "slotlab.data.tfds_clevr",
    "TFDSClevrDataset": "slotlab.data.tfds_clevr",
    "ProceduralClevrDataset": "slotlab.data.procedural",
    "ProceduralSpritesDataset": "slotlab.data.sprites",
}


def __getattr__(name: str) -> Any:
    """Import a lazily exported name; ImportError with the reason if its module is missing."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ImportError(
            f"slotlab.data.{name} is not available: importing {module_name} failed "
            f"(module {err.name} is missing)"
        ) from err
    try:
        value = getattr(module, name)
    except AttributeError:
        raise ImportError(f"slotlab.data.{name} is not available: {module_name} lacks it") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
