"""Fuzzing the image / id-mask / JSON readers and ClevrDataset's scene parsing.

`read_image`, `read_id_mask` and `read_json` must return normally or raise `DataError` on any
bytes: random ones (also behind the magic bytes of every image format Pillow sniffs), mutated
genuine PNGs (raw, or with chunk CRCs recomputed so the damage reaches the decoder), PNGs with
forged IHDR dimensions, and JSON garbage. `ClevrDataset` must raise only `DataError` on a CLEVR
layout whose scene JSON is mutated: unknown labels, strings where numbers go, missing keys,
duplicated or absurd image indices, nested garbage.
"""

from __future__ import annotations

import copy
import functools
import io
import json
import resource
import shutil
import struct
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from PIL import Image

from slotlab.data.clevr import ClevrDataset
from slotlab.data.io import read_id_mask, read_image, read_json
from slotlab.errors import DataError
from tests.fuzz import (
    REFERENCE,
    counted,
    forged_ints,
    fuzz_settings,
    mutate,
    outcome,
    reference,
    report_fuzz_counts,  # noqa: F401  (autouse: prints the example counts)
)

pytestmark = [
    pytest.mark.timeout(300),  # a hard stop for a real hang (deadlines only measure)
    pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning"),
    pytest.mark.filterwarnings("ignore:Corrupt EXIF data:UserWarning"),
]

CLEVR_RAW = ("formats", "tfds_clevr", "raw", "CLEVR_v1.0")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Leading bytes by which Pillow recognises its formats: random bodies behind them reach the
# individual decoders (not only the "cannot identify image file" path).
MAGICS = (
    b"",
    PNG_SIGNATURE,
    b"GIF89a",
    b"GIF87a",
    b"BM",
    b"\xff\xd8\xff",
    b"II*\x00",
    b"MM\x00*",
    b"P5\n",
    b"P6\n",
    b"P4\n",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x00\x00\x01\x00",
    b"8BPS",
    b"DDS ",
    b"qoif",
    b"\x01\xda",
    b"icns",
    b"\x59\xa6\x6a\x95",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz_images")


def png_bytes(array: np.ndarray, mode: str | None = None) -> bytes:
    buf = io.BytesIO()
    image = Image.fromarray(array) if mode is None else Image.fromarray(array).convert(mode)
    image.save(buf, "PNG")
    return buf.getvalue()


@functools.cache
def sample_pngs() -> dict[str, bytes]:
    """Small PNGs in every mode the readers handle, plus a genuine CLEVR image if present."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    ids = rng.integers(0, 4, (7, 9), dtype=np.uint8)
    pngs = {
        "rgb": png_bytes(rgb),
        "rgba": png_bytes(rgb, "RGBA"),
        "l": png_bytes(ids),
        "p": png_bytes(rgb, "P"),
        "1": png_bytes(ids * 80, "1"),
        "la": png_bytes(rgb, "LA"),
        "i16": png_bytes(ids.astype(np.uint16) * 1000),
        "grey-rgb": png_bytes(np.repeat(ids[:, :, None], 3, axis=2)),
    }
    path = REFERENCE.joinpath(*CLEVR_RAW, "images", "val", "CLEVR_val_000000.png")
    if path.is_file():  # without ../shared the synthetic PNGs are still fuzzed
        pngs["clevr"] = path.read_bytes()
    return pngs


def png_chunks(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(offset, type, body) of each chunk of a genuine PNG."""
    out, pos = [], 8
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        out.append((pos, data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]))
        pos += 12 + length
    return out


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def rebuild_png(data: bytes, replace: dict[int, bytes]) -> bytes:
    """The PNG with the bodies of some chunks (by index) replaced, their CRCs made valid."""
    parts = [data[:8]]
    for i, (_, kind, body) in enumerate(png_chunks(data)):
        parts.append(chunk(kind, replace.get(i, body)))
    return b"".join(parts)


def read_both(path: Path) -> None:
    image = outcome(DataError, read_image, path)
    if image is not None:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    mask = outcome(DataError, read_id_mask, path)
    if mask is not None:
        assert mask.ndim == 2 and mask.dtype in (np.uint8, np.int64)


