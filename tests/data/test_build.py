"""build_dataset dispatch and errors, parse_spec, make_loader settings."""

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from slotlab.data import ClevrDataset, ImageFolderDataset, build_dataset, make_loader, parse_spec
from slotlab.errors import ConfigError, DataError


class Recorder(torch.utils.data.Dataset):
    """Stands in for a dataset class another module provides; records how it was called."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __len__(self):
        return 1

    def __getitem__(self, item):
        return {"image": torch.zeros(3, 2, 2)}


class TensorList(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, item):
        return {"image": torch.full((1,), float(item))}


def fake_module(monkeypatch, module: str, cls_name: str) -> None:
    mod = types.ModuleType(module)
    setattr(mod, cls_name, type(cls_name, (Recorder,), {}))
    monkeypatch.setitem(sys.modules, module, mod)


def write_tiny_clevr(root: Path) -> None:
    (root / "images" / "val").mkdir(parents=True)
    (root / "scenes").mkdir()
    obj = {"3d_coords": [0.0, 1.0, 0.35], "size": "small", "color": "red",
           "material": "metal", "shape": "cube"}  # fmt: skip
    scenes = []
    for i in range(2):
        name = f"CLEVR_val_{i:06d}.png"
        Image.fromarray(np.full((320, 480, 4), 200, np.uint8), "RGBA").save(
            root / "images" / "val" / name
        )
        scenes.append({"image_index": i, "image_filename": name, "objects": [obj] * (3 + i)})
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps({"scenes": scenes}))


# --------------------------------------------------------------------------- parse_spec


def test_parse_spec_forms(tmp_path):
    assert parse_spec("procedural") == ("procedural", None)
    assert parse_spec("procedural-sprites") == ("procedural-sprites", None)
    assert parse_spec(f"clevr:{tmp_path}") == ("clevr", tmp_path)
    assert parse_spec("folder:a:b") == ("folder", Path("a:b"))  # only the first ':' splits
    assert parse_spec("tfds_clevr:x") == ("tfds-clevr", Path("x"))
    with pytest.raises(DataError, match="procedural takes no path"):
        parse_spec("procedural:somewhere")
    with pytest.raises(DataError, match=r"has no path; expected clevr:PATH"):
        parse_spec("clevr:")


def test_unknown_spec_lists_the_valid_forms():
    with pytest.raises(DataError, match=r"unknown dataset spec 'imagenet:x'.*clevr:PATH.*folder"):
        build_dataset("imagenet:x", "train", "object_discovery")


def test_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"nowhere .*does not exist.*procedural"):
        build_dataset(f"clevr:{tmp_path / 'nowhere'}", "train", "object_discovery")


# --------------------------------------------------------------------------- dispatch


def test_clevr_and_folder_dispatch(tmp_path):
    write_tiny_clevr(tmp_path)
    ds = build_dataset(f"clevr:{tmp_path}", "validation", "set_prediction")
    assert isinstance(ds, ClevrDataset) and ds.split == "val" and len(ds) == 2
    assert ds[1]["target"].shape == (10, 19)
    folder = build_dataset(f"folder:{tmp_path / 'images' / 'val'}", "all", "object_discovery")
    assert isinstance(folder, ImageFolderDataset) and len(folder) == 2
    with pytest.raises(DataError, match="no split directories"):
        build_dataset(f"folder:{tmp_path / 'images' / 'val'}", "test", "object_discovery")
    with pytest.raises(ConfigError, match=r"'folder'.*max_objects"):
        build_dataset(f"folder:{tmp_path / 'images' / 'val'}", "train", max_objects=6)
    with pytest.raises(ConfigError, match="unknown split"):
        build_dataset(f"clevr:{tmp_path}", "dev", "object_discovery")


def test_dispatch_to_the_other_dataset_classes(tmp_path, monkeypatch):
    fake_module(monkeypatch, "slotlab.data.procedural", "ProceduralClevrDataset")
    fake_module(monkeypatch, "slotlab.data.sprites", "ProceduralSpritesDataset")
    fake_module(monkeypatch, "slotlab.data.multi_object", "MultiObjectDataset")
    fake_module(monkeypatch, "slotlab.data.tfds_clevr", "TFDSClevrDataset")
    fake_module(monkeypatch, "slotlab.data.cache", "CacheDataset")
    record = tmp_path / "multi_dsprites_colored_on_grayscale.tfrecords"
    record.write_bytes(b"")

    ds = build_dataset("procedural", "val", "object_discovery", num_scenes=5)
    assert type(ds).__name__ == "ProceduralClevrDataset"
    assert ds.kwargs == {"split": "val", "task": "object_discovery", "num_scenes": 5}
    ds = build_dataset("procedural-sprites", "train", "object_discovery")
    assert type(ds).__name__ == "ProceduralSpritesDataset"

    for spec, name in [("clevr-with-masks", "clevr_with_masks"), ("tetrominoes", "tetrominoes"),
                       ("objects-room", "objects_room")]:  # fmt: skip
        ds = build_dataset(f"{spec}:{record}", "test", "object_discovery")
        assert ds.args == (record, name) and ds.kwargs["split"] == "test"

    ds = build_dataset(f"multi-dsprites:{record}", "train", "object_discovery")
    assert ds.args == (record, "multi_dsprites_colored_on_grayscale")
    ds = build_dataset(f"multi-dsprites:{record}", "train", "object_discovery", variant="binarized")
    assert ds.args[1] == "multi_dsprites_binarized" and "variant" not in ds.kwargs
    plain = tmp_path / "sprites.tfrecords"
    plain.write_bytes(b"")
    with pytest.raises(DataError, match=r"variant of .*sprites\.tfrecords"):
        build_dataset(f"multi-dsprites:{plain}", "train", "object_discovery")

    ds = build_dataset(f"tfds-clevr:{tmp_path}", "validation", "set_prediction")
    assert type(ds).__name__ == "TFDSClevrDataset"
    assert ds.args == (tmp_path,) and ds.kwargs == {"split": "val", "task": "set_prediction"}
    ds = build_dataset(f"tfds-clevr:{tmp_path}", "train_eval", "set_prediction")
    assert ds.kwargs["split"] == "train_eval"
    ds = build_dataset(f"cache:{tmp_path}", "train", "object_discovery")
    assert type(ds).__name__ == "CacheDataset"


def test_missing_module_gives_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "slotlab.data.cache", None)  # import now fails
    with pytest.raises(DataError, match=r"'cache' is not available yet"):
        build_dataset(f"cache:{tmp_path}", "train", "object_discovery")


# --------------------------------------------------------------------------- make_loader


def test_make_loader_settings_and_seeded_order():
    ds = TensorList(10)
    loader = make_loader(ds, batch_size=4, shuffle=True, device="cpu", seed=3)
    assert loader.num_workers == 0 and not loader.pin_memory and loader.drop_last
    first = [b["image"].flatten().tolist() for b in loader]
    again = [b["image"].flatten().tolist() for b in make_loader(ds, 4, True, "cpu", seed=3)]
    assert first == again and len(first) == 2  # same seed, same order; ragged batch dropped
    other = [b["image"].flatten().tolist() for b in make_loader(ds, 4, True, "cpu", seed=4)]
    assert other != first
    evaluation = make_loader(ds, batch_size=4, shuffle=False, device="cpu")
    assert not evaluation.drop_last and len(list(evaluation)) == 3


def test_make_loader_workers_for_a_larger_dataset():
    loader = make_loader(TensorList(1000), 8, shuffle=True, device=torch.device("cpu"))
    assert 1 <= loader.num_workers <= 2 and loader.persistent_workers


def test_make_loader_batch_larger_than_dataset():
    with pytest.raises(ConfigError, match=r"batch size 16 is larger than the dataset \(10"):
        make_loader(TensorList(10), batch_size=16, shuffle=True, device="cpu", drop_last=True)
    assert len(make_loader(TensorList(10), 16, shuffle=False, device="cpu")) == 1
    with pytest.raises(ConfigError, match="positive"):
        make_loader(TensorList(10), 0, shuffle=False, device="cpu")