# --------------------------------------------------------------------------------------------
# read_image / read_id_mask
# --------------------------------------------------------------------------------------------

tick_random = counted("test_images_random_bytes")


@fuzz_settings(max_examples=400)
@given(magic=st.sampled_from(MAGICS), body=st.binary(max_size=200))
@example(magic=b"", body=b"")
def test_images_random_bytes(workdir: Path, magic: bytes, body: bytes) -> None:
    tick_random()
    path = workdir / "random.img"
    path.write_bytes(magic + body)
    read_both(path)


tick_mutated = counted("test_images_mutated_png")


@fuzz_settings(max_examples=300)
@given(
    name=st.sampled_from(["rgb", "rgba", "l", "p", "1", "la", "i16", "grey-rgb", "clevr"]),
    valid_crc=st.booleans(),
    data=st.data(),
)
def test_images_mutated_png(workdir: Path, name: str, valid_crc: bool, data: st.DataObject) -> None:
    """Raw byte mutations, or mutations of chunk bodies with valid CRCs (they reach zlib and
    the IHDR / PLTE / tRNS / IDAT handling instead of stopping at the CRC check)."""
    tick_mutated()
    original = sample_pngs().get(name) or sample_pngs()["rgb"]
    if valid_crc:
        chunks = png_chunks(original)
        index = data.draw(st.integers(0, len(chunks) - 1))
        body = chunks[index][2]
        if len(body) > 2048:  # large IDAT: mutate a window
            start = data.draw(st.integers(0, len(body) - 512))
            body = body[:start] + data.draw(mutate(body[start : start + 512])) + body[start + 512 :]
        else:
            body = data.draw(mutate(body))
        blob = rebuild_png(original, {index: body})
    else:
        blob = data.draw(mutate(original))
    path = workdir / "mutated.png"
    path.write_bytes(blob)
    read_both(path)


tick_dims = counted("test_png_forged_dimensions")


@fuzz_settings(max_examples=80)
@given(
    width=forged_ints(480, 2**16, 12_000),
    height=forged_ints(320, 2**16, 12_000),
    depth_color=st.sampled_from(
        [(8, 2), (8, 6), (8, 0), (16, 0), (16, 2), (1, 0), (8, 3), (8, 4), (3, 0), (8, 7), (0, 2)]
    ),
    name=st.sampled_from(["rgb", "l", "clevr"]),
)
@example(width=12_000, height=12_000, depth_color=(8, 6), name="rgb")  # under the bomb limit
@example(width=2**31 - 1, height=2**31 - 1, depth_color=(16, 6), name="rgb")
def test_png_forged_dimensions(
    workdir: Path, width: int, height: int, depth_color: tuple[int, int], name: str
) -> None:
    """IHDR with forged (valid-CRC) width / height / bit depth / colour type: DataError, and
    the decoder's buffer for the forged size is never filled (peak RSS grows < 256 MiB)."""
    tick_dims()
    original = sample_pngs().get(name) or sample_pngs()["rgb"]
    header = png_chunks(original)[0][2]
    ihdr = struct.pack(">II", width % 2**32, height % 2**32) + bytes(depth_color) + header[10:]
    path = workdir / "forged.png"
    path.write_bytes(rebuild_png(original, {0: ihdr}))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    read_both(path)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024, f"peak RSS grew by {grown_kib} KiB for {width}x{height}"


# --------------------------------------------------------------------------------------------
# read_json
# --------------------------------------------------------------------------------------------

JSON_GARBAGE = {  # sampled by name, so a failing example prints short
    "empty": b"",
    "utf8-bom": b"\xef\xbb\xbf{}",
    "utf16": b"\xff\xfe{\x00}\x00",
    "deep-lists": b"[" * 100_000,  # nesting far deeper than the recursion limit
    "deep-objects": b'{"a":' * 50_000,
    "long-int": b"1" * 5_000,  # more digits than Python converts to an int
    "long-negative-int": b"-" + b"9" * 4_301,
    "huge-exponent": b"1e999999",
    "nan": b"NaN",
    "lone-surrogate": b'"\\ud800"',
    "short-escape": b'"\\u00"',
    "nul": b"\x00",
    "unclosed": b'{"scenes": [}',
}

tick_json = counted("test_read_json_garbage")


@fuzz_settings(max_examples=400)
@given(
    blob=st.one_of(
        st.sampled_from(sorted(JSON_GARBAGE)).map(JSON_GARBAGE.__getitem__),
        st.binary(max_size=100),
        st.text(alphabet='[]{}",:0123456789.eE+-truefalsn \\u', max_size=60).map(str.encode),
    ),
    data=st.data(),
)
def test_read_json_garbage(workdir: Path, blob: bytes, data: st.DataObject) -> None:
    tick_json()
    if len(blob) < 1000 and data.draw(st.booleans()):
        blob = data.draw(mutate(blob or b"{}", max_ops=2))
    path = workdir / "garbage.json"
    path.write_bytes(blob)
    outcome(DataError, read_json, path)


@pytest.mark.parametrize("name", ["deep-lists", "deep-objects", "long-int", "long-negative-int"])
def test_read_json_known_garbage(workdir: Path, name: str) -> None:
    """Inputs json.load answers with RecursionError / a plain ValueError (before the fix)."""
    path = workdir / f"{name}.json"
    path.write_bytes(JSON_GARBAGE[name])
    with pytest.raises(DataError, match="is not valid JSON"):
        read_json(path)


# --------------------------------------------------------------------------------------------
# ClevrDataset on mutated scene JSON
# --------------------------------------------------------------------------------------------

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["red", "metal", "cube", "small", "pink", "", "CLEVR_val_000000.png"]),
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=8,
)
FIELD_VALUES = {
    "color": ["gray", "blue", "cyan", "pink", "Red", "", 3, None, ["red"]],
    "size": ["small", "large", "medium", 1, True],
    "shape": ["cube", "sphere", "cylinder", "cone", 0.5],
    "material": ["rubber", "metal", "glass", {}],
    "3d_coords": [
        [0, 0, 0],
        [1e308, -1e308, 0.0],
        [2**63, -1, 0],
        [10**30, 1, 2],
        [True, False, 1],
        ["1", 2, 3],
        [None, 0, 0],
        [[1], [2], [3]],
        [1, 2],
        [1, 2, 3, 4],
        [],
        "0,0,0",
        {"x": 1},
    ],
    "image_index": [0, 1, 2, -1, 2**63, 10**30, 1.0, "0", True, None, []],
    "image_filename": ["CLEVR_val_000000.png", "CLEVR_val_000001.png", "x.png", 5, None],
}


def json_paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (tuple of keys / indices) into a JSON tree, the root included."""
    paths = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            paths += json_paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            paths += json_paths(value, (*prefix, i))
    return paths


def get_path(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


@st.composite
def mutate_scenes(draw: st.DrawFn, scenes: dict) -> dict:
    """The scene JSON with 1..3 structural changes."""
    tree: Any = copy.deepcopy(scenes)
    for _ in range(draw(st.integers(1, 3))):
        paths = json_paths(tree)
        path = paths[draw(st.integers(0, len(paths) - 1))]
        op = draw(st.sampled_from(["field", "field", "field", "replace", "delete", "dup", "keys"]))
        if not path:  # the root itself
            tree = draw(JSON_VALUES) if op == "replace" else tree
            continue
        parent, key = get_path(tree, path[:-1]), path[-1]
        if op == "field":  # a known field of some scene / object set to a wrong value
            fields = [f for f in FIELD_VALUES if isinstance(parent, dict) and f in parent]
            if fields:
                name = draw(st.sampled_from(fields))
                parent[name] = copy.deepcopy(draw(st.sampled_from(FIELD_VALUES[name])))
                continue
            op = "replace"
        if op == "replace":
            parent[key] = draw(JSON_VALUES)
        elif op == "delete":
            del parent[key]
        elif op == "dup" and isinstance(parent, list):  # duplicated scene / object / coord
            for _ in range(draw(st.sampled_from([1, 1, 12]))):
                parent.append(copy.deepcopy(parent[key]))
        elif op == "keys" and isinstance(parent, dict):  # a key renamed
            parent[str(key).upper()] = parent.pop(key)
    return tree


@pytest.fixture(scope="module")
def clevr_roots(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two CLEVR layouts over the genuine val images: without and with masks/val."""
    source = reference(*CLEVR_RAW)
    scenes = json.loads((source / "scenes" / "CLEVR_val_scenes.json").read_text())
    roots = {}
    for variant in ("plain", "masks"):
        root = tmp_path_factory.mktemp(f"fuzz_clevr_{variant}")
        (root / "images" / "val").mkdir(parents=True)
        (root / "scenes").mkdir()
        for png in sorted((source / "images" / "val").glob("*.png")):
            shutil.copyfile(png, root / "images" / "val" / png.name)
        if variant == "masks":
            (root / "masks" / "val").mkdir(parents=True)
            for scene in scenes["scenes"]:
                ids = np.zeros((320, 480), np.uint8)
                for i in range(len(scene["objects"])):
                    ids[10 + 20 * i : 25 + 20 * i, 100:200] = i + 1
                name = scene["image_filename"]
                Image.fromarray(ids, "L").save(root / "masks" / "val" / name)
        roots[variant] = root
    return roots


@functools.cache
def genuine_scenes() -> dict:
    path = reference(*CLEVR_RAW, "scenes", "CLEVR_val_scenes.json")
    return json.loads(path.read_text())


def load_every_item(root: Path, task: str, max_objects: int | None) -> int:
    dataset = ClevrDataset(root, "val", task=task, max_objects=max_objects)
    for i in range(len(dataset)):
        sample = dataset[i]
        assert sample["image"].shape == (3, 128, 128)
        if task == "set_prediction":
            assert sample["target"].shape == (dataset.max_objects, 19)
    return len(dataset)


tick_clevr = counted("test_clevr_dataset_mutated_scenes")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # float32 overflow of 1e308 coordinates
@fuzz_settings(max_examples=150)
@given(
    variant=st.sampled_from(["plain", "masks"]),
    task=st.sampled_from(["object_discovery", "set_prediction"]),
    max_objects=st.sampled_from([None, None, 1, 3, 10]),
    text_level=st.sampled_from([False, False, False, True]),
    data=st.data(),
)
def test_clevr_dataset_mutated_scenes(
    clevr_roots: dict[str, Path],
    variant: str,
    task: str,
    max_objects: int | None,
    text_level: bool,
    data: st.DataObject,
) -> None:
    tick_clevr()
    root = clevr_roots[variant]
    text = json.dumps(data.draw(mutate_scenes(genuine_scenes())))
    blob = text.encode()
    if text_level:  # damage the JSON text itself (invalid JSON, bad UTF-8, truncation)
        blob = data.draw(mutate(blob, max_ops=2))
    (root / "scenes" / "CLEVR_val_scenes.json").write_bytes(blob)
    outcome(DataError, load_every_item, root, task, max_objects)


@pytest.mark.parametrize("scenes", ["none", "no-objects"])
def test_clevr_scenes_without_objects(clevr_roots: dict[str, Path], scenes: str) -> None:
    """An empty scene list, or scenes that all have no objects: a ValueError before the fix."""
    root = clevr_roots["plain"]
    data = copy.deepcopy(genuine_scenes())
    if scenes == "none":
        data["scenes"] = []
    else:
        for scene in data["scenes"]:
            scene["objects"] = []
    (root / "scenes" / "CLEVR_val_scenes.json").write_text(json.dumps(data))
    if scenes == "none":
        with pytest.raises(DataError, match="describes 0 scenes"):
            ClevrDataset(root, "val")
    else:
        dataset = ClevrDataset(root, "val", task="set_prediction")
        assert len(dataset) == 2 and not dataset[0]["target"].any()
